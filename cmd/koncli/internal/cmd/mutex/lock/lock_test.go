package lock

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// TestWriteAcquiredEvaluates checks the promise of the help text: a shell
// that evaluates the output gets the values back exactly.
func TestWriteAcquiredEvaluates(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	for _, holder := range []string{"worker-1", "two words", `it's "quoted" $HOME`} {
		var buf bytes.Buffer
		if err := WriteAcquired(&buf, "ns", "m", holder, 42); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(buf.String(), "\n"); n != 3 {
			t.Errorf("output %q has %d lines, want 3", buf.String(), n)
		}
		script := buf.String() + `printf '%s|%s|%s' "$KONLEASE_MUTEX" "$KONLEASE_HOLDER" "$KONLEASE_TOKEN"`
		out, err := exec.Command(sh, "-c", script).Output()
		if err != nil {
			t.Fatalf("sh: %v", err)
		}
		if want := "ns/m|" + holder + "|42"; string(out) != want {
			t.Errorf("evaluated %q, want %q", out, want)
		}
	}
}
