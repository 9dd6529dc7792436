//go:build e2e

package e2e

// Semaphores against the real API server: never more than the limit
// inside, counted by the tests, not by the library.

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/konlease/konlease/lock"
)

// createSemaphore creates ns/name.
func createSemaphore(t *testing.T, c *lock.Client, ns, name string, opts lock.SemaphoreOptions) {
	t.Helper()
	if _, _, err := c.CreateSemaphore(t.Context(), ns, name, opts); err != nil {
		t.Fatalf("create semaphore %s/%s: %v", ns, name, err)
	}
}

func newSemaphore(t *testing.T, c *lock.Client, ns, name string, opts ...lock.Option) *lock.Semaphore {
	t.Helper()
	s, err := c.NewSemaphore(ns, name, opts...)
	if err != nil {
		t.Fatalf("NewSemaphore(%s/%s): %v", ns, name, err)
	}
	t.Cleanup(func() {
		if s.Token() != 0 {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = s.Release(ctx)
		}
	})
	return s
}

// gauge counts how many are inside at once, and the most ever.
type gauge struct {
	inside, most atomic.Int32
}

func (g *gauge) enter() {
	n := g.inside.Add(1)
	for {
		m := g.most.Load()
		if n <= m || g.most.CompareAndSwap(m, n) {
			return
		}
	}
}

func (g *gauge) exit() { g.inside.Add(-1) }

// TestSemaphoreLimit: goroutines contending for a semaphore, racing and
// fair, never exceed its limit, and reach it.
func TestSemaphoreLimit(t *testing.T) {
	t.Parallel()
	for _, fair := range []bool{false, true} {
		t.Run(fmt.Sprintf("fair=%v", fair), func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			const limit = 3
			createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: limit, Fair: fair})
			var g gauge
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make(chan error, 12)
			for i := range 12 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := c.NewSemaphore(ns, "s", lock.WithHolder(fmt.Sprint("g", i)))
					if err != nil {
						errs <- err
						return
					}
					for range 5 {
						err := s.With(ctx, func(context.Context) error {
							g.enter()
							defer g.exit()
							// Stay a moment, so that holders overlap and the
							// limit is reached.
							<-time.After(100 * time.Millisecond)
							return nil
						})
						if err != nil {
							errs <- err
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			if most := g.most.Load(); most > limit || most < limit {
				t.Errorf("at most %d inside at once, want exactly the limit %d", most, limit)
			}
		})
	}
}

// TestSemaphoreTryAcquireAndTTL: a full semaphore refuses TryAcquire
// naming its holders; a crashed holder's slot frees after its TTL.
func TestSemaphoreTryAcquireAndTTL(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 2, TTL: 2 * time.Second})
	a := newSemaphore(t, c, ns, "s", lock.WithHolder("a"))
	b := newSemaphore(t, c, ns, "s", lock.WithHolder("b"), lock.WithoutRenewal())
	for _, s := range []*lock.Semaphore{a, b} {
		if err := s.TryAcquire(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if a.Slot() == b.Slot() || a.Slot() < 0 || b.Slot() < 0 {
		t.Errorf("slots %d and %d, want two different slots", a.Slot(), b.Slot())
	}
	x := newSemaphore(t, c, ns, "s", lock.WithHolder("x"))
	err := x.TryAcquire(t.Context())
	var full *lock.SemaphoreFullError
	if !errors.As(err, &full) || !errors.Is(err, lock.ErrLocked) || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), `"b"`) {
		t.Fatalf("TryAcquire on a full semaphore: got %v, want ErrLocked naming a and b", err)
	}
	// b does not renew: its slot frees after the TTL, not a's.
	bSlot := b.Slot()
	start := time.Now()
	if err := x.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 2*time.Second+takeoverMargin {
		t.Errorf("took over b's slot after %s", took)
	}
	if x.Slot() != bSlot {
		t.Errorf("x took slot %d, want b's slot %d", x.Slot(), bSlot)
	}
	<-b.Done()
	if !errors.Is(b.Err(), lock.ErrLost) {
		t.Errorf("b: Err %v, want ErrLost", b.Err())
	}
	st, err := c.GetSemaphore(t.Context(), ns, "s")
	if err != nil || st.Limit != 2 || len(st.Holders) != 2 {
		t.Errorf("GetSemaphore: %+v, %v", st, err)
	}
}

