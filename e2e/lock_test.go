//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/lock"
)

// TestMutualExclusionGoroutines: 16 goroutines, each with its own handle,
// contend through With; inside, an overlap detector must never see anyone
// else, and the fencing tokens must grow in acquisition order.
func TestMutualExclusionGoroutines(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	const workers, rounds = 16, 15
	// A bound of its own, so that a lost wakeup fails this test with a
	// message instead of hanging the suite (it takes about 3s).
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	var inside atomic.Int32
	var mu sync.Mutex
	var tokens []int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := c.NewMutex(ns, "shared", lock.WithHolder(fmt.Sprintf("worker-%d", w)))
			if err != nil {
				errs <- err
				return
			}
			for range rounds {
				err := m.With(ctx, func(ctx context.Context) error {
					if n := inside.Add(1); n != 1 {
						return fmt.Errorf("overlap: %d holders inside", n)
					}
					mu.Lock()
					tokens = append(tokens, m.Token())
					mu.Unlock()
					inside.Add(-1)
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
	if got, want := len(tokens), workers*rounds; got != want {
		t.Fatalf("critical sections: got %d, want %d", got, want)
	}
	for i := 1; i < len(tokens); i++ {
		if tokens[i] <= tokens[i-1] {
			t.Fatalf("token %d at acquisition %d is not larger than %d before it", tokens[i], i, tokens[i-1])
		}
	}
}

// TestLockUnlockBasics walks the state machine once, checking the Lease
// that results at each step: the contract other tools read.
func TestLockUnlockBasics(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	m := newMutex(t, c, ns, "basics", lock.WithHolder("alice"), lock.WithTTL(30*time.Second))

	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("Lock: %v", err)
	}
	l := getLease(t, ns, "basics")
	checks := []struct {
		what      string
		got, want any
	}{
		{"label", l.Labels[lock.LabelKind], lock.KindMutex},
		{"unlock annotation", l.Annotations[lock.AnnotationUnlock], lock.UnlockExplicit},
		{"ttl annotation", l.Annotations[lock.AnnotationTTL], "30s"},
		{"holderIdentity", ptr.Deref(l.Spec.HolderIdentity, ""), "alice"},
		{"leaseDurationSeconds", ptr.Deref(l.Spec.LeaseDurationSeconds, 0), int32(30)},
		{"leaseTransitions", ptr.Deref(l.Spec.LeaseTransitions, -1), int32(1)},
		{"acquireTime set", l.Spec.AcquireTime != nil, true},
		{"token", m.Token(), int64(1)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("after Lock, %s: got %v, want %v", c.what, c.got, c.want)
		}
	}
	// A leader-election reader sees alice as the holder.
	if rec := resourcelock.LeaseSpecToLeaderElectionRecord(&l.Spec); rec.HolderIdentity != "alice" || rec.LeaseDurationSeconds != 30 {
		t.Errorf("leader-election view: got holder %q duration %d, want alice 30", rec.HolderIdentity, rec.LeaseDurationSeconds)
	}

	if hs, held := m.Status(); !held || hs.Holder != "alice" || hs.Token != 1 || hs.ExpiresAt.IsZero() {
		t.Errorf("Status after Lock: got %+v, %v; want held by alice, token 1, expiresAt set", hs, held)
	}
	st, err := c.Get(t.Context(), ns, "basics")
	if err != nil {
		t.Fatalf("Get: %v", err)
	}
	if st.Phase != lock.PhaseLocked || st.Holder != "alice" || st.Token != 1 || st.TTL != 30*time.Second || st.ExpiresAt.IsZero() {
		t.Errorf("Get: got %+v, want Locked by alice, token 1, ttl 30s, expiresAt set", st)
	}

	done := m.Done()
	if err := m.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	within(t, done, time.Second, "Done after Unlock")
	if err := m.Err(); err != nil {
		t.Errorf("Err after Unlock: got %v, want nil", err)
	}
	l = getLease(t, ns, "basics")
	if l.Spec.HolderIdentity != nil || ptr.Deref(l.Spec.LeaseTransitions, -1) != 1 {
		t.Errorf("after Unlock: got holder %v transitions %v, want unset and 1", l.Spec.HolderIdentity, ptr.Deref(l.Spec.LeaseTransitions, -1))
	}

	// Lock again: the token grows.
	if err := m.Lock(t.Context()); err != nil {
		t.Fatalf("second Lock: %v", err)
	}
	if got := m.Token(); got != 2 {
		t.Errorf("second Lock token: got %d, want 2", got)
	}
}

// TestTryLockAndErrors covers TryLock's LockedError, ErrAlreadyHeld and
// ErrNotHeld, each changing nothing.
func TestTryLockAndErrors(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	alice := newMutex(t, c, ns, "m", lock.WithHolder("alice"), lock.WithTTL(time.Minute))
	bob := newMutex(t, c, ns, "m", lock.WithHolder("bob"))
	alice2 := newMutex(t, c, ns, "m", lock.WithHolder("alice"))

	if err := alice.TryLock(t.Context()); err != nil {
		t.Fatalf("alice TryLock: %v", err)
	}
	before := getLease(t, ns, "m")

	err := bob.TryLock(t.Context())
	var le *lock.LockedError
	if !errors.Is(err, lock.ErrLocked) || !errors.As(err, &le) {
		t.Fatalf("bob TryLock: got %v, want a *LockedError", err)
	}
	if le.Holder != "alice" || le.ExpiresAt.IsZero() || le.Token != 1 {
		t.Errorf("LockedError: got holder %q expires %v token %d, want alice, set, 1", le.Holder, le.ExpiresAt, le.Token)
	}
	if err := alice.Lock(t.Context()); !errors.Is(err, lock.ErrAlreadyHeld) {
		t.Errorf("alice Lock again: got %v, want ErrAlreadyHeld", err)
	}
	if err := alice2.TryLock(t.Context()); !errors.Is(err, lock.ErrAlreadyHeld) {
		t.Errorf("second alice handle TryLock: got %v, want ErrAlreadyHeld", err)
	}
	var nh *lock.NotHeldError
	if err := bob.Unlock(t.Context()); !errors.Is(err, lock.ErrNotHeld) || !errors.As(err, &nh) || nh.Current != "alice" || !strings.Contains(err.Error(), `held by "alice"`) {
		t.Errorf("bob Unlock: got %v, want a NotHeldError naming alice", err)
	}
	after := getLease(t, ns, "m")
	if before.ResourceVersion != after.ResourceVersion {
		t.Errorf("failed calls changed the Lease: resourceVersion %s -> %s", before.ResourceVersion, after.ResourceVersion)
	}
	// The same identity through another handle may unlock (CLI semantics).
	if err := alice2.Unlock(t.Context()); err != nil {
		t.Errorf("alice's second handle Unlock: %v", err)
	}
	within(t, alice.Done(), 10*time.Second, "first handle told of the release")
	if !errors.Is(alice.Err(), lock.ErrLost) {
		t.Errorf("first handle Err: got %v, want ErrLost", alice.Err())
	}
}

// TestLockWaitsForUnlockWithoutPolling: a blocked waiter is woken by the
// watch; while it waits it makes no requests at all.
func TestLockWaitsForUnlockWithoutPolling(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	holder := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := holder.Lock(t.Context()); err != nil {
		t.Fatalf("holder Lock: %v", err)
	}

	wcfg, counter := countRequests(env.Config())
	wc := newClient(t, wcfg, lock.WithPollInterval(50*time.Millisecond))
	waiting := make(chan lock.Status, 1)
	waiter := newMutex(t, wc, ns, "m", lock.WithHolder("waiter"), lock.WithWaitNotify(func(s lock.Status) { waiting <- s }))
	locked := make(chan error, 1)
	go func() { locked <- waiter.Lock(t.Context()) }()
	s := <-waiting
	if s.Holder != "holder" {
		t.Errorf("wait notification: got holder %q, want holder", s.Holder)
	}
	// Let time pass that a poller would have used for many polls (the
	// waiter's poll interval is 50ms), then count.
	idle := time.NewTimer(time.Second)
	select {
	case err := <-locked:
		t.Fatalf("waiter returned while the mutex was held: %v", err)
	case <-idle.C:
	}
	counts := counter.snapshot()
	if counts["GET"] != 1 || counts["WATCH"] != 1 || len(counts) != 2 {
		t.Errorf("requests while waiting: got %v, want exactly one GET and one WATCH", counts)
	}
	if err := holder.Unlock(t.Context()); err != nil {
		t.Fatalf("holder Unlock: %v", err)
	}
	if err := <-locked; err != nil {
		t.Fatalf("waiter Lock: %v", err)
	}
	counts = counter.snapshot()
	if counts["UPDATE"] != 1 || counts["GET"] != 0 {
		t.Errorf("requests to take over after Unlock: got %v, want one UPDATE and no GET", counts)
	}
}

// TestLockTimeout: a deadline ends a blocked Lock with an error that is
// both ErrLocked and context.DeadlineExceeded, and leaves nothing behind.
func TestLockTimeout(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	holder := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := holder.Lock(t.Context()); err != nil {
		t.Fatalf("holder Lock: %v", err)
	}
	waiter := newMutex(t, c, ns, "m", lock.WithHolder("waiter"))
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	err := waiter.Lock(ctx)
	if !errors.Is(err, lock.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock with timeout: got %v, want ErrLocked and DeadlineExceeded", err)
	}
	if l := getLease(t, ns, "m"); ptr.Deref(l.Spec.HolderIdentity, "") != "holder" {
		t.Errorf("holder after the waiter gave up: got %q, want holder", ptr.Deref(l.Spec.HolderIdentity, ""))
	}
}

// TestCancelledLockLeavesNothing: cancelling a waiting Lock returns
// promptly, leaves no lock and no goroutine behind. Not parallel: the
// goroutine check looks at the whole process.
func TestCancelledLockLeavesNothing(t *testing.T) {
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	holder := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := holder.Lock(t.Context()); err != nil {
		t.Fatalf("holder Lock: %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	waiter := newMutex(t, c, ns, "m", lock.WithHolder("waiter"), lock.WithWaitNotify(func(lock.Status) { cancel() }))
	err := waiter.Lock(ctx)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("cancelled Lock: got %v, want ErrLocked and Canceled", err)
	}
	if err := holder.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock: %v", err)
	}
	if l := getLease(t, ns, "m"); l.Spec.HolderIdentity != nil {
		t.Errorf("after cancel and unlock: holder %q remains", *l.Spec.HolderIdentity)
	}
	noLockGoroutines(t)
}

// TestForcedLossClosesDone: a holder learns at once that it was
// force-unlocked, or that another holder was written behind its back.
func TestForcedLossClosesDone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		force func(t *testing.T, c *lock.Client, ns string)
	}{
		{"force-unlock", func(t *testing.T, c *lock.Client, ns string) {
			st, err := c.ForceUnlock(t.Context(), ns, "m")
			if err != nil || st.Holder != "victim" {
				t.Fatalf("ForceUnlock: got %+v, %v; want evicted victim", st, err)
			}
		}},
		{"overwritten", func(t *testing.T, c *lock.Client, ns string) {
			l := getLease(t, ns, "m")
			l.Spec.HolderIdentity = ptr.To("intruder")
			l.Spec.LeaseTransitions = ptr.To(*l.Spec.LeaseTransitions + 1)
			if _, err := admin(t).CoordinationV1().Leases(ns).Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
				t.Fatalf("overwrite: %v", err)
			}
		}},
		{"deleted", func(t *testing.T, c *lock.Client, ns string) {
			if _, err := c.Delete(t.Context(), ns, "m", lock.DeleteOptions{Force: true}); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			m := newMutex(t, c, ns, "m", lock.WithHolder("victim"))
			if err := m.Lock(t.Context()); err != nil {
				t.Fatalf("Lock: %v", err)
			}
			tc.force(t, c, ns)
			within(t, m.Done(), 10*time.Second, "Done after "+tc.name)
			if !errors.Is(m.Err(), lock.ErrLost) {
				t.Errorf("Err: got %v, want ErrLost", m.Err())
			}
			if m.Token() != 0 {
				t.Errorf("Token after loss: got %d, want 0", m.Token())
			}
			if err := m.Unlock(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
				t.Errorf("Unlock after loss: got %v, want ErrNotHeld", err)
			}
		})
	}
}

