//go:build e2e

package e2e

// Fair mutexes at their edges: a crashed TTL holder, a mutex deleted under
// its waiters, Leases that look like queue entries, RBAC without each verb
// fair mode needs, and switching fairness.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/lock"
)

// TestFairCrashedHolder: a fair mutex's TTL holder killed with SIGKILL is
// taken over by the head of the queue once the TTL has run out.
func TestFairCrashedHolder(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	const ttl = 2 * time.Second
	createFair(t, newClient(t, env.Config()), ns, "m", ttl)
	cmd := startHolder(t, ns, "m", 0)
	w := startWaitProc(t, ns, "m", "waiter", nil)
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if tok := w.token(t); tok != 2 {
		t.Errorf("takeover token %d, want 2", tok)
	}
	if took := time.Since(killed); took > ttl+takeoverMargin {
		t.Errorf("takeover after the crash took %s, want within %s", took, ttl+takeoverMargin)
	}
}

// TestFairDeletedWithWaiters: deleting a fair mutex deletes its queue; the
// holder is told, and the waiters, finding it gone, create it again and
// take turns, never two at once, leaving nothing behind.
func TestFairDeletedWithWaiters(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	var inside, overlaps int
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 3 {
		queued := make(chan struct{})
		var once sync.Once
		m := newMutex(t, c, ns, "m", lock.WithHolder(fmt.Sprintf("w%d", i)),
			lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- m.With(t.Context(), func(context.Context) error {
				mu.Lock()
				inside++
				if inside > 1 {
					overlaps++
				}
				mu.Unlock()
				mu.Lock()
				inside--
				mu.Unlock()
				return nil
			})
		}()
		<-queued
	}
	if _, err := c.Delete(t.Context(), ns, "m", lock.DeleteOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	<-h.Done()
	if !errors.Is(h.Err(), lock.ErrLost) {
		t.Errorf("holder of the deleted mutex: Err %v, want ErrLost", h.Err())
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
	}
	if overlaps != 0 {
		t.Errorf("%d overlapping sections", overlaps)
	}
	if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked {
		t.Errorf("at the end: %+v, want unlocked", st)
	}
	if n := len(entries(t, ns)); n != 0 {
		t.Errorf("%d entries left", n)
	}
}

// TestFairForeignEntries: hundreds of Leases that look like queue entries
// (garbled, of another mutex, of sessions that do not exist) neither wedge
// the queue nor crash a client; the garbled ones are never modified.
func TestFairForeignEntries(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	// A client without client-go's default limit of 5 requests per second:
	// this test makes 300 Leases.
	cfg := env.Config()
	cfg.QPS, cfg.Burst = -1, 0
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leases := cs.CoordinationV1().Leases(ns)
	mk := func(name string, labels, annotations map[string]string, holder *string) {
		t.Helper()
		_, err := leases.Create(t.Context(), &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: holder},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	waiter := map[string]string{lock.LabelKind: lock.KindWaiter, lock.LabelMutex: "m"}
	for i := range 50 {
		// No session, a session that is not one, another mutex's name, no
		// holder: all invalid, so ignored and never touched.
		mk(fmt.Sprintf("garbled-a%d", i), waiter, map[string]string{lock.AnnotationMutex: "m"}, ptr.To("x"))
		mk(fmt.Sprintf("garbled-b%d", i), waiter, map[string]string{lock.AnnotationMutex: "m", lock.AnnotationSession: "not-a-session"}, ptr.To("x"))
		mk(fmt.Sprintf("garbled-c%d", i), waiter, map[string]string{lock.AnnotationMutex: "other", lock.AnnotationSession: "konlease-session-x"}, ptr.To("x"))
		mk(fmt.Sprintf("garbled-d%d", i), waiter, map[string]string{lock.AnnotationMutex: "m", lock.AnnotationSession: "konlease-session-x"}, nil)
	}
	for i := range 100 {
		// Valid-looking entries whose session does not exist: dead
		// waiters, to be passed over.
		mk(fmt.Sprintf("ghost-%d", i), waiter, map[string]string{lock.AnnotationMutex: "m", lock.AnnotationSession: fmt.Sprintf("konlease-session-ghost%d", i)}, ptr.To(fmt.Sprintf("ghost-%d", i)))
	}
	garbled := map[string]string{}
	for name, rv := range leaseVersions(t, ns) {
		if strings.HasPrefix(name, "garbled-") {
			garbled[name] = rv
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	// TryLock with only dead waiters queued: they are passed over.
	m := newMutex(t, c, ns, "m", lock.WithHolder("a"))
	if err := m.TryLock(ctx); err != nil {
		t.Fatalf("TryLock with only dead and garbled waiters: %v", err)
	}
	// A real waiter queues and gets the mutex by handoff.
	queued := make(chan struct{})
	var once sync.Once
	w := newMutex(t, c, ns, "m", lock.WithHolder("b"), lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	got := lockWhenQueued(t, w, ctx)
	<-queued
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("waiter: %v", err)
	}
	if st, _ := w.Status(); st.Token != 2 {
		t.Errorf("waiter's token %d, want 2", st.Token)
	}
	after := map[string]string{}
	for name, rv := range leaseVersions(t, ns) {
		if strings.HasPrefix(name, "garbled-") {
			after[name] = rv
		}
		if strings.HasPrefix(name, "ghost-") {
			t.Errorf("dead entry %s was not passed over", name)
		}
	}
	if !maps.Equal(garbled, after) {
		t.Errorf("garbled look-alike entries were modified or deleted")
	}
}

// TestFairRBAC: without each verb that fair mode needs beyond racing mode,
// waiting fails with an error naming that verb, and changes nothing;
// without watch, waiters poll.
func TestFairRBAC(t *testing.T) {
	t.Parallel()
	all := []string{"get", "update", "create", "list", "watch", "delete"}
	without := func(v string) []string {
		var out []string
		for _, a := range all {
			if a != v {
				out = append(out, a)
			}
		}
		return out
	}
	for _, verb := range []string{"list", "create", "delete"} {
		t.Run("without "+verb, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newClient(t, env.Config())
			createFair(t, c, ns, "m", 0)
			h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
			if err := h.Lock(t.Context()); err != nil {
				t.Fatal(err)
			}
			before := leaseVersions(t, ns)
			limited := newClient(t, env.Identity(t, ns, without(verb)...))
			w := newMutex(t, limited, ns, "m", lock.WithHolder("w"))
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := w.Lock(ctx)
			if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%q verb", verb)) {
				t.Fatalf("Lock without %q: got %v, want an error naming the verb", verb, err)
			}
			expectUnchanged(t, ns, before, "a refused fair Lock")
		})
	}
	t.Run("without watch", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newClient(t, env.Config())
		createFair(t, c, ns, "m", 0)
		h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
		if err := h.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		polling := newClient(t, env.Identity(t, ns, without("watch")...), lock.WithPollInterval(100*time.Millisecond))
		queued := make(chan struct{})
		var once sync.Once
		w := newMutex(t, polling, ns, "m", lock.WithHolder("w"), lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
		got := lockWhenQueued(t, w, t.Context())
		<-queued
		if err := h.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("polling waiter: %v", err)
		}
	})
}

// TestFairCreate: fairness is a property of the mutex, like its TTL.
func TestFairCreate(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	ctx := t.Context()
	if st, created, err := c.Create(ctx, ns, "m", lock.CreateOptions{Fair: true}); err != nil || !created || !st.Fair {
		t.Fatalf("Create fair: %+v %v %v", st, created, err)
	}
	if _, created, err := c.Create(ctx, ns, "m", lock.CreateOptions{Fair: true}); err != nil || created {
		t.Errorf("Create fair again: created %v, %v; want success, nothing created", created, err)
	}
	before := leaseVersions(t, ns)
	if _, _, err := c.Create(ctx, ns, "m", lock.CreateOptions{}); !errors.Is(err, lock.ErrFairnessConflict) {
		t.Errorf("Create racing on a fair mutex: got %v, want ErrFairnessConflict", err)
	}
	expectUnchanged(t, ns, before, "a refused fairness change")
	// Not while locked, nor while anyone waits.
	h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := h.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Create(ctx, ns, "m", lock.CreateOptions{UpdateTTL: true}); !errors.Is(err, lock.ErrLocked) {
		t.Errorf("switching a locked mutex: got %v, want ErrLocked", err)
	}
	queued := make(chan struct{})
	var once sync.Once
	w := newMutex(t, c, ns, "m", lock.WithHolder("w"), lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	wctx, cancel := context.WithCancel(ctx)
	got := lockWhenQueued(t, w, wctx)
	<-queued
	if err := h.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := w.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if st, _, err := c.Create(ctx, ns, "m", lock.CreateOptions{UpdateTTL: true}); err != nil || st.Fair {
		t.Errorf("switching an unlocked mutex with nobody waiting to racing: %+v, %v", st, err)
	}
	// A mutex that Lock creates WithFair is fair.
	m := newMutex(t, c, ns, "fresh", lock.WithFair())
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if st := mutexStatus(t, ns, "fresh"); !st.Fair {
		t.Errorf("Lock WithFair created %+v, want fair", st)
	}
}