// TestSemaphoreLowerLimit: lowering the limit while full evicts nobody,
// and new holders wait until fewer than the new limit hold.
func TestSemaphoreLowerLimit(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 3})
	var hs []*lock.Semaphore
	for i := range 3 {
		s := newSemaphore(t, c, ns, "s", lock.WithHolder(fmt.Sprint("h", i)))
		if err := s.Acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
		hs = append(hs, s)
	}
	if _, _, err := c.CreateSemaphore(t.Context(), ns, "s", lock.SemaphoreOptions{Limit: 1}); !errors.Is(err, lock.ErrLimitConflict) {
		t.Fatalf("CreateSemaphore with another limit: got %v, want ErrLimitConflict", err)
	}
	if _, _, err := c.CreateSemaphore(t.Context(), ns, "s", lock.SemaphoreOptions{Limit: 1, Update: true}); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		select {
		case <-h.Done():
			t.Fatalf("%s was evicted by lowering the limit", h.Holder())
		default:
		}
	}
	w := newSemaphore(t, c, ns, "s", lock.WithHolder("w"))
	got := make(chan error, 1)
	go func() { got <- w.Acquire(t.Context()) }()
	// Until only one holds, nobody new gets in; with nobody left, w does.
	for i, h := range hs {
		select {
		case err := <-got:
			t.Fatalf("w acquired (%v) while %d held, limit 1", err, len(hs)-i)
		default:
		}
		if err := h.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	if w.Slot() != 0 {
		t.Errorf("w took slot %d, want 0 (the only one within the limit)", w.Slot())
	}
}

// TestSemaphoreKinds: a mutex is not a semaphore and a semaphore is not a
// mutex; each refuses the other, changing nothing.
func TestSemaphoreKinds(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 2})
	if _, _, err := c.Create(t.Context(), ns, "m", lock.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := leaseVersions(t, ns)
	sm := newSemaphore(t, c, ns, "m", lock.WithHolder("x"))
	if err := sm.TryAcquire(t.Context()); !errors.Is(err, lock.ErrNotSemaphore) {
		t.Errorf("semaphore Acquire on a mutex: got %v, want ErrNotSemaphore", err)
	}
	for _, name := range []string{"s", "s.s-0"} {
		m := newMutex(t, c, ns, name, lock.WithHolder("x"))
		if err := m.TryLock(t.Context()); !errors.Is(err, lock.ErrNotMutex) {
			t.Errorf("mutex TryLock on %s: got %v, want ErrNotMutex", name, err)
		}
		if _, err := c.Get(t.Context(), ns, name); !errors.Is(err, lock.ErrNotMutex) {
			t.Errorf("Get of %s as a mutex: got %v, want ErrNotMutex", name, err)
		}
	}
	if _, err := c.GetSemaphore(t.Context(), ns, "m"); !errors.Is(err, lock.ErrNotSemaphore) {
		t.Errorf("GetSemaphore of a mutex: got %v, want ErrNotSemaphore", err)
	}
	expectUnchanged(t, ns, before, "refusals of the other kind")
	list, err := c.List(t.Context(), ns)
	if err != nil || len(list) != 1 || list[0].Name != "m" {
		t.Errorf("List of mutexes: %+v, %v; want only m", list, err)
	}
	for _, bad := range []int{0, -1, lock.MaxLimit + 1} {
		if _, _, err := c.CreateSemaphore(t.Context(), ns, "bad", lock.SemaphoreOptions{Limit: bad}); !errors.Is(err, lock.ErrInvalid) {
			t.Errorf("limit %d: got %v, want ErrInvalid", bad, err)
		}
		if _, err := c.NewSemaphore(ns, "bad", lock.WithLimit(bad)); bad != 0 && !errors.Is(err, lock.ErrInvalid) {
			t.Errorf("WithLimit(%d): got %v, want ErrInvalid", bad, err)
		}
	}
	expectUnchanged(t, ns, before, "invalid limits")
}

// TestSemaphoreProcesses: three processes of eight goroutines; the number
// inside, counted by files in a shared directory, never exceeds the limit.
func TestSemaphoreProcesses(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	const limit = 2
	createSemaphore(t, newClient(t, env.Config()), ns, "s", lock.SemaphoreOptions{Limit: limit, TTL: 10 * time.Second})
	dir := t.TempDir()
	var cmds []*exec.Cmd
	for range 3 {
		cmd := worker(t, "sem-contend", ns, "s", map[string]string{workerDir: dir, workerGoroutines: "8", workerRounds: "4", workerLimit: strconv.Itoa(limit)})
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
	data, err := os.ReadFile(filepath.Join(dir, "most"))
	if err != nil {
		t.Fatal(err)
	}
	var most int
	for _, line := range strings.Fields(string(data)) {
		n, _ := strconv.Atoi(line)
		most = max(most, n)
	}
	if most > limit || most < limit {
		t.Errorf("at most %d inside at once across the processes, want the limit %d", most, limit)
	}
	if l, err := admin(t).CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{LabelSelector: lock.LabelKind + "=" + lock.KindSemaphoreSlot}); err != nil || len(l.Items) != limit {
		t.Errorf("slots: %d, %v; want %d", len(l.Items), err, limit)
	}
}

