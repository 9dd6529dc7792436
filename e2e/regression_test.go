//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/konlease/konlease/lock"
)

var errCut = errors.New("connection cut by the test")

// cutBody fails every read once the connection is cut, also a read that
// was already waiting (a watch): what arrives after the cut is discarded.
type cutBody struct {
	io.ReadCloser
	cut *atomic.Bool
}

func (b cutBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if b.cut.Load() {
		return 0, errCut
	}
	return n, err
}

// cuttable wraps a transport so that setting cut fails every request and
// every open response stream, as a network partition would.
func cuttable(cut *atomic.Bool) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if cut.Load() {
				return nil, errCut
			}
			resp, err := rt.RoundTrip(req)
			if err == nil {
				resp.Body = cutBody{ReadCloser: resp.Body, cut: cut}
			}
			return resp, err
		})
	}
}

// stallGate holds traffic through a transport (wrap) while stalled:
// requests wait before they are sent and answers before they
// are read, as through a network that holds packets and then delivers them.
type stallGate struct {
	mu   sync.Mutex
	open chan struct{} // closed when traffic flows
}

func newStallGate() *stallGate {
	g := &stallGate{open: make(chan struct{})}
	close(g.open)
	return g
}

func (g *stallGate) stall() {
	g.mu.Lock()
	g.open = make(chan struct{})
	g.mu.Unlock()
}

func (g *stallGate) release() {
	g.mu.Lock()
	close(g.open)
	g.mu.Unlock()
}

// wait returns when traffic flows, or ctx's error when it ends first (a
// client gives up on a stalled request as on a slow network).
func (g *stallGate) wait(ctx context.Context) error {
	g.mu.Lock()
	ch := g.open
	g.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

type stalledBody struct {
	io.ReadCloser
	g   *stallGate
	ctx context.Context
}

func (b stalledBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if werr := b.g.wait(b.ctx); werr != nil {
		return 0, werr
	}
	return n, err
}

func (g *stallGate) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if err := g.wait(req.Context()); err != nil {
			return nil, err
		}
		resp, err := rt.RoundTrip(req)
		if err == nil {
			if werr := g.wait(req.Context()); werr != nil {
				resp.Body.Close()
				return nil, werr
			}
			resp.Body = stalledBody{ReadCloser: resp.Body, g: g, ctx: req.Context()}
		}
		return resp, err
	})
}

// TestStalledHolderIsTold was found by the chaos checker (e2e/chaos): a
// holder whose traffic stalls (requests neither answered nor refused, as on
// a network that drops packets) right after it acquired a TTL mutex must be
// told it lost the lock (Done closes) before another holder can take the
// mutex over. The keeper opens its watch with a context without deadline
// (lock/keeper.go, lw.start before its loop, and again on the retry timer),
// so while that request hangs the keeper never reaches its deadline timer:
// Done stays open, the TTL runs out, and the other holder takes over while
// the first still believes it holds the lock.
func TestStalledHolderIsTold(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	g := newStallGate()
	cfg := env.Config()
	cfg.Wrap(g.wrap)
	const ttl = 2 * time.Second
	m := newMutex(t, newClient(t, cfg), ns, "m", lock.WithHolder("a"), lock.WithTTL(ttl))
	if err := m.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	g.stall()
	defer g.release()
	other := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("b"))
	ctx, cancel := context.WithTimeout(t.Context(), 4*ttl)
	defer cancel()
	if err := other.Lock(ctx); err != nil {
		t.Fatalf("takeover after the TTL: %v", err)
	}
	select {
	case <-m.Done():
	default:
		t.Errorf("b took the mutex over (token %d) while a's Done was still open: a was never told it lost the lock", other.Token())
	}
}

