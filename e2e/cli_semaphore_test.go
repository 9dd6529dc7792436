//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/konlease/konlease/lock"
)

// TestCLISemaphore: the semaphore commands end to end, through koncli
// processes: create and its conflicts, acquire up to the limit, a full
// semaphore (exit 3, -E, --if-busy=skip), one slot per identity (exit 5),
// a waiter that gets the slot a release frees, get and list, release by a
// non-holder (refused) and --force, delete.
func TestCLISemaphore(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("semaphore", "create", "s", "--limit", "2", "--ttl", "1m"), 0, "", "semaphore "+ns+"/s created (limit 2, TTL 1m0s; 0 held)")
	expectCLI(t, c.run("semaphore", "create", "s", "--limit", "2", "--ttl", "1m"), 0, "", "exists")
	expectCLIError(t, c.run("semaphore", "create", "s", "--limit", "3", "--ttl", "1m"), 1, "exists with limit 2, not 3", "--update")

	expectCLI(t, c.run("semaphore", "acquire", "s", "--holder", "w1"), 0, "KONLEASE_SEMAPHORE="+ns+"/s\nKONLEASE_HOLDER=w1\nKONLEASE_TOKEN=1\nKONLEASE_SLOT=", "acquired slot")
	expectCLI(t, c.run("semaphore", "acquire", "s", "--holder", "w2"), 0, "KONLEASE_TOKEN=1", "")
	expectCLIError(t, c.run("semaphore", "acquire", "s", "--holder", "w3", "--timeout", "0"), 3, "is full: 2 of 2 slots held", `"w1"`, `"w2"`)
	expectCLIError(t, c.run("semaphore", "acquire", "s", "--holder", "w3", "--timeout", "0", "-E", "75"), 75, "is full")
	expectCLI(t, c.run("semaphore", "acquire", "s", "--holder", "w3", "--timeout", "0", "--if-busy=skip"), 0, "", "skipped: ")
	expectCLIError(t, c.run("semaphore", "acquire", "s", "--holder", "w1", "--timeout", "0"), 5, "holds slot")
	expectCLIError(t, c.run("semaphore", "acquire", "s", "--holder", "w3", "--limit", "3"), 1, "has limit 2, not 3")
	expectCLIError(t, c.run("semaphore", "acquire", "s", "--holder", "w3", "--ttl", "2m"), 1, "TTL")

	var got struct {
		Spec struct {
			Limit int
			TTL   string
		}
		Status struct {
			Phase   string
			Holders []struct {
				Holder string
				Slot   int
				Token  int64
			}
		}
	}
	r := c.run("semaphore", "get", "s", "-o", "json")
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("get -o json: %v\n%s", err, r)
	}
	if got.Spec.Limit != 2 || got.Spec.TTL != "1m0s" || got.Status.Phase != "Locked" || len(got.Status.Holders) != 2 ||
		got.Status.Holders[0].Slot == got.Status.Holders[1].Slot {
		t.Errorf("get -o json: %s\nwant limit 2, TTL 1m0s, Locked, w1 and w2 on two slots", r.stdout)
	}
	list := c.run("semaphore", "list")
	if fields := strings.Fields(strings.Split(list.stdout, "\n")[1]); len(fields) < 5 || fields[0] != "s" || fields[1] != "2" || fields[2] != "2" {
		t.Errorf("list:\n%s\nwant the row: s 2 2 w1,w2 1m0s", list)
	}

	// A waiter gets the slot that a release frees.
	w3 := c.start("semaphore", "acquire", "s", "--holder", "w3")
	w3.waitStderr("waiting for semaphore")
	expectCLIError(t, c.run("semaphore", "release", "s", "--holder", "w9"), 1, `"w9"`, "--force HOLDER")
	expectCLI(t, c.run("semaphore", "release", "s", "--holder", "w1"), 0, "", `released semaphore `+ns+`/s (holder "w1")`)
	expectCLI(t, w3.wait(), 0, "KONLEASE_HOLDER=w3", "")

	expectCLI(t, c.run("semaphore", "release", "s", "--force", "w2"), 0, "", `evicted "w2"`)
	expectCLI(t, c.run("semaphore", "release", "s", "--force", "w2"), 0, "", "held no slot")
	expectCLIError(t, c.run("semaphore", "delete", "s"), 1, "refusing to delete a held semaphore")
	expectCLI(t, c.run("semaphore", "delete", "s", "--force"), 0, "", `evicted "w3" (slot `)
	expectCLIError(t, c.run("semaphore", "get", "s"), 1, "not found")
	expectCLI(t, c.run("semaphore", "delete", "s", "--ignore-not-found"), 0, "", "")
	if left := leaseVersions(t, ns); len(left) != 0 {
		t.Errorf("Leases left after delete: %v", left)
	}

	// acquire --limit creates a missing semaphore; without --limit it is
	// an error that says how to create it.
	expectCLIError(t, c.run("semaphore", "acquire", "new", "--timeout", "0"), 1, "not found", "--limit N")
	expectCLI(t, c.run("semaphore", "acquire", "new", "--limit", "1", "--holder", "a"), 0, "KONLEASE_SLOT=0", "")
}

