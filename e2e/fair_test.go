//go:build e2e

package e2e

// Fair mutexes against the real API server: FIFO order across processes,
// no barging, waiters that leave or die, mutual exclusion with a client
// that knows nothing of queues, and RBAC.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/lock"
)

// createFair creates the fair mutex ns/name (ttl 0: none).
func createFair(t *testing.T, c *lock.Client, ns, name string, ttl time.Duration) {
	t.Helper()
	if _, _, err := c.Create(t.Context(), ns, name, lock.CreateOptions{Fair: true, TTL: ttl}); err != nil {
		t.Fatalf("create fair mutex %s/%s: %v", ns, name, err)
	}
}

// entries lists the Leases of kind Waiter in ns.
func entries(t *testing.T, ns string) []coordinationv1.Lease {
	t.Helper()
	list, err := admin(t).CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{LabelSelector: lock.LabelKind + "=" + lock.KindWaiter})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// lockWhenQueued starts Lock on m in a goroutine; its result comes on the
// channel returned.
func lockWhenQueued(t *testing.T, m *lock.Mutex, ctx context.Context) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- m.Lock(ctx) }()
	return done
}

// waitProc is a worker process waiting for a fair mutex.
type waitProc struct {
	cmd   *exec.Cmd
	lines chan string
}

// startWaitProc starts a "wait" worker for holder and returns once it is
// queued.
func startWaitProc(t *testing.T, ns, name, holder string, vars map[string]string) *waitProc {
	t.Helper()
	if vars == nil {
		vars = map[string]string{}
	}
	vars[workerHolder] = holder
	cmd := worker(t, "wait", ns, name, vars)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &waitProc{cmd: cmd, lines: make(chan string, 4)}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		close(p.lines)
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line := p.next(t); line != "QUEUED" {
		t.Fatalf("waiter %s: got %q, want QUEUED", holder, line)
	}
	return p
}

// next is the process's next line of output.
func (p *waitProc) next(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.lines:
		if !ok {
			t.Fatalf("worker %v exited before saying anything more", p.cmd.Args)
		}
		return l
	case <-time.After(workerTimeout):
		t.Fatalf("worker %v said nothing within %s", p.cmd.Args, workerTimeout)
		return ""
	}
}

// token is the token of a worker's ACQUIRED line.
func (p *waitProc) token(t *testing.T) int64 {
	t.Helper()
	line := p.next(t)
	tok, err := strconv.ParseInt(strings.TrimPrefix(line, "ACQUIRED "), 10, 64)
	if err != nil {
		t.Fatalf("worker line %q: want ACQUIRED <token>", line)
	}
	return tok
}

