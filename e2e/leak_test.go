//go:build e2e

package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/connrotation"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// cuttableDialer dials the API server until cut, then refuses, as an
// unreachable server does; cut also closes the connections made so far. A
// test's client dials through its own one, so its connections are its own
// (client-go caches transports by TLS configuration, and one with a Dial
// function is never shared) and can be closed when the test ends.
type cuttableDialer struct {
	*connrotation.Dialer
	down atomic.Bool
}

func newCuttableDialer() *cuttableDialer {
	d := &cuttableDialer{}
	var nd net.Dialer
	d.Dialer = connrotation.NewDialer(func(ctx context.Context, network, addr string) (net.Conn, error) {
		if d.down.Load() {
			return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
		}
		return nd.DialContext(ctx, network, addr)
	})
	return d
}

func (d *cuttableDialer) cut()     { d.down.Store(true); d.CloseAll() }
func (d *cuttableDialer) restore() { d.down.Store(false) }

// holdable is a Mutex or a Semaphore, as the leak scenarios use them.
type holdable interface {
	lock(ctx context.Context) error
	unlock(ctx context.Context) error
	done() <-chan struct{}
}

type mutexHold struct{ m *lock.Mutex }

func (h mutexHold) lock(ctx context.Context) error   { return h.m.Lock(ctx) }
func (h mutexHold) unlock(ctx context.Context) error { return h.m.Unlock(ctx) }
func (h mutexHold) done() <-chan struct{}            { return h.m.Done() }

type semHold struct{ s *lock.Semaphore }

func (h semHold) lock(ctx context.Context) error   { return h.s.Acquire(ctx) }
func (h semHold) unlock(ctx context.Context) error { return h.s.Release(ctx) }
func (h semHold) done() <-chan struct{}            { return h.s.Done() }

// leakKind makes handles of one kind of mutex on ns/name.
type leakKind struct {
	name string
	// create makes the object, with ttl.
	create func(t *testing.T, c *lock.Client, ns, name string, ttl time.Duration)
	// handle returns a handle for holder; onWait is called when it waits.
	handle func(t *testing.T, c *lock.Client, ns, name, holder string, onWait func()) holdable
	// force takes the hold of holder away, as an operator would.
	force func(t *testing.T, c *lock.Client, ns, name, holder string)
}

func leakKinds() []leakKind {
	mutex := func(fair bool) leakKind {
		name := "mutex"
		if fair {
			name = "fair"
		}
		return leakKind{
			name: name,
			create: func(t *testing.T, c *lock.Client, ns, name string, ttl time.Duration) {
				if _, _, err := c.Create(t.Context(), ns, name, lock.CreateOptions{TTL: ttl, Fair: fair}); err != nil {
					t.Fatalf("create %s/%s: %v", ns, name, err)
				}
			},
			handle: func(t *testing.T, c *lock.Client, ns, name, holder string, onWait func()) holdable {
				m, err := c.NewMutex(ns, name, lock.WithHolder(holder), lock.WithWaitNotify(func(lock.Status) { onWait() }))
				if err != nil {
					t.Fatalf("NewMutex: %v", err)
				}
				return mutexHold{m}
			},
			force: func(t *testing.T, c *lock.Client, ns, name, _ string) {
				if _, err := c.ForceUnlock(t.Context(), ns, name); err != nil {
					t.Fatalf("ForceUnlock: %v", err)
				}
			},
		}
	}
	return []leakKind{mutex(false), mutex(true), {
		name: "semaphore",
		create: func(t *testing.T, c *lock.Client, ns, name string, ttl time.Duration) {
			if _, _, err := c.CreateSemaphore(t.Context(), ns, name, lock.SemaphoreOptions{Limit: 1, TTL: ttl}); err != nil {
				t.Fatalf("CreateSemaphore: %v", err)
			}
		},
		handle: func(t *testing.T, c *lock.Client, ns, name, holder string, onWait func()) holdable {
			s, err := c.NewSemaphore(ns, name, lock.WithHolder(holder), lock.WithSemaphoreWaitNotify(func(lock.SemaphoreStatus) { onWait() }))
			if err != nil {
				t.Fatalf("NewSemaphore: %v", err)
			}
			return semHold{s}
		},
		force: func(t *testing.T, c *lock.Client, ns, name, holder string) {
			if _, err := c.ForceReleaseSemaphore(t.Context(), ns, name, holder); err != nil {
				t.Fatalf("ForceReleaseSemaphore: %v", err)
			}
		},
	}}
}