// TestWith covers the helper: it unlocks after success, error, panic and an
// ended context, and cancels fn's context when the lock is lost.
func TestWith(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	unlocked := func(t *testing.T, name string) {
		t.Helper()
		if l := getLease(t, ns, name); l.Spec.HolderIdentity != nil {
			t.Errorf("after With: holder %q remains", *l.Spec.HolderIdentity)
		}
	}
	t.Run("error", func(t *testing.T) {
		boom := errors.New("boom")
		err := lock.With(t.Context(), c, ns, "with-error", func(context.Context) error { return boom })
		if !errors.Is(err, boom) {
			t.Errorf("With: got %v, want fn's error", err)
		}
		unlocked(t, "with-error")
	})
	t.Run("panic", func(t *testing.T) {
		func() {
			defer func() {
				if p := recover(); p != "boom" {
					t.Errorf("recovered %v, want the panic to continue", p)
				}
			}()
			_ = lock.With(t.Context(), c, ns, "with-panic", func(context.Context) error { panic("boom") })
		}()
		unlocked(t, "with-panic")
	})
	t.Run("context ended", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		err := lock.With(ctx, c, ns, "with-ctx", func(ctx context.Context) error {
			cancel()
			<-ctx.Done()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("With: got %v, want Canceled", err)
		}
		unlocked(t, "with-ctx")
	})
	t.Run("lost", func(t *testing.T) {
		err := lock.With(t.Context(), c, ns, "with-lost", func(ctx context.Context) error {
			if _, err := c.ForceUnlock(t.Context(), ns, "with-lost"); err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return nil // fn stops when told; With still reports the loss
			case <-time.After(10 * time.Second):
				return errors.New("fn's context was not cancelled after the loss")
			}
		})
		if !errors.Is(err, lock.ErrLost) {
			t.Errorf("With: got %v, want ErrLost", err)
		}
	})
}

