//go:build e2e

package e2e

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/konlease/konlease/lock"
)

// takeoverMargin bounds how long after a TTL runs out a waiter may need to
// notice: the API server stamps writes in whole seconds (1s), and the
// server clock is known from Date headers to about a second plus a round
// trip. A correctness bound, not a performance figure.
const takeoverMargin = 3 * time.Second

// TestRenewalKeepsLongSection: a holder that renews keeps a section that
// lasts three TTLs, and a waiter cannot take it meanwhile.
func TestRenewalKeepsLongSection(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	const ttl = time.Second
	holder := newMutex(t, c, ns, "m", lock.WithHolder("holder"), lock.WithTTL(ttl))
	if err := holder.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	waiter := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("waiter"))
	ctx, cancel := context.WithTimeout(t.Context(), 3*ttl)
	defer cancel()
	if err := waiter.Lock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatalf("waiter Lock during a renewed section of 3 TTLs: got %v, want ErrLocked", err)
	}
	select {
	case <-holder.Done():
		t.Fatalf("holder lost the lock while renewing: %v", holder.Err())
	default:
	}
	if err := holder.Unlock(t.Context()); err != nil {
		t.Fatalf("Unlock after 3 TTLs: %v", err)
	}
}

// TestTTLWithoutRenewal: a holder that does not renew (the CLI's lock
// command) is told before the TTL runs out, and a waiter takes over within
// TTL plus the margin.
func TestTTLWithoutRenewal(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	const ttl = 2 * time.Second
	holder := newMutex(t, c, ns, "m", lock.WithHolder("holder"), lock.WithTTL(ttl), lock.WithoutRenewal())
	start := time.Now()
	if err := holder.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	waiter := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("waiter"))
	if err := waiter.Lock(t.Context()); err != nil {
		t.Fatalf("waiter Lock: %v", err)
	}
	took := time.Since(start)
	select {
	case <-holder.Done():
	default:
		t.Fatalf("waiter acquired after %s but the holder was not told it lost the lock", took)
	}
	if took < ttl {
		t.Errorf("waiter took over after %s, before the TTL %s", took, ttl)
	}
	if took > ttl+takeoverMargin {
		t.Errorf("waiter took over after %s, want within %s", took, ttl+takeoverMargin)
	}
	if !errors.Is(holder.Err(), lock.ErrLost) {
		t.Errorf("holder Err: got %v, want ErrLost", holder.Err())
	}
}

// TestSkewedClocks: a client whose clock is an hour off neither steals a
// live lock nor waits for a dead one.
func TestSkewedClocks(t *testing.T) {
	t.Parallel()
	const ttl = 2 * time.Second
	for _, skew := range []time.Duration{time.Hour, -time.Hour} {
		t.Run(skew.String(), func(t *testing.T) {
			t.Parallel()
			skewed := lock.WithClock(skewedClock{offset: skew})

			t.Run("does not steal a live lock", func(t *testing.T) {
				t.Parallel()
				ns := env.Namespace(t)
				holder := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("holder"), lock.WithTTL(ttl))
				if err := holder.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				thief := newMutex(t, newClient(t, env.Config(), skewed), ns, "m", lock.WithHolder("skewed"))
				ctx, cancel := context.WithTimeout(t.Context(), 2*ttl+time.Second)
				defer cancel()
				if err := thief.Lock(ctx); !errors.Is(err, lock.ErrLocked) {
					t.Errorf("skewed waiter Lock on a renewed lock: got %v, want ErrLocked", err)
				}
			})
			t.Run("skewed holder is not stolen from", func(t *testing.T) {
				t.Parallel()
				ns := env.Namespace(t)
				holder := newMutex(t, newClient(t, env.Config(), skewed), ns, "m", lock.WithHolder("skewed"), lock.WithTTL(ttl))
				if err := holder.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				waiter := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("waiter"))
				ctx, cancel := context.WithTimeout(t.Context(), 2*ttl+time.Second)
				defer cancel()
				if err := waiter.Lock(ctx); !errors.Is(err, lock.ErrLocked) {
					t.Errorf("waiter Lock on a lock renewed by a skewed holder: got %v, want ErrLocked", err)
				}
			})
			t.Run("takes over a dead lock in time", func(t *testing.T) {
				t.Parallel()
				ns := env.Namespace(t)
				// The dead holder is skewed the other way: its timestamps
				// are two hours off the waiter's.
				dead := newMutex(t, newClient(t, env.Config(), lock.WithClock(skewedClock{offset: -skew})), ns, "m",
					lock.WithHolder("dead"), lock.WithTTL(ttl), lock.WithoutRenewal())
				start := time.Now()
				if err := dead.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				waiter := newMutex(t, newClient(t, env.Config(), skewed), ns, "m", lock.WithHolder("skewed"))
				ctx, cancel := context.WithTimeout(t.Context(), ttl+2*takeoverMargin)
				defer cancel()
				if err := waiter.Lock(ctx); err != nil {
					t.Fatalf("skewed waiter Lock on a dead lock: %v", err)
				}
				if took := time.Since(start); took > ttl+takeoverMargin {
					t.Errorf("skewed waiter took over after %s, want within %s", took, ttl+takeoverMargin)
				}
			})
			t.Run("fresh client sees an expired lock at once", func(t *testing.T) {
				t.Parallel()
				ns := env.Namespace(t)
				dead := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("dead"), lock.WithTTL(ttl), lock.WithoutRenewal())
				if err := dead.Lock(t.Context()); err != nil {
					t.Fatal(err)
				}
				// Wait until the TTL has certainly run out in the API
				// server's time (the subject of the test, not a sync).
				<-time.After(ttl + takeoverMargin)
				// A client that has never seen the mutex decides from the
				// server's timestamps alone: one attempt suffices.
				fresh := newMutex(t, newClient(t, env.Config(), skewed), ns, "m", lock.WithHolder("fresh"))
				if err := fresh.TryLock(t.Context()); err != nil {
					t.Errorf("fresh skewed client TryLock on an expired lock: %v", err)
				}
			})
		})
	}
}

