//go:build e2e

package e2e

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestCLIFair: create --fair, the queue in get and list -o wide, FIFO
// turns of koncli lock processes, no barging with --timeout 0, and the
// fairness switch.
func TestCLIFair(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "m", "--fair", "--ttl", "1m"), 0, "", "created (TTL 1m0s, fair")
	expectCLI(t, c.run("mutex", "create", "m", "--fair", "--ttl", "1m"), 0, "", "exists")
	expectCLIError(t, c.run("mutex", "create", "m", "--ttl", "1m"), 1, "is fair, not not fair", "--update")
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "KONLEASE_TOKEN=1", "")

	w2 := c.start("mutex", "lock", "m", "--holder", "w2")
	w2.waitStderr("waiting for mutex")
	w3 := c.start("mutex", "lock", "m", "--holder", "w3")
	w3.waitStderr("waiting for mutex")

	var got struct {
		Spec   struct{ Fair bool }
		Status struct{ Waiters []string }
	}
	r := c.run("mutex", "get", "m", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, r)
	}
	if !got.Spec.Fair || strings.Join(got.Status.Waiters, ",") != "w2,w3" {
		t.Errorf("get -o json: %s\nwant spec.fair true and status.waiters [w2 w3], oldest first", r.stdout)
	}
	wide := c.run("mutex", "list", "-o", "wide")
	if !strings.Contains(wide.stdout, "FAIR") || !strings.Contains(wide.stdout, "WAITERS") ||
		!strings.Contains(strings.Join(strings.Fields(strings.Split(wide.stdout, "\n")[1]), " "), " true 2 ") {
		t.Errorf("list -o wide:\n%s\nwant FAIR true and WAITERS 2", wide.stdout)
	}
	expectCLIError(t, c.run("mutex", "lock", "m", "--holder", "w4", "--timeout", "0"), 3, "waiters are queued")
	expectCLIError(t, c.run("mutex", "create", "m", "--fair=false", "--update"), 1, "unlock it first")

	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", "unlocked")
	expectCLI(t, w2.wait(), 0, "KONLEASE_TOKEN=2", "")
	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w2"), 0, "", "unlocked")
	expectCLI(t, w3.wait(), 0, "KONLEASE_TOKEN=3", "")
	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w3"), 0, "", "unlocked")
	if n := len(entries(t, ns)); n != 0 {
		t.Errorf("%d queue entries left", n)
	}
	// Unlocked with nobody waiting: the fairness may change, the TTL stays.
	expectCLI(t, c.run("mutex", "create", "m", "--fair=false", "--update"), 0, "", "(TTL 1m0s, Unlocked)")
	if st := mutexStatus(t, ns, "m"); st.Fair || st.TTL.String() != "1m0s" {
		t.Errorf("after --fair=false --update: %+v, want racing with TTL 1m", st)
	}
}