// TestAdminOperations covers Create, Get, List, Delete.
func TestAdminOperations(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	ctx := t.Context()

	if _, created, err := c.Create(ctx, ns, "a", lock.CreateOptions{TTL: 5 * time.Minute}); err != nil || !created {
		t.Fatalf("Create: got created %v, %v; want created", created, err)
	}
	if _, created, err := c.Create(ctx, ns, "a", lock.CreateOptions{TTL: 5 * time.Minute}); err != nil || created {
		t.Errorf("Create again with the same TTL: got created %v, %v; want success, not created", created, err)
	}
	before := getLease(t, ns, "a").ResourceVersion
	if _, _, err := c.Create(ctx, ns, "a", lock.CreateOptions{TTL: time.Minute}); !errors.Is(err, lock.ErrTTLConflict) {
		t.Errorf("Create with another TTL: got %v, want ErrTTLConflict", err)
	}
	if after := getLease(t, ns, "a").ResourceVersion; after != before {
		t.Errorf("refused Create changed the Lease")
	}
	st, _, err := c.Create(ctx, ns, "a", lock.CreateOptions{TTL: time.Minute, UpdateTTL: true})
	if err != nil || st.TTL != time.Minute {
		t.Errorf("Create with UpdateTTL: got %+v, %v; want TTL 1m", st, err)
	}
	if _, _, err := c.Create(ctx, ns, "b", lock.CreateOptions{}); err != nil {
		t.Fatalf("Create b: %v", err)
	}
	m := newMutex(t, c, ns, "b", lock.WithHolder("h"))
	if err := m.Lock(ctx); err != nil {
		t.Fatalf("Lock b: %v", err)
	}
	if _, _, err := c.Create(ctx, ns, "b", lock.CreateOptions{TTL: time.Minute, UpdateTTL: true}); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("changing the TTL of a locked mutex: got %v, want ErrLocked", err)
	}

	// A Lease that is not a mutex but has the label is listed as Invalid,
	// with the reason Get gives, rather than left out.
	if _, err := admin(t).CoordinationV1().Leases(ns).Create(ctx, &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "labelled", Labels: map[string]string{lock.LabelKind: lock.KindMutex}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	list, err := c.List(ctx, ns)
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	var got []string
	for _, s := range list {
		got = append(got, fmt.Sprintf("%s:%s:%s", s.Name, s.Phase, s.Holder))
	}
	if want := "a:Unlocked:,b:Locked:h,labelled:Invalid:"; strings.Join(got, ",") != want {
		t.Errorf("List: got %v, want %s", got, want)
	}
	if r := list[len(list)-1].Reason; !strings.Contains(r, "no konlease.io/unlock annotation") {
		t.Errorf("List: reason of the labelled Lease = %q", r)
	}
	all, err := c.List(ctx, "")
	if err != nil {
		t.Fatalf("List all: %v", err)
	}
	n := 0
	for _, s := range all {
		if s.Namespace == ns {
			n++
		}
	}
	if n != 3 {
		t.Errorf("List all namespaces: got %d mutexes in %s, want 3", n, ns)
	}

	if _, err := c.Delete(ctx, ns, "b", lock.DeleteOptions{}); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("Delete locked: got %v, want ErrLocked", err)
	}
	if _, err := c.Delete(ctx, ns, "a", lock.DeleteOptions{}); err != nil {
		t.Errorf("Delete unlocked: %v", err)
	}
	if _, err := c.Get(ctx, ns, "a"); !errors.Is(err, lock.ErrNotFound) {
		t.Errorf("Get deleted: got %v, want ErrNotFound", err)
	}
	if _, err := c.Delete(ctx, ns, "b", lock.DeleteOptions{Force: true}); err != nil {
		t.Errorf("Delete locked with force: %v", err)
	}
	within(t, m.Done(), 10*time.Second, "holder told of forced delete")
}

