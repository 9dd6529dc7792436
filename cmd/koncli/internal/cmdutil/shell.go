package cmdutil

import (
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// ShellQuote returns s unchanged if a POSIX shell reads it as one word
// without expansion, else single-quoted.
func ShellQuote(s string) string {
	safe := s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:@/+,=", r))
	}) < 0
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// SetFlags are the flags given on cmd's command line (its own and the
// global ones), as they would be typed again: "--timeout 5m", "--force".
// Usage hints that show a corrected command line keep them.
func SetFlags(cmd *cobra.Command) []string {
	var out []string
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if f.Value.Type() == "bool" && f.Value.String() == "true" {
			out = append(out, "--"+f.Name)
			return
		}
		out = append(out, "--"+f.Name, ShellQuote(f.Value.String()))
	})
	return out
}
