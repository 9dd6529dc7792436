package cmdutil

import (
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"worker-1":        "worker-1",
		"pod.ns:1@x/y+z=": "pod.ns:1@x/y+z=",
		"two words":       "'two words'",
		"it's":            `'it'\''s'`,
		"$HOME":           "'$HOME'",
		"":                "''",
	} {
		if got := ShellQuote(in); got != want {
			t.Errorf("ShellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSetFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{nil, nil},
		{[]string{"--timeout", "5m", "-n", "payments"}, []string{"--namespace", "payments", "--timeout", "5m"}},
		{[]string{"--force", "--holder", "two words"}, []string{"--force", "--holder", "'two words'"}},
	} {
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		cmd.Flags().String("timeout", "", "")
		cmd.Flags().String("holder", "", "")
		cmd.Flags().Bool("force", false, "")
		cmd.Flags().StringP("namespace", "n", "", "")
		if err := cmd.ParseFlags(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := SetFlags(cmd); !slices.Equal(got, tc.want) {
			t.Errorf("SetFlags after %q = %q, want %q", tc.args, got, tc.want)
		}
	}
}

func TestLibraryLoggerDemotes(t *testing.T) {
	for _, tc := range []struct {
		verbosity int
		want      bool
	}{{0, false}, {1, true}} {
		var buf strings.Builder
		LibraryLogger(NewLogger(&buf, tc.verbosity)).WithValues("k", "v").Info("lost mutex")
		if got := strings.Contains(buf.String(), "lost mutex"); got != tc.want {
			t.Errorf("-v %d: library's level-0 line shown = %v, want %v (%q)", tc.verbosity, got, tc.want, buf.String())
		}
	}
}