// TestNonMutexLeaseUntouched: every operation on a leader-election Lease
// fails with ErrNotMutex and leaves it byte-for-byte unchanged.
func TestNonMutexLeaseUntouched(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	now := metav1.NowMicro()
	le := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: "leader", Namespace: ns},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To("controller-0"), LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To[int32](3),
		},
	}
	garbled := le.DeepCopy()
	garbled.Name = "garbled"
	garbled.Annotations = map[string]string{lock.AnnotationUnlock: lock.UnlockExplicit, lock.AnnotationTTL: "abc"}
	for _, l := range []*coordinationv1.Lease{le, garbled} {
		if _, err := admin(t).CoordinationV1().Leases(ns).Create(t.Context(), l, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"leader", "garbled"} {
		before, _ := json.Marshal(getLease(t, ns, name))
		m := newMutex(t, c, ns, name, lock.WithHolder("controller-0"))
		short := func() context.Context {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			t.Cleanup(cancel)
			return ctx
		}
		ops := map[string]func() error{
			"Lock":        func() error { return m.Lock(short()) },
			"TryLock":     func() error { return m.TryLock(short()) },
			"Unlock":      func() error { return m.Unlock(short()) },
			"Get":         func() error { _, err := c.Get(short(), ns, name); return err },
			"Create":      func() error { _, _, err := c.Create(short(), ns, name, lock.CreateOptions{}); return err },
			"ForceUnlock": func() error { _, err := c.ForceUnlock(short(), ns, name); return err },
			"Delete":      func() error { _, err := c.Delete(short(), ns, name, lock.DeleteOptions{Force: true}); return err },
			"With":        func() error { return m.With(short(), func(context.Context) error { return nil }) },
		}
		for op, f := range ops {
			if err := f(); !errors.Is(err, lock.ErrNotMutex) {
				t.Errorf("%s on %s: got %v, want ErrNotMutex", op, name, err)
			}
		}
		after, _ := json.Marshal(getLease(t, ns, name))
		if string(before) != string(after) {
			t.Errorf("%s changed:\nbefore %s\nafter  %s", name, before, after)
		}
	}
}