// holdFirstUpdate lets the first Update through to the server but holds
// its answer until release is closed: an acquisition that happened, and
// whose confirmation arrives late.
type holdFirstUpdate struct {
	once    sync.Once
	sent    chan struct{}
	release chan struct{}
}

func (h *holdFirstUpdate) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		first := false
		if req.Method == http.MethodPut {
			h.once.Do(func() { first = true })
		}
		resp, err := rt.RoundTrip(req)
		if first {
			close(h.sent)
			<-h.release
		}
		return resp, err
	})
}

// TestLateAcquisitionIsNotTrusted was found by the chaos checker: an
// acquisition whose confirmation arrives after the holder's deadline (its
// TTL may have run out meanwhile, and another holder taken over) must not
// be reported as acquired.
func TestLateAcquisitionIsNotTrusted(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	const ttl = time.Second
	admin := newClient(t, env.Config())
	if _, _, err := admin.Create(t.Context(), ns, "m", lock.CreateOptions{TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	h := &holdFirstUpdate{sent: make(chan struct{}), release: make(chan struct{})}
	cfg := env.Config()
	cfg.Wrap(h.wrap)
	late := newMutex(t, newClient(t, cfg), ns, "m", lock.WithHolder("late"))
	got := make(chan error, 1)
	go func() { got <- late.TryLock(t.Context()) }()
	<-h.sent // the Lease now names "late"; its answer is held

	other := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("other"))
	if err := other.Lock(t.Context()); err != nil { // waits out late's TTL
		t.Fatalf("other Lock: %v", err)
	}
	close(h.release)
	err := <-got
	if err == nil {
		t.Fatalf("TryLock reported an acquisition confirmed after its TTL, while %q holds the mutex (token %d)", "other", other.Token())
	}
	if !errors.Is(err, lock.ErrLocked) {
		t.Errorf("late TryLock: got %v, want ErrLocked naming other", err)
	}
	select {
	case <-other.Done():
		t.Errorf("the late confirmation cost the rightful holder its lock: %v", other.Err())
	default:
	}
}

// TestLateAcquisitionRetried was found by the chaos checker: a waiter that
// refuses its own late acquisition then sees that acquisition on its watch
// (the Lease names it, with the refused token). That is its own record, not
// another holder's: it must take the mutex again, not answer
// ErrAlreadyHeld.
func TestLateAcquisitionRetried(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	const ttl = time.Second
	first := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("first"), lock.WithTTL(ttl))
	if err := first.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	h := &holdFirstUpdate{sent: make(chan struct{}), release: make(chan struct{})}
	cfg := env.Config()
	cfg.Wrap(h.wrap)
	waiting := make(chan struct{})
	late := newMutex(t, newClient(t, cfg), ns, "m", lock.WithHolder("late"),
		lock.WithWaitNotify(func(lock.Status) { close(waiting) }))
	got := make(chan error, 1)
	go func() { got <- late.Lock(t.Context()) }()
	<-waiting
	if err := first.Unlock(t.Context()); err != nil {
		t.Fatal(err)
	}
	<-h.sent // late's take-over reached the server; its answer is held
	// Hold it past the hold's deadline (0.9 TTL): that lateness is the
	// subject of the test.
	<-time.After(3 * ttl / 2)
	close(h.release)
	if err := <-got; err != nil {
		t.Fatalf("Lock after refusing its own late acquisition: %v", err)
	}
	if tok := late.Token(); tok < 3 {
		t.Errorf("token: got %d, want a fresh acquisition after the refused one (3 or more)", tok)
	}
}