// leakTTL is short so that a hold whose renewals cannot get through is lost
// (and its keeper ends) quickly.
const leakTTL = 3 * time.Second

// leakScenario runs operations ending in a failure on k's mutex ns/name,
// with a client dialing through d.
type leakScenario struct {
	name string
	run  func(t *testing.T, k leakKind, c *lock.Client, d *cuttableDialer, ns string)
}

func leakScenarios() []leakScenario {
	hold := func(t *testing.T, k leakKind, c *lock.Client, ns, holder string) holdable {
		t.Helper()
		h := k.handle(t, c, ns, "m", holder, func() {})
		if err := h.lock(t.Context()); err != nil {
			t.Fatalf("%s: lock: %v", holder, err)
		}
		return h
	}
	release := func(t *testing.T, h holdable) {
		t.Helper()
		if err := h.unlock(t.Context()); err != nil {
			t.Fatalf("unlock: %v", err)
		}
	}
	return []leakScenario{
		{"lock times out", func(t *testing.T, k leakKind, c *lock.Client, _ *cuttableDialer, ns string) {
			holder := hold(t, k, c, ns, "holder")
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			err := k.handle(t, c, ns, "m", "waiter", func() {}).lock(ctx)
			if !errors.Is(err, lock.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Lock past its deadline: got %v, want ErrLocked and DeadlineExceeded", err)
			}
			release(t, holder)
		}},
		{"lock cancelled while waiting", func(t *testing.T, k leakKind, c *lock.Client, _ *cuttableDialer, ns string) {
			holder := hold(t, k, c, ns, "holder")
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			err := k.handle(t, c, ns, "m", "waiter", cancel).lock(ctx)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled Lock: got %v, want Canceled", err)
			}
			release(t, holder)
		}},
		{"hold lost to a forced release", func(t *testing.T, k leakKind, c *lock.Client, _ *cuttableDialer, ns string) {
			h := hold(t, k, c, ns, "holder")
			k.force(t, c, ns, "m", "holder")
			within(t, h.done(), 10*time.Second, "Done after the forced release")
			if err := h.unlock(t.Context()); !errors.Is(err, lock.ErrNotHeld) {
				t.Fatalf("Unlock of a lost hold: got %v, want ErrNotHeld", err)
			}
		}},
		{"unlock fails, then succeeds", func(t *testing.T, k leakKind, c *lock.Client, d *cuttableDialer, ns string) {
			h := hold(t, k, c, ns, "holder")
			d.cut()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			if err := h.unlock(ctx); err == nil {
				t.Fatal("Unlock with the API server unreachable succeeded")
			}
			d.restore()
			release(t, h)
		}},
		{"unlock fails, hold runs out", func(t *testing.T, k leakKind, c *lock.Client, d *cuttableDialer, ns string) {
			h := hold(t, k, c, ns, "holder")
			d.cut()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			defer cancel()
			if err := h.unlock(ctx); err == nil {
				t.Fatal("Unlock with the API server unreachable succeeded")
			}
			// The keeper goes on renewing after a failed Unlock; with the
			// server still unreachable it must give up by the TTL and end.
			within(t, h.done(), 2*leakTTL, "Done while renewals cannot get through")
			d.restore()
		}},
	}
}

// TestNoGoroutineLeft: after each way a Lock or a hold can end in failure,
// for every kind of mutex, no goroutine of the operation is left once its
// client is closed. It is not parallel, so that goroutines of other tests
// do not come and go during the check.
func TestNoGoroutineLeft(t *testing.T) {
	for _, k := range leakKinds() {
		for _, sc := range leakScenarios() {
			t.Run(fmt.Sprintf("%s/%s", k.name, sc.name), func(t *testing.T) {
				ns := env.Namespace(t)
				opts := append(harness.LeakOptions(), goleak.IgnoreCurrent())
				func() {
					d := newCuttableDialer()
					defer d.CloseAll()
					cfg := rest.CopyConfig(env.Config())
					cfg.Dial = d.DialContext
					c := newClient(t, cfg)
					defer func() {
						ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), 10*time.Second)
						defer cancel()
						if err := c.Close(ctx); err != nil {
							t.Errorf("Close: %v", err)
						}
					}()
					k.create(t, c, ns, "m", leakTTL)
					sc.run(t, k, c, d, ns)
				}()
				goleak.VerifyNone(t, opts...)
			})
		}
	}
}