// TestInvalidArguments: bad names, holders and TTLs are refused before any
// request is made.
func TestInvalidArguments(t *testing.T) {
	t.Parallel()
	cfg, counter := countRequests(env.Config())
	c := newClient(t, cfg)
	ns := "default"
	for _, tc := range []struct {
		name string
		ns   string
		opts []lock.Option
		want string
	}{
		{"UPPER", ns, nil, "invalid mutex name"},
		{"", ns, nil, "mutex name is empty"},
		{strings.Repeat("a", 254), ns, nil, "invalid mutex name"},
		{"../etc", ns, nil, "invalid mutex name"},
		{"a/b", ns, nil, "invalid mutex name"},
		{"ok", "", nil, "namespace is empty"},
		{"ok", "Bad_NS", nil, "invalid namespace"},
		{"ok", ns, []lock.Option{lock.WithHolder(" padded")}, "white space"},
		{"ok", ns, []lock.Option{lock.WithHolder("tab\there")}, "control character"},
		{"ok", ns, []lock.Option{lock.WithHolder(strings.Repeat("h", 254))}, "at most 253"},
		{"ok", ns, []lock.Option{lock.WithTTL(500 * time.Millisecond)}, "500ms"},
		{"ok", ns, []lock.Option{lock.WithTTL(-time.Second)}, "-1s"},
	} {
		_, err := c.NewMutex(tc.ns, tc.name, tc.opts...)
		if !errors.Is(err, lock.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewMutex(%q, %q): got %v, want ErrInvalid mentioning %q", tc.ns, tc.name, err, tc.want)
		}
	}
	if _, _, err := c.Create(t.Context(), ns, "ok", lock.CreateOptions{TTL: 100000 * time.Hour}); !errors.Is(err, lock.ErrInvalid) {
		t.Errorf("Create with an absurd TTL: got %v, want ErrInvalid", err)
	}
	if n := counter.snapshot(); len(n) != 0 {
		t.Errorf("invalid calls made requests: %v", n)
	}
}