// TestFairFIFOProcesses: waiters in three processes, queued one after the
// other, acquire in exactly that order, each by a handoff.
func TestFairFIFOProcesses(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	h := newMutex(t, c, ns, "m", lock.WithHolder("first"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	const n = 9 // three waiters in each of three processes' turns
	var procs []*waitProc
	for i := range n {
		procs = append(procs, startWaitProc(t, ns, "m", fmt.Sprintf("w%d", i), nil))
	}
	st, err := c.Get(t.Context(), ns, "m")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{}
	for i := range n {
		want = append(want, fmt.Sprintf("w%d", i))
	}
	if strings.Join(st.Waiters, ",") != strings.Join(want, ",") || !st.Fair {
		t.Errorf("Get: fair %v, waiters %v, want fair and %v", st.Fair, st.Waiters, want)
	}
	if err := h.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	for i, p := range procs {
		if tok := p.token(t); tok != int64(i+2) {
			t.Errorf("waiter w%d acquired with token %d, want %d: not in queue order", i, tok, i+2)
		}
	}
	for _, p := range procs {
		if err := p.cmd.Wait(); err != nil {
			t.Errorf("worker: %v", err)
		}
	}
	if e := entries(t, ns); len(e) != 0 {
		t.Errorf("%d queue entries left behind", len(e))
	}
}

// TestFairNoBarging: while anyone is queued, TryLock fails, also at the
// instant of a release, and the waiter gets the mutex.
func TestFairNoBarging(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	queued := make(chan struct{})
	var once sync.Once
	w := newMutex(t, c, ns, "m", lock.WithHolder("waiter"), lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	got := lockWhenQueued(t, w, t.Context())
	<-queued

	barger := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("barger"))
	err := barger.TryLock(t.Context())
	var le *lock.LockedError
	if !errors.As(err, &le) || le.Waiters != 1 {
		t.Fatalf("TryLock with one waiter queued: got %v, want ErrLocked naming 1 waiter", err)
	}
	// TryLock in a loop across the release: it must never win.
	stop := make(chan struct{})
	barged := make(chan error, 1)
	go func() {
		for {
			select {
			case <-stop:
				barged <- nil
				return
			default:
			}
			if err := barger.TryLock(t.Context()); err == nil {
				barged <- errors.New("TryLock acquired a fair mutex that a waiter was queued for")
				return
			} else if !errors.Is(err, lock.ErrLocked) {
				barged <- err
				return
			}
		}
	}()
	if err := h.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	close(stop)
	if err := <-barged; err != nil {
		t.Fatal(err)
	}
	if w.Token() != 2 {
		t.Errorf("waiter's token %d, want 2 (the next acquisition)", w.Token())
	}
}

// TestFairWaitersLeave: a waiter that times out or is cancelled, in the
// middle or at the head of the queue, leaves it at once and leaves nothing
// locked; the others keep their order.
func TestFairWaitersLeave(t *testing.T) {
	t.Parallel()
	for _, leaver := range []int{0, 1} { // at the head, in the middle
		t.Run(fmt.Sprintf("position %d", leaver), func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			createFair(t, c, ns, "m", 0)
			h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
			if err := h.Lock(t.Context()); err != nil {
				t.Fatal(err)
			}
			var results []<-chan error
			var cancels []context.CancelFunc
			var ms []*lock.Mutex
			for i := range 3 {
				queued := make(chan struct{})
				var once sync.Once
				m := newMutex(t, c, ns, "m", lock.WithHolder(fmt.Sprintf("w%d", i)),
					lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
				ctx, cancel := context.WithCancel(t.Context())
				results = append(results, lockWhenQueued(t, m, ctx))
				cancels = append(cancels, cancel)
				ms = append(ms, m)
				<-queued
			}
			cancels[leaver]()
			if err := <-results[leaver]; !errors.Is(err, lock.ErrLocked) || !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled waiter: got %v, want ErrLocked wrapping context.Canceled", err)
			}
			if n := len(entries(t, ns)); n != 2 {
				t.Errorf("after a waiter left: %d entries, want 2", n)
			}
			if err := h.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				if i == leaver {
					continue
				}
				if err := <-results[i]; err != nil {
					t.Fatalf("waiter w%d: %v", i, err)
				}
				if err := ms[i].Unlock(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			st := mutexStatus(t, ns, "m")
			if st.Phase != lock.PhaseUnlocked || st.Token != 3 {
				t.Errorf("at the end: %+v, want unlocked after 3 acquisitions", st)
			}
			if n := len(entries(t, ns)); n != 0 {
				t.Errorf("%d entries left", n)
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newClient(t, env.Config())
		createFair(t, c, ns, "m", 0)
		h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
		if err := h.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		before := getLease(t, ns, "m").ResourceVersion
		w := newMutex(t, c, ns, "m", lock.WithHolder("w"))
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		if err := w.Lock(ctx); !errors.Is(err, lock.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Lock: got %v, want ErrLocked wrapping DeadlineExceeded", err)
		}
		if n := len(entries(t, ns)); n != 0 {
			t.Errorf("a waiter that timed out left %d entries", n)
		}
		if rv := getLease(t, ns, "m").ResourceVersion; rv != before {
			t.Errorf("a waiter that timed out changed the mutex")
		}
	})
}

// TestFairKilledWaiter: a waiter process killed with SIGKILL, at the head
// of the queue or behind it, is passed over once its session expires, and
// the next one gets the mutex.
func TestFairKilledWaiter(t *testing.T) {
	t.Parallel()
	const waiterTTL = 2 * time.Second
	for _, tc := range []struct {
		name    string
		dead    int // which of the three waiters dies
		release bool
	}{{"at the head", 0, true}, {"in the middle", 1, true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			createFair(t, c, ns, "m", 0)
			h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
			if err := h.Lock(t.Context()); err != nil {
				t.Fatal(err)
			}
			var procs []*waitProc
			for i := range 3 {
				procs = append(procs, startWaitProc(t, ns, "m", fmt.Sprintf("w%d", i), map[string]string{workerWaiterTTL: waiterTTL.String()}))
			}
			if err := procs[tc.dead].cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			killed := time.Now()
			if err := h.Unlock(t.Context()); err != nil {
				t.Fatal(err)
			}
			next := 0
			if tc.dead == 0 {
				next = 1
			}
			tok := procs[next].token(t)
			delay := time.Since(killed)
			t.Logf("killed w%d; w%d acquired %s later (token %d)", tc.dead, next, delay.Round(time.Millisecond), tok)
			if limit := 2*waiterTTL + takeoverMargin; delay > limit {
				t.Errorf("the next waiter got the mutex %s after the kill, want within %s", delay, limit)
			}
			for i, p := range procs {
				if i == tc.dead || i == next {
					continue
				}
				p.token(t)
			}
		})
	}
}

// TestFairMixedWithRacingWriter: fair waiters and a client that knows
// nothing of queues (it takes the Lease when free and releases it, with
// conditional updates) never hold the mutex at once.
func TestFairMixedWithRacingWriter(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	var inside atomic.Int32
	var overlaps atomic.Int32
	section := func() {
		if inside.Add(1) != 1 {
			overlaps.Add(1)
		}
		inside.Add(-1)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := c.NewMutex(ns, "m", lock.WithHolder(fmt.Sprintf("fair-%d", g)))
			if err != nil {
				errs <- err
				return
			}
			for range 15 {
				if err := m.With(ctx, func(context.Context) error { section(); return nil }); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	// The intruder: get, take when free, leave, release; all conditional.
	wg.Add(1)
	takes := 0
	go func() {
		defer wg.Done()
		leases := admin(t).CoordinationV1().Leases(ns)
		for takes < 15 && ctx.Err() == nil {
			l, err := leases.Get(ctx, "m", metav1.GetOptions{})
			if err != nil {
				errs <- err
				return
			}
			if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
				continue
			}
			l.Spec.HolderIdentity = ptr.To("intruder")
			l.Spec.LeaseTransitions = ptr.To(*l.Spec.LeaseTransitions + 1)
			held, err := leases.Update(ctx, l, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) {
				continue
			}
			if err != nil {
				errs <- err
				return
			}
			takes++
			section()
			held.Spec.HolderIdentity = nil
			if _, err := leases.Update(ctx, held, metav1.UpdateOptions{}); err != nil {
				errs <- fmt.Errorf("intruder's release: %w", err)
				return
			}
		}
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping sections", n)
	}
	if takes == 0 {
		t.Errorf("the intruder never took the mutex: the test proves nothing")
	}
}

// TestFairMutualExclusionProcesses: three processes of six goroutines on a
// fair mutex; no overlap, tokens in section order.
func TestFairMutualExclusionProcesses(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	createFair(t, newClient(t, env.Config()), ns, "shared", 0)
	dir := t.TempDir()
	const procs, goroutines, rounds = 3, 6, 6
	var cmds []*exec.Cmd
	for range procs {
		cmd := worker(t, "contend", ns, "shared", map[string]string{
			workerDir: dir, workerGoroutines: strconv.Itoa(goroutines), workerRounds: strconv.Itoa(rounds),
		})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if got, want := len(lines), procs*goroutines*rounds; got != want {
		t.Fatalf("critical sections logged: got %d, want %d", got, want)
	}
	prev := int64(0)
	for i, line := range lines {
		tok, _ := strconv.ParseInt(strings.Fields(line)[0], 10, 64)
		if tok <= prev {
			t.Fatalf("log line %d: token %d is not larger than %d before it", i, tok, prev)
		}
		prev = tok
	}
	if n := len(entries(t, ns)); n != 0 {
		t.Errorf("%d entries left", n)
	}
}
