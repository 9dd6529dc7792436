//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/konlease/konlease/lock"
)

// waitLines waits until koncli has printed n lines on stdout, and returns
// them; it fails the test if koncli exits or the time runs out first.
func (p *cliProc) waitLines(n int) []string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), cliTimeout)
	defer cancel()
	for {
		p.stdout.mu.Lock()
		out, ch := p.stdout.buf.String(), p.stdout.changed
		p.stdout.mu.Unlock()
		if lines := strings.SplitAfter(out, "\n"); strings.Count(out, "\n") >= n {
			return trimLines(lines[:n])
		}
		select {
		case <-ch:
		case <-p.exited:
			p.t.Fatalf("koncli %s exited before printing %d lines: %s", strings.Join(p.args, " "), n, p.res)
		case <-ctx.Done():
			p.t.Fatalf("koncli %s: waiting for %d lines: %v\nstdout: %q\nstderr: %q", strings.Join(p.args, " "), n, ctx.Err(), out, p.stderr.String())
		}
	}
}

func trimLines(lines []string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = strings.TrimSuffix(l, "\n")
	}
	return out
}

// watchLine is what a line of get -w -o json says.
func watchLine(t *testing.T, line string) string {
	t.Helper()
	var obj map[string]any
	if err := json.Unmarshal([]byte(line), &obj); err != nil {
		t.Fatalf("a watch line is not one JSON object: %q: %v", line, err)
	}
	s := fmt.Sprintf("%v %v token=%v", field(obj, "status", "phase"), field(obj, "status", "holder"), field(obj, "status", "token"))
	if w, ok := field(obj, "status", "waiters").([]any); ok {
		s += fmt.Sprintf(" waiters=%v", w)
	}
	return s
}

// TestCLIGetWatch: get -w -o json prints one JSON object per line: the
// mutex at once, then every change: a lock, the TTL running out (which no
// write marks), an unlock, a deletion and a re-creation; and exits 130 on
// SIGINT.
func TestCLIGetWatch(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "2s"), 0, "", "")
	p := c.start("mutex", "get", "m", "-w", "-o", "json")
	steps := []struct {
		do   func()
		want string
	}{
		{func() {}, "Unlocked <nil> token=<nil>"},
		{func() { expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "") }, "Locked w1 token=1"},
		// koncli lock does not renew: the TTL runs out with no write.
		{func() {}, "Expired w1 token=1"},
		{func() { expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w2"), 0, "", "taking it over") }, "Locked w2 token=2"},
		{func() { expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w2"), 0, "", "") }, "Unlocked <nil> token=2"},
		{func() { expectCLI(t, c.run("mutex", "delete", "m"), 0, "", "") }, "Deleted <nil> token=2"},
		{func() { expectCLI(t, c.run("mutex", "create", "m"), 0, "", "") }, "Unlocked <nil> token=<nil>"},
	}
	for i, s := range steps {
		s.do()
		lines := p.waitLines(i + 1)
		if got := watchLine(t, lines[i]); got != s.want {
			t.Fatalf("line %d of get -w: %s, want %s\nall lines:\n%s", i+1, got, s.want, strings.Join(lines, "\n"))
		}
	}
	p.signal(syscall.SIGINT)
	r := p.wait()
	if r.code != 130 || strings.Count(r.stdout, "\n") != len(steps) {
		t.Errorf("get -w after SIGINT: %s\nwant exit 130 and exactly %d lines", r, len(steps))
	}
}

// TestCLIListWatch: list -w prints the wide table (header once), then a
// row per change, mutexes created after the start included.
func TestCLIListWatch(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "a"), 0, "", "")
	createLeaderLease(t, ns, "leader") // never shown
	p := c.start("mutex", "list", "-w")
	rows := []struct {
		do   func()
		want string // a regular expression for the row
	}{
		{func() {}, `^NAME +HOLDER +PHASE +TTL +LOCKED +EXPIRES +RENEWED +TOKEN +FAIR +WAITERS +REASON$`},
		{func() {}, `^a +<none> +Unlocked +<none> +<none> +<none> +<none> +0 +false +0 +<none>$`},
		{func() { expectCLI(t, c.run("mutex", "create", "b", "--ttl", "1m"), 0, "", "") }, `^b +<none> +Unlocked +1m0s +`},
		{func() { expectCLI(t, c.run("mutex", "lock", "a", "--holder", "w1"), 0, "", "") }, `^a +w1 +Locked +<none> +\S+ +<none> +\S+ +1 +false +0 +<none>$`},
		{func() { expectCLI(t, c.run("mutex", "delete", "b"), 0, "", "") }, `^b +<none> +Deleted +1m0s +`},
		{func() { expectCLI(t, c.run("mutex", "unlock", "a", "--holder", "w1"), 0, "", "") }, `^a +<none> +Unlocked +<none> +<none> +<none> +<none> +1 `},
	}
	for i, r := range rows {
		r.do()
		lines := p.waitLines(i + 1)
		if !regexp.MustCompile(r.want).MatchString(lines[i]) {
			t.Fatalf("line %d of list -w: %q, want %s\nall lines:\n%s", i+1, lines[i], r.want, strings.Join(lines, "\n"))
		}
	}
	p.signal(syscall.SIGTERM)
	if r := p.wait(); r.code != 143 || strings.Count(r.stdout, "NAME") != 1 || strings.Count(r.stdout, "\n") != len(rows) {
		t.Errorf("list -w: %s\nwant exit 143, one header, %d lines", r, len(rows))
	}
}