// TestCLISemaphoreKinds: the mutex commands refuse a semaphore and its
// slots, and the semaphore commands refuse a mutex and a leader-election
// Lease, with exit 1 and nothing changed.
func TestCLISemaphoreKinds(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("semaphore", "create", "s", "--limit", "2"), 0, "", "created")
	expectCLI(t, c.run("mutex", "create", "m"), 0, "", "created")
	createLeaderLease(t, ns, "leader")
	before := leaseVersions(t, ns)
	for _, args := range [][]string{
		{"mutex", "lock", "s", "--timeout", "0"},
		{"mutex", "lock", "s.s-0", "--timeout", "0"},
		{"mutex", "unlock", "s", "--force"},
		{"mutex", "delete", "s", "--force"},
		{"semaphore", "acquire", "m", "--timeout", "0"},
		{"semaphore", "acquire", "leader", "--timeout", "0"},
		{"semaphore", "create", "m", "--limit", "2"},
		{"semaphore", "delete", "m", "--force"},
		{"semaphore", "release", "leader", "--force", "x"},
	} {
		t.Run(cliTestName(args), func(t *testing.T) {
			expectCLIError(t, c.run(args...), 1, "not a")
		})
	}
	expectUnchanged(t, ns, before, "the refused commands")
}

// TestCLISemaphoreBadInput: a bad --limit is a usage error (exit 2) that
// sends nothing.
func TestCLISemaphoreBadInput(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("semaphore", "create", "s", "--limit", "2"), 0, "", "created")
	before := leaseVersions(t, ns)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"semaphore", "create", "t"}, "needs its limit"},
		{[]string{"semaphore", "create", "t", "--limit", "0"}, `invalid --limit "0"`},
		{[]string{"semaphore", "create", "t", "--limit", "-1"}, `invalid --limit "-1"`},
		{[]string{"semaphore", "create", "t", "--limit", fmt.Sprint(lock.MaxLimit + 1)}, fmt.Sprintf("1 to %d", lock.MaxLimit)},
		{[]string{"semaphore", "create", "t", "--limit", "two"}, `invalid --limit "two"`},
		{[]string{"semaphore", "create", "s", "--update"}, "at least one"},
		{[]string{"semaphore", "acquire", "s", "--limit", "0"}, `invalid --limit "0"`},
		{[]string{"semaphore", "run", "s", "--limit", "x", "--", "true"}, `invalid --limit "x"`},
		{[]string{"semaphore", "release", "s", "--holder", "a", "--force", "b"}, "no --holder"},
		{[]string{"semaphore", "acquire", "Bad_Name"}, "invalid"},
	} {
		t.Run(cliTestName(tc.args), func(t *testing.T) {
			expectCLIError(t, c.run(tc.args...), 2, tc.want)
		})
	}
	expectUnchanged(t, ns, before, "the usage errors")
}

// TestCLISemaphoreRunLimit: concurrent 'koncli semaphore run' processes
// never have more than the limit of commands inside at once, and never two
// on one slot. Each command marks itself inside with a directory of its
// own and its slot with mkdir (which fails if the slot's directory exists:
// two holders of one slot), counts the commands inside, and leaves; the
// processes race for real.
func TestCLISemaphoreRunLimit(t *testing.T) {
	t.Parallel()
	const (
		limit = 2
		procs = 6
	)
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	dir := t.TempDir()
	inside := filepath.Join(dir, "inside")
	if err := os.Mkdir(inside, 0o755); err != nil {
		t.Fatal(err)
	}
	// The section: enter, count, work a little (the workload, not a
	// synchronisation), leave.
	script := fmt.Sprintf(`set -e
d=%q
mkdir "$d/slot-$KONLEASE_SLOT" || { echo "slot $KONLEASE_SLOT held twice" >> "$d/../violations"; exit 1; }
mkdir "$d/in-$KONLEASE_HOLDER"
n=$(ls "$d" | grep -c '^in-')
echo "$n" >> "$d/../counts"
if [ "$n" -gt %d ]; then echo "$n inside" >> "$d/../violations"; fi
sleep 0.2
rmdir "$d/in-$KONLEASE_HOLDER" "$d/slot-$KONLEASE_SLOT"
`, inside, limit)
	var wg sync.WaitGroup
	results := make([]cliResult, procs)
	for i := range procs {
		wg.Go(func() {
			results[i] = c.run("semaphore", "run", "s", "--limit", fmt.Sprint(limit), "--ttl", "30s", "--", "/bin/sh", "-c", script)
		})
	}
	wg.Wait()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("run %d: %s", i, r)
		}
	}
	if v, err := os.ReadFile(filepath.Join(dir, "violations")); err == nil {
		t.Errorf("more than %d inside, or a slot held twice:\n%s", limit, v)
	}
	counts, err := os.ReadFile(filepath.Join(dir, "counts"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(counts), "\n"); n != procs {
		t.Errorf("%d sections ran, want %d", n, procs)
	}
	t.Logf("commands inside as each entered: %s", strings.Join(strings.Fields(string(counts)), " "))
	st, err := newClient(t, env.Config()).GetSemaphore(t.Context(), ns, "s")
	if err != nil || len(st.Holders) != 0 {
		t.Errorf("after the runs: %+v, %v; want nobody holding", st, err)
	}
}
