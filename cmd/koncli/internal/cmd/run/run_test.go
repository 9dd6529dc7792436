package run

import (
	"errors"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

// TestExecError: starting CMD fails as a shell reports it, 127 for a
// command that does not exist, 126 for one that cannot be executed.
func TestExecError(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		path     string
		notFound bool
	}{
		{"no-such-command-konlease", true},
		{filepath.Join(dir, "missing"), true},
		{dir, false}, // a directory
	} {
		err := exec.Command(tc.path).Start()
		if err == nil {
			t.Fatalf("starting %q succeeded", tc.path)
		}
		var ee *cmdutil.ExecError
		if !errors.As(execError(tc.path, err), &ee) || ee.NotFound != tc.notFound {
			t.Errorf("execError(%q, %v) = %+v, want NotFound %v", tc.path, err, ee, tc.notFound)
		}
	}
}