// TestSemaphoreRequiredLimit: WithRequiredLimit (and WithRequiredTTL)
// refuse a semaphore on other terms before writing anything, and create a
// missing one on theirs; WithLimit alone takes an existing semaphore as it
// is.
func TestSemaphoreRequiredLimit(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 2, TTL: time.Minute})
	for _, tc := range []struct {
		name string
		opts []lock.Option
		want error // nil: acquired
	}{
		{"other limit", []lock.Option{lock.WithRequiredLimit(3)}, lock.ErrLimitConflict},
		{"other TTL", []lock.Option{lock.WithRequiredLimit(2), lock.WithRequiredTTL(time.Hour)}, lock.ErrTTLConflict},
		{"same terms", []lock.Option{lock.WithRequiredLimit(2), lock.WithRequiredTTL(time.Minute)}, nil},
		{"a hint only", []lock.Option{lock.WithLimit(5)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := leaseVersions(t, ns)
			s := newSemaphore(t, c, ns, "s", append(tc.opts, lock.WithHolder(strings.ReplaceAll(tc.name, " ", "-")))...)
			err := s.TryAcquire(t.Context())
			if tc.want == nil {
				if err != nil {
					t.Fatalf("TryAcquire: %v, want a slot", err)
				}
				if err := s.Release(t.Context()); err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "nothing changed") {
				t.Fatalf("TryAcquire: %v, want %v and nothing changed", err, tc.want)
			}
			expectUnchanged(t, ns, before, "a refused TryAcquire")
		})
	}
	s := newSemaphore(t, c, ns, "new", lock.WithRequiredLimit(3), lock.WithRequiredTTL(time.Minute))
	if err := s.TryAcquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	if st, err := c.GetSemaphore(t.Context(), ns, "new"); err != nil || st.Limit != 3 || st.TTL != time.Minute {
		t.Errorf("created by Acquire: %+v (%v), want limit 3 and TTL 1m", st, err)
	}
}

// TestSemaphoreRBAC: without each verb a semaphore's Acquire needs, it
// fails with an error naming that verb, and changes nothing; without
// watch, a waiter polls and still gets the slot released.
func TestSemaphoreRBAC(t *testing.T) {
	t.Parallel()
	all := []string{"get", "update", "create", "list", "watch", "delete"}
	without := func(v string) []string {
		return slices.DeleteFunc(slices.Clone(all), func(a string) bool { return a == v })
	}
	for _, tc := range []struct {
		verb string
		fair bool
	}{
		{"get", false}, {"list", false}, {"update", false},
		{"create", true}, {"delete", true},
	} {
		name := "without " + tc.verb
		if tc.fair {
			name += ", fair"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 1, Fair: tc.fair})
			if tc.fair {
				// A fair waiter queues only when it must wait.
				h := newSemaphore(t, c, ns, "s", lock.WithHolder("holder"))
				if err := h.Acquire(t.Context()); err != nil {
					t.Fatal(err)
				}
			}
			before := leaseVersions(t, ns)
			limited := newClient(t, env.Identity(t, ns, without(tc.verb)...))
			s := newSemaphore(t, limited, ns, "s", lock.WithHolder("w"))
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := s.Acquire(ctx)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q verb", tc.verb)) {
				t.Fatalf("Acquire without %q: got %v, want an error naming the verb", tc.verb, err)
			}
			// It speaks of the semaphore, never of a mutex (a slot is not one).
			if msg := err.Error(); strings.Contains(msg, "mutex "+ns) || !strings.Contains(msg, "semaphore "+ns+"/s") && !strings.Contains(msg, "fair mutex or semaphore") {
				t.Errorf("Acquire without %q: %v, want it to name semaphore %s/s and no mutex", tc.verb, err, ns)
			}
			t.Logf("without %q: %v", tc.verb, err)
			expectUnchanged(t, ns, before, "a refused Acquire")
		})
	}
	t.Run("without watch", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newClient(t, env.Config())
		createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 1})
		h := newSemaphore(t, c, ns, "s", lock.WithHolder("holder"))
		if err := h.Acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
		polling := newClient(t, env.Identity(t, ns, without("watch")...), lock.WithPollInterval(100*time.Millisecond))
		waiting := make(chan struct{})
		var once sync.Once
		w := newSemaphore(t, polling, ns, "s", lock.WithHolder("w"),
			lock.WithSemaphoreWaitNotify(func(lock.SemaphoreStatus) { once.Do(func() { close(waiting) }) }))
		got := make(chan error, 1)
		go func() { got <- w.Acquire(t.Context()) }()
		<-waiting
		if err := h.Release(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("polling waiter: %v", err)
		}
	})
}
