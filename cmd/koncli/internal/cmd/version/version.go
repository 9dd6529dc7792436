// Package version implements `koncli version`.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

// NewCommand returns the version command; version is the release stamped
// at build time ("" when none was).
func NewCommand(streams genericiooptions.IOStreams, version string) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of koncli",
		Long: `Print koncli's version, the Go version it was built with, and the platform,
on one line: "koncli VERSION GOVERSION OS/ARCH".

The version is the release stamped at build time with
  go build -ldflags "-X github.com/konlease/konlease/cmd/koncli/app.version=v1.2.3"
else the module version recorded by 'go install ...@version', else "devel"
(with the commit, when the build recorded it).

Exit status:
  0  printed
  2  usage error`,
		Example: `  koncli version`,
		Args:    cmdutil.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(streams.Out, "koncli %s %s %s/%s\n", String(version), runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return err
		},
	}
}

// String returns stamped if set, else what the Go build recorded.
func String(stamped string) string {
	if stamped != "" {
		return stamped
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	if v := info.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	v := "devel"
	for _, s := range info.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 {
			v += "+" + s.Value[:12]
		}
	}
	return v
}