// TestCLIWatchFairWaiters: a fair mutex's waiters live in Leases of their
// own; get -w prints a line when one joins and when it leaves.
func TestCLIWatchFairWaiters(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "f", "--fair"), 0, "", "")
	expectCLI(t, c.run("mutex", "lock", "f", "--holder", "w1"), 0, "", "")
	p := c.start("mutex", "get", "f", "-w", "-o", "json")
	if got := watchLine(t, p.waitLines(1)[0]); got != "Locked w1 token=1" {
		t.Fatalf("first line: %s", got)
	}
	waiter := c.start("mutex", "lock", "f", "--holder", "w2")
	if got := watchLine(t, p.waitLines(2)[1]); got != "Locked w1 token=1 waiters=[w2]" {
		t.Fatalf("line when w2 queues: %s", got)
	}
	waiter.signal(syscall.SIGTERM)
	expectCLIError(t, waiter.wait(), 143, "nothing was locked")
	if got := watchLine(t, p.waitLines(3)[2]); got != "Locked w1 token=1" {
		t.Fatalf("line when w2 leaves: %s", got)
	}
}

// TestCLIWait: wait exits 0 once the condition holds and 3 when --timeout
// runs out first; it locks and writes nothing, and needs only get and
// watch.
func TestCLIWait(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	ro := newCLI(t, env.WriteKubeconfig(t, env.Identity(t, ns, "get", "watch"), ns))
	expectCLI(t, c.run("mutex", "create", "m"), 0, "", "")
	expectCLI(t, ro.run("mutex", "wait", "m", "--for", "unlocked"), 0, "", "mutex "+ns+"/m is unlocked")
	expectCLIError(t, ro.run("mutex", "wait", "m", "--for", "locked", "--timeout", "0"), 3, "is not locked (--timeout 0): it is unlocked")

	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
	before := leaseVersions(t, ns)
	expectCLI(t, ro.run("mutex", "wait", "m", "--for", "locked", "--timeout", "0"), 0, "", `is locked by "w1"`)
	r := ro.run("mutex", "wait", "m", "--for", "unlocked", "--timeout", "1500ms")
	expectCLIError(t, r, 3, "mutex "+ns+"/m is not unlocked within 1.5s", `it is locked by "w1"`)
	if r.took < 1500*time.Millisecond {
		t.Errorf("wait --timeout 1500ms gave up after %s", r.took)
	}
	p := ro.start("mutex", "wait", "m", "--for", "unlocked")
	expectUnchanged(t, ns, before, "waiting")
	select {
	case <-p.exited:
		t.Fatalf("wait --for unlocked ended while w1 holds the mutex: %s", p.res)
	default:
	}
	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", "")
	expectCLI(t, p.wait(), 0, "", "mutex "+ns+"/m is unlocked")

	// A fair mutex's waiters need list to be read; wait needs none of them.
	expectCLI(t, c.run("mutex", "create", "f", "--fair"), 0, "", "")
	expectCLI(t, ro.run("mutex", "wait", "f", "--for", "unlocked", "--timeout", "0"), 0, "", "mutex "+ns+"/f is unlocked")
	expectCLI(t, ro.run("mutex", "wait", "f", "--for", "unlocked", "--timeout", "5s"), 0, "", "mutex "+ns+"/f is unlocked")

	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"missing", "--for", "unlocked"}, 1, "mutex " + ns + "/missing not found"},
		{[]string{"missing", "--for", "unlocked", "--timeout", "0"}, 1, "mutex " + ns + "/missing not found"},
		{[]string{"m"}, 2, "needs --for unlocked or --for locked"},
		{[]string{"m", "--for", "free"}, 2, `invalid --for "free"`},
		{[]string{"m", "--for", "locked", "--timeout", "soon"}, 2, `invalid --timeout "soon"`},
	} {
		expectCLIError(t, ro.run(append([]string{"mutex", "wait"}, tc.args...)...), tc.code, tc.want)
	}
}

// TestWatchPolls: without the watch verb, Watch polls, and still reports
// every state it sees change.
func TestWatchPolls(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	adm := newClient(t, env.Config())
	if _, _, err := adm.Create(t.Context(), ns, "m", lock.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	noWatch := newClient(t, env.Identity(t, ns, "get"), lock.WithPollInterval(50*time.Millisecond))
	events := make(chan lock.WatchEvent, 16)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		done <- noWatch.Watch(ctx, ns, "m", func(ev lock.WatchEvent) error {
			events <- ev
			return nil
		})
	}()
	next := func() lock.WatchEvent {
		t.Helper()
		select {
		case ev := <-events:
			return ev
		case err := <-done:
			t.Fatalf("Watch ended: %v", err)
		case <-time.After(30 * time.Second):
			t.Fatal("no event within 30s")
		}
		return lock.WatchEvent{}
	}
	if ev := next(); ev.Status.Phase != lock.PhaseUnlocked {
		t.Fatalf("first event %+v, want Unlocked", ev)
	}
	m := newMutex(t, adm, ns, "m", lock.WithHolder("w1"))
	if err := m.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Status.Phase != lock.PhaseLocked || ev.Status.Holder != "w1" {
		t.Fatalf("after Lock: %+v, want Locked by w1", ev)
	}
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Status.Phase != lock.PhaseUnlocked || ev.Status.Token != 1 {
		t.Fatalf("after Unlock: %+v, want Unlocked, token 1", ev)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Errorf("Watch after cancel: %v, want context.Canceled", err)
	}
	if err := noWatch.Watch(t.Context(), ns, "missing", func(lock.WatchEvent) error { return nil }); !errors.Is(err, lock.ErrNotFound) {
		t.Errorf("Watch of a missing mutex: %v, want ErrNotFound", err)
	}
}
