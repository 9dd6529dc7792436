//go:build e2e

package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestCLIMakeBuild: make build stamps koncli's version as make image does
// (VERSION, by default the git description of the checkout), and links
// kubectl-mutex and kubectl_complete-mutex to it.
func TestCLIMakeBuild(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("no make:", err)
	}
	root := exampleRoot(t)
	bin := t.TempDir()
	run := func(name string, args ...string) string {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), name, args...)
		cmd.Dir = root
		// Neither the environment nor a make running this test (through
		// MAKEFLAGS) may choose VERSION for the make under test.
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			k, _, _ := strings.Cut(kv, "=")
			return k == "VERSION" || k == "MAKEFLAGS" || k == "MFLAGS" || k == "MAKELEVEL"
		})
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("make", "-s", "build", "BIN="+bin, "VERSION=v0.0.0-e2e.1")
	for _, name := range []string{"koncli", "kubectl-mutex"} {
		if out := run(filepath.Join(bin, name), "version"); !strings.HasPrefix(out, "koncli v0.0.0-e2e.1 go") {
			t.Errorf("%s version = %q, want the stamped v0.0.0-e2e.1", name, out)
		}
	}
	if target, err := os.Readlink(filepath.Join(bin, "kubectl_complete-mutex")); err != nil || target != "koncli" {
		t.Errorf("bin/kubectl_complete-mutex links to %q (%v), want koncli", target, err)
	}

	// Without VERSION: the checkout's git description, as for make image.
	if _, err := exec.LookPath("git"); err != nil {
		return
	}
	want := strings.TrimSpace(run("git", "describe", "--tags", "--always", "--dirty"))
	got := strings.TrimSpace(run("make", "-s", "--no-print-directory", "--eval", "print-version: ; @echo $(VERSION)", "print-version"))
	if got != want {
		t.Errorf("make's default VERSION = %q, want git describe's %q", got, want)
	}
}
