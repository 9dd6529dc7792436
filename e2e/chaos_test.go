//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// chaosDuration is the short chaos run of the e2e suite; `make chaos` runs
// the long one.
const chaosDuration = 30 * time.Second

// TestChaos runs the chaos checker (e2e/chaos) three times on control
// planes of its own: a short run under faults on the HA topology and one
// on a single etcd and API server, which must find no violation, and a
// self-test in which one worker enters critical sections without the lock,
// which the checker must report. It is not parallel with the rest of the
// suite, whose timing tests it would disturb; its last two runs are
// parallel with each other.
func TestChaos(t *testing.T) {
	if !env.Local() {
		t.Skip("chaos needs a local control plane (it kills and restarts it)")
	}
	root := exampleRoot(t)
	bin := filepath.Join(buildPackages(t, "./e2e/chaos"), "chaos")
	koncli := koncliBinary(t)
	run := func(t *testing.T, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(t.Context(), chaosDuration+3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, append([]string{"-koncli", koncli, "-history", t.TempDir()}, args...)...)
		cmd.Dir = root
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("chaos: %v", err)
		}
		t.Logf("chaos %v:\n%s\nstderr:\n%s", args, out.String(), tail(stderr.String(), 40))
		return out.String(), cmd.ProcessState.ExitCode()
	}
	// The HA topology's run comes first, alone: it starts five processes
	// of control plane and would slow the other two down.
	t.Run("ha", func(t *testing.T) {
		out, code := run(t, "-duration", chaosDuration.String(), "-seed", "13", "-topology", "ha")
		if code != 0 {
			t.Errorf("chaos run on the HA topology: exit %d, want 0 (no violation)", code)
		}
		if n := count(out, "cs"); n < 20 {
			t.Errorf("critical sections: got %d, want at least 20", n)
		}
		if n := count(out, "liveness.samples"); n == 0 {
			t.Error("liveness.samples: got 0, want some")
		}
	})
	t.Run("faults", func(t *testing.T) {
		t.Parallel()
		out, code := run(t, "-duration", chaosDuration.String(), "-seed", "1")
		if code != 0 {
			t.Errorf("chaos run under faults: exit %d, want 0 (no violation)", code)
		}
		if n := count(out, "cs"); n < 20 {
			t.Errorf("critical sections: got %d, want at least 20", n)
		}
	})
	t.Run("self-test without the lock", func(t *testing.T) {
		t.Parallel()
		out, code := run(t, "-duration", "10s", "-no-faults", "-selftest-nolock")
		if code != 1 {
			t.Errorf("chaos run with a worker that skips the lock: exit %d, want 1", code)
		}
		if n := count(out, "violation.overlap"); n == 0 {
			t.Errorf("violation.overlap: got %d, want > 0", n)
		}
	})
}

// count reads a counter from the checker's report.
func count(report, name string) int {
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(name) + `\s+(\d+)$`).FindStringSubmatch(report)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
