//go:build e2e

package e2e

// Fair waiters that give up while the API server does not answer them:
// they return within their cleanup timeout, and what they could not delete
// is deleted once the server answers again, so the queue moves on.

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/lock"
)

// faultyConfig is cfg with a switch: while the returned function says so
// for a request, it gets no answer until its own context ends, as from an
// API server that has stopped responding.
func faultyConfig(cfg *rest.Config, hang func(*http.Request) bool) *rest.Config {
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if hang(req) {
				<-req.Context().Done()
				return nil, req.Context().Err()
			}
			return rt.RoundTrip(req)
		})
	})
	return cfg
}

// cleanupSlack is how much longer than its cleanup timeout a waiter may
// take to return once its context ends: scheduling, not requests.
const cleanupSlack = 2 * time.Second

// TestFairLeaveWhileUnreachable: a waiter whose Lock ends while its deletes
// get no answer returns within its cleanup timeout and leaves its entry
// behind. Its process's session stays live (the process waits for another
// mutex too), so the entry would stay live and the waiter behind it would
// wait for it for as long: the session's keeper deletes it once deletes
// are answered again, and the next Unlock reaches that waiter.
func TestFairLeaveWhileUnreachable(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	createFair(t, c, ns, "other", 0)
	h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	ho := newMutex(t, c, ns, "other", lock.WithHolder("other-holder"))
	if err := ho.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}

	var hangDeletes atomic.Bool
	ca := newClient(t, faultyConfig(env.Config(), func(req *http.Request) bool {
		return hangDeletes.Load() && req.Method == http.MethodDelete
	}), lock.WithWaiterTTL(2*lock.MinWaiterTTL))

	// The process of waiter a keeps its session in use: it waits for
	// "other" until the end of the test.
	busyCtx, stopBusy := context.WithCancel(t.Context())
	busyQueued := make(chan struct{})
	busy := newMutex(t, ca, ns, "other", lock.WithHolder("a-busy"), lock.WithWaitNotify(closeOnce(busyQueued)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		_ = busy.Lock(busyCtx)
	}()
	defer wg.Wait()
	defer stopBusy()
	within(t, busyQueued, 30*time.Second, "a's process queued for another mutex")

	const cleanup = 3 * time.Second
	aQueued, bQueued := make(chan struct{}), make(chan struct{})
	a := newMutex(t, ca, ns, "m", lock.WithHolder("a"), lock.WithCleanupTimeout(cleanup), lock.WithWaitNotify(closeOnce(aQueued)))
	b := newMutex(t, c, ns, "m", lock.WithHolder("b"), lock.WithWaitNotify(closeOnce(bQueued)))
	actx, giveUp := context.WithCancel(t.Context())
	defer giveUp()
	aDone := lockWhenQueued(t, a, actx)
	within(t, aQueued, 30*time.Second, "a queued")
	bDone := lockWhenQueued(t, b, t.Context())
	within(t, bQueued, 30*time.Second, "b queued")

	hangDeletes.Store(true)
	gaveUp := time.Now()
	giveUp()
	err := <-aDone
	took := time.Since(gaveUp)
	if !errors.Is(err, lock.ErrLocked) || !errors.Is(err, context.Canceled) {
		t.Fatalf("a's Lock: %v, want ErrLocked wrapping context.Canceled", err)
	}
	if took > cleanup+cleanupSlack {
		t.Errorf("a's Lock returned %s after its context ended, want within its cleanup timeout %s (+%s)", took, cleanup, cleanupSlack)
	}
	aEntry := ""
	for _, e := range entries(t, ns) {
		if e.Spec.HolderIdentity != nil && *e.Spec.HolderIdentity == "a" {
			aEntry = e.Name
		}
	}
	if aEntry == "" {
		t.Fatal("a's entry is gone although its delete got no answer: the test did not test anything")
	}

	hangDeletes.Store(false)
	waitDeleted(t, ns, aEntry, 30*time.Second)

	if err := h.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-bDone:
		if err != nil {
			t.Fatalf("b's Lock: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("b did not get the mutex within 30s of the Unlock")
	}
	if err := b.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	stopBusy()
	wg.Wait()
	if err := ho.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestFairSemaphoreGiveUpBounded: a fair semaphore's waiter whose context
// ends while the API server answers nothing makes several requests to
// leave (its entry, then slots handed to it), and returns within one
// cleanup timeout for all of them, not one each.
func TestFairSemaphoreGiveUpBounded(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createSemaphore(t, c, ns, "s", lock.SemaphoreOptions{Limit: 1, Fair: true})
	h := newSemaphore(t, c, ns, "s", lock.WithHolder("holder"))
	if err := h.Acquire(t.Context()); err != nil {
		t.Fatal(err)
	}
	var hang atomic.Bool
	ca := newClient(t, faultyConfig(env.Config(), func(*http.Request) bool { return hang.Load() }))
	t.Cleanup(func() { hang.Store(false) })
	const cleanup = 3 * time.Second
	queued := make(chan struct{})
	var once sync.Once
	a := newSemaphore(t, ca, ns, "s", lock.WithHolder("a"), lock.WithCleanupTimeout(cleanup),
		lock.WithSemaphoreWaitNotify(func(lock.SemaphoreStatus) { once.Do(func() { close(queued) }) }))
	ctx, giveUp := context.WithCancel(t.Context())
	defer giveUp()
	done := make(chan error, 1)
	go func() { done <- a.Acquire(ctx) }()
	within(t, queued, 30*time.Second, "a queued")

	hang.Store(true)
	gaveUp := time.Now()
	giveUp()
	err := <-done
	took := time.Since(gaveUp)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("a's Acquire: %v, want it to wrap context.Canceled", err)
	}
	if took < cleanup {
		t.Fatalf("a's Acquire returned %s after its context ended, before its cleanup timeout %s: its requests were not left hanging, so the test tests nothing", took, cleanup)
	}
	if took > cleanup+cleanupSlack {
		t.Errorf("a's Acquire returned %s after its context ended, want within its cleanup timeout %s (+%s) for all its requests", took, cleanup, cleanupSlack)
	}
	hang.Store(false)
	if err := h.Release(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// waitDeleted fails the test unless the Lease ns/name is gone within d. It
// watches from a list, so a deletion between the two is not missed.
func waitDeleted(t *testing.T, ns, name string, d time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), d)
	defer cancel()
	leases := admin(t).CoordinationV1().Leases(ns)
	opts := metav1.ListOptions{FieldSelector: "metadata.name=" + name}
	list, err := leases.List(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(list.Items) == 0 {
		return
	}
	opts.ResourceVersion = list.ResourceVersion
	w, err := leases.Watch(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for ev := range w.ResultChan() {
		if ev.Type == watch.Deleted {
			return
		}
	}
	t.Fatalf("lease %s/%s is still there after %s", ns, name, d)
}

// closeOnce is a WithWaitNotify function that closes ch the first time.
func closeOnce(ch chan struct{}) func(lock.Status) {
	var once sync.Once
	return func(lock.Status) { once.Do(func() { close(ch) }) }
}