// TestLockCreatesAndRBAC: a restricted identity with exactly the verbs the
// package documents can do everything; without watch it still waits and
// wins (polling); without create it may lock an existing mutex but gets a
// clear error for a missing one.
func TestLockCreatesAndRBAC(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	adminC := newClient(t, env.Config())
	full := newClient(t, env.Identity(t, ns, "get", "list", "watch", "create", "update", "delete"))
	noWatch := newClient(t, env.Identity(t, ns, "get", "update", "create"), lock.WithPollInterval(100*time.Millisecond))
	noCreate := newClient(t, env.Identity(t, ns, "get", "update", "watch"))

	t.Run("full", func(t *testing.T) {
		m := newMutex(t, full, ns, "full")
		if err := m.Lock(t.Context()); err != nil {
			t.Fatalf("Lock (creates): %v", err)
		}
		if _, err := full.List(t.Context(), ns); err != nil {
			t.Errorf("List: %v", err)
		}
		if err := m.Unlock(t.Context()); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		if _, err := full.Delete(t.Context(), ns, "full", lock.DeleteOptions{}); err != nil {
			t.Errorf("Delete: %v", err)
		}
	})
	t.Run("no watch", func(t *testing.T) {
		h := newMutex(t, adminC, ns, "nowatch", lock.WithHolder("admin"))
		if err := h.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		waiting := make(chan struct{})
		m := newMutex(t, noWatch, ns, "nowatch", lock.WithWaitNotify(func(lock.Status) { close(waiting) }))
		locked := make(chan error, 1)
		go func() { locked <- m.Lock(t.Context()) }()
		<-waiting
		if err := h.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := <-locked; err != nil {
			t.Fatalf("Lock without watch: %v", err)
		}
		if err := m.Unlock(t.Context()); err != nil {
			t.Errorf("Unlock without watch: %v", err)
		}
	})
	t.Run("no create", func(t *testing.T) {
		if _, _, err := adminC.Create(t.Context(), ns, "exists", lock.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		m := newMutex(t, noCreate, ns, "exists")
		if err := m.Lock(t.Context()); err != nil {
			t.Errorf("Lock existing without create: %v", err)
		} else if err := m.Unlock(t.Context()); err != nil {
			t.Errorf("Unlock: %v", err)
		}
		missing := newMutex(t, noCreate, ns, "missing")
		err := missing.Lock(t.Context())
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "does not exist") || !strings.Contains(err.Error(), `"create"`) {
			t.Errorf("Lock missing without create: got %v, want a Forbidden error naming the create verb", err)
		}
	})
}
