//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestSoak runs the soak (e2e/soak) on control planes of its own: a
// one-minute run, scaled down to fit a small CI machine, that must keep
// every hold, grant none twice and grow no goroutines; and a self-test in
// which a held mutex is force-unlocked under its holder, which the soak
// must report. `make soak` runs the full-size, longer one. It is not
// parallel with the rest of the suite, whose timing tests it would
// disturb; its two runs are parallel with each other.
func TestSoak(t *testing.T) {
	if !env.Local() {
		t.Skip("the soak needs a local control plane (it reads the API server's process)")
	}
	root := exampleRoot(t)
	bin := filepath.Join(buildPackages(t, "./e2e/soak"), "soak")
	run := func(t *testing.T, args ...string) (string, int) {
		ctx, cancel := context.WithTimeout(t.Context(), 6*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Dir = root
		var out, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("soak: %v", err)
		}
		t.Logf("soak %v:\n%s\nstderr:\n%s", args, out.String(), tail(stderr.String(), 40))
		return out.String(), cmd.ProcessState.ExitCode()
	}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		want     []string // lines of the report that must be there
	}{
		{
			name: "one minute",
			args: []string{"-duration", "1m", "-workers", "3", "-held", "100", "-waiters", "200",
				"-parked-on", "20", "-handoff", "5", "-contenders", "2", "-sample", "2s"},
			wantCode: 0,
			want:     []string{"lease requests/s, quiet", "handoff latency loaded", "worker w2: heap", "PASS:"},
		},
		{
			name: "self-test: a hold taken away",
			args: []string{"-duration", "20s", "-workers", "2", "-held", "10", "-waiters", "10",
				"-parked-on", "2", "-handoff", "2", "-contenders", "2", "-sample", "2s", "-selftest-steal"},
			wantCode: 1,
			want:     []string{"FAILURE: w0 lost held-000", "FAIL:"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, code := run(t, tc.args...)
			if code != tc.wantCode {
				t.Errorf("soak %v: exit %d, want %d", tc.args, code, tc.wantCode)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("soak report: no %q", w)
				}
			}
		})
	}
}
