package main

import (
	"bytes"
	"path/filepath"
	"testing"
)

// TestStatusNothingRunning: with no control plane, status answers with a
// sentence that says how to start one, and succeeds, so that `make status`
// prints no make error after it.
func TestStatusNothingRunning(t *testing.T) {
	for _, dir := range []string{t.TempDir(), filepath.Join(t.TempDir(), "absent")} {
		var out bytes.Buffer
		if err := status(t.Context(), dir, &out); err != nil {
			t.Errorf("status(%s) = %v, want success", dir, err)
		}
		if want := "No control plane is running. Start one with: eval \"$(make -s up)\"\n"; out.String() != want {
			t.Errorf("status(%s) printed %q, want %q", dir, out.String(), want)
		}
	}
}
