//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// exampleProgram turns the godoc example fn of file (relative to the
// repository root) into a main program, built into dir: the same imports,
// the example's body as main's. What the documentation shows is what runs.
func exampleProgram(t *testing.T, file, fn, dir string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, file)
	src, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	text := func(n ast.Node) []byte { return src[fset.Position(n.Pos()).Offset:fset.Position(n.End()).Offset] }
	var prog bytes.Buffer
	prog.WriteString("package main\n\n")
	for _, d := range f.Decls {
		if g, ok := d.(*ast.GenDecl); ok && g.Tok == token.IMPORT {
			prog.Write(text(g))
			prog.WriteString("\n\n")
		}
	}
	var body *ast.BlockStmt
	for _, d := range f.Decls {
		if fd, ok := d.(*ast.FuncDecl); ok && fd.Name.Name == fn {
			body = fd.Body
		}
	}
	if body == nil {
		t.Fatalf("%s has no func %s", file, fn)
	}
	prog.WriteString("func main() ")
	prog.Write(text(body))
	prog.WriteString("\n")
	mainGo := filepath.Join(dir, "main.go")
	if err := os.WriteFile(mainGo, prog.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, fn)
	// Built from the repository root, so that the file's imports resolve in
	// this module.
	cmd := exec.Command("go", "build", "-o", bin, mainGo)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build of %s from %s: %v\n%s\n%s", fn, file, err, out, prog.String())
	}
	return bin
}

// TestExampleNewRuns: lock's ExampleNew, the zero-configuration shape of
// konductor's SDK (lock.New, then NewMutex with no namespace), run as a
// program: it finds the cluster in KUBECONFIG and works in the namespace
// of its context, and nowhere else.
func TestExampleNewRuns(t *testing.T) {
	t.Parallel()
	ns, other := env.Namespace(t), env.Namespace(t)
	bin := exampleProgram(t, "lock/config_example_test.go", "ExampleNew", t.TempDir())
	for i, tc := range []struct {
		kubeconfig string
		wantNS     string
	}{
		{adminKubeconfigIn(t, ns), ns},
		{adminKubeconfigIn(t, ns), ns}, // again: the token grows
		// KUBECONFIG is a list, merged as kubectl merges it: the first
		// file that sets the current context wins.
		{adminKubeconfigIn(t, other) + string(filepath.ListSeparator) + adminKubeconfigIn(t, ns), other},
	} {
		ctx, cancel := context.WithTimeout(t.Context(), cliTimeout)
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = cliEnviron(t, []string{"KUBECONFIG=" + tc.kubeconfig})
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		cancel()
		token := map[int]int{0: 1, 1: 2, 2: 1}[i]
		want := fmt.Sprintf("locked %s/critical-section with fencing token %d\n", tc.wantNS, token)
		if err != nil || stdout.String() != want {
			t.Fatalf("run %d of ExampleNew: %v\nstdout %q, want %q\nstderr %q", i+1, err, stdout.String(), want, stderr.String())
		}
	}
	for nsName, token := range map[string]int64{ns: 2, other: 1} {
		if st := mutexStatus(t, nsName, "critical-section"); st.Phase != lock.PhaseUnlocked || st.Token != token {
			t.Errorf("mutex %s/critical-section after the runs: %s, token %d; want %s, token %d", nsName, st.Phase, st.Token, lock.PhaseUnlocked, token)
		}
	}
}