// TestLockAfterLostHoldAndUnlock: a holder cut off from the API server
// loses its TTL hold; another holder takes the mutex over and releases it;
// the first holder, reconnected, calls Unlock and then Lock on the same
// handle, which must acquire the free mutex.
func TestLockAfterLostHoldAndUnlock(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	var cut atomic.Bool
	cfg := env.Config()
	cfg.Wrap(cuttable(&cut))
	const ttl = 2 * time.Second
	m := newMutex(t, newClient(t, cfg), ns, "m", lock.WithHolder("a"), lock.WithTTL(ttl))
	if err := m.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	cut.Store(true)
	within(t, m.Done(), 2*ttl, "Done after the holder was cut off")
	if err := m.Err(); !errors.Is(err, lock.ErrLost) {
		t.Fatalf("Err after the cut: got %v, want ErrLost", err)
	}
	other := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("b"))
	ctx, cancel := context.WithTimeout(t.Context(), 4*ttl)
	defer cancel()
	if err := other.Lock(ctx); err != nil {
		t.Fatalf("takeover: %v", err)
	}
	if err := other.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock by the new holder: %v", err)
	}
	cut.Store(false)
	uerr := m.Unlock(t.Context())
	if !errors.Is(uerr, lock.ErrLost) && !errors.Is(uerr, lock.ErrNotHeld) {
		t.Errorf("Unlock of the lost hold: got %v, want ErrLost or ErrNotHeld", uerr)
	}
	ctx, cancel = context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m.Lock(ctx); err != nil {
		t.Errorf("Lock of the free mutex after the lost hold's Unlock (%v): got %v, want success", uerr, err)
	}
	if st := mutexStatus(t, ns, "m"); st.Holder != "a" || st.Token != 3 {
		t.Errorf("after Lock: holder %q token %d, want a with token 3", st.Holder, st.Token)
	}
}

// TestLockAfterForcedLossAndUnlock was found by the chaos checker: after a
// hold is lost and the holder calls Unlock (as Mutex.With always does),
// the next Lock on the same handle must decide on the Lease as it is. Unlock
// of the lost hold ends it without remembering the record it read (notHeld
// calls end(h, nil)), so the handle's memory still holds its own
// acquisition record; Lock then trusts that hint, finds "held by this
// holder" with a token it no longer claims, and answers ErrAlreadyHeld
// without a request, until the stale record's TTL runs out. Here the mutex
// was force-unlocked and is free.
func TestLockAfterForcedLossAndUnlock(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	m := newMutex(t, c, ns, "m", lock.WithHolder("a"), lock.WithTTL(30*time.Second))
	if err := m.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ForceUnlock(t.Context(), ns, "m"); err != nil {
		t.Fatal(err)
	}
	within(t, m.Done(), 5*time.Second, "Done after ForceUnlock")
	uerr := m.Unlock(t.Context())
	if !errors.Is(uerr, lock.ErrNotHeld) {
		t.Errorf("Unlock of the lost hold: got %v, want ErrNotHeld", uerr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := m.Lock(ctx); err != nil {
		t.Errorf("Lock of the force-unlocked (free) mutex after Unlock: got %v, want success", err)
	}
}

// TestFairSessionLostAtHead: a waiter at the head of a fair mutex's queue
// whose session is deleted (as a peer does when it judged the session
// expired) queues again; it must not return from Lock without a hold. The
// chaos checker found a Lock that did: a section with token 0 overlapping
// the holder's.
func TestFairSessionLostAtHead(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	createFair(t, c, ns, "m", 0)
	h := newMutex(t, c, ns, "m", lock.WithHolder("holder"))
	if err := h.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	wc := newClient(t, env.Config(), lock.WithWaiterTTL(3*time.Second))
	queued := make(chan struct{})
	var once sync.Once
	w := newMutex(t, wc, ns, "m", lock.WithHolder("w"), lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	got := lockWhenQueued(t, w, t.Context())
	<-queued
	first := entries(t, ns)
	if len(first) != 1 {
		t.Fatalf("%d entries, want the waiter's one", len(first))
	}
	session := first[0].Annotations[lock.AnnotationSession]
	if err := admin(t).CoordinationV1().Leases(ns).Delete(t.Context(), session, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The waiter notices at its next renewal, a second later, and queues
	// again under a new session.
	requeued := func(ctx context.Context) (bool, error) {
		for _, e := range entries(t, ns) {
			if e.Annotations[lock.AnnotationSession] != session {
				return true, nil
			}
		}
		select {
		case err := <-got:
			return false, fmt.Errorf("Lock returned %v while the mutex was held by another, token %d", err, w.Token())
		default:
		}
		return false, nil
	}
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 30*time.Second, true, requeued); err != nil {
		t.Fatalf("the waiter did not queue again: %v", err)
	}
	if err := h.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Fatalf("Lock after the release: %v", err)
	}
	if w.Token() != 2 {
		t.Errorf("token %d, want 2", w.Token())
	}
}
