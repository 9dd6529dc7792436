//go:build e2e

package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/konlease/konlease/lock"
)

// withKind runs With on a mutex, or on a semaphore of limit 1, named "l"
// in ns through client c, and reports whether that lock is free, read
// through direct.
type withKind struct {
	name string
	with func(t *testing.T, c, direct *lock.Client, ns string, fn func(context.Context) error, opts ...lock.Option) (held interface{ Err() error }, err error)
	free func(ctx context.Context, direct *lock.Client, ns string) (bool, error)
}

func withKinds() []withKind {
	return []withKind{
		{
			name: "mutex",
			with: func(t *testing.T, c, _ *lock.Client, ns string, fn func(context.Context) error, opts ...lock.Option) (interface{ Err() error }, error) {
				m := newMutex(t, c, ns, "l", opts...)
				return m, m.With(t.Context(), fn)
			},
			free: func(ctx context.Context, direct *lock.Client, ns string) (bool, error) {
				st, err := direct.Get(ctx, ns, "l")
				return err == nil && st.Holder == "", nil
			},
		},
		{
			name: "semaphore",
			with: func(t *testing.T, c, direct *lock.Client, ns string, fn func(context.Context) error, opts ...lock.Option) (interface{ Err() error }, error) {
				if _, _, err := direct.CreateSemaphore(t.Context(), ns, "l", lock.SemaphoreOptions{Limit: 1, TTL: 3 * time.Second}); err != nil {
					t.Fatal(err)
				}
				s, err := c.NewSemaphore(ns, "l", opts...)
				if err != nil {
					t.Fatal(err)
				}
				return s, s.With(t.Context(), fn)
			},
			free: func(ctx context.Context, direct *lock.Client, ns string) (bool, error) {
				st, err := direct.GetSemaphore(ctx, ns, "l")
				return err == nil && len(st.Holders) == 0, nil
			},
		},
	}
}

// TestWithReleasesAfterShortOutage: when the API server is away for a
// second just as fn returns, With's release retries and the lock ends up
// free. Found by the HA chaos run: the release's first write failed with
// EPIPE (written on a connection that a balancer had just closed), which
// was not counted as transient, so With gave up at once and the hold was
// kept, renewed for as long as the process lived.
func TestWithReleasesAfterShortOutage(t *testing.T) {
	t.Parallel()
	for _, k := range withKinds() {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			direct := newClient(t, env.Config())
			p := newProxy(t)
			c := newClient(t, p.Config(env.Config()))
			outage := func(context.Context) error {
				p.Refuse()
				time.AfterFunc(time.Second, func() { _ = p.Accept() }) // the outage's end, not a synchronisation
				return nil
			}
			begin := time.Now()
			_, err := k.with(t, c, direct, ns, outage, lock.WithTTL(3*time.Second))
			if err != nil {
				t.Errorf("With: %v, want nil: the release should have outlasted a 1s outage", err)
			}
			took := time.Since(begin)
			free := func(ctx context.Context) (bool, error) { return k.free(ctx, direct, ns) }
			// Polled for less than the TTL: a free lock must come from the
			// release, not from the hold running out.
			if perr := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 2*time.Second, true, free); perr != nil {
				t.Errorf("With returned after %s (%v), and the %s is still held 2s later", took.Round(time.Millisecond), err, k.name)
			}
		})
	}
}

// TestWithAbandonsAfterFailedRelease: when With's release fails for the
// whole retry timeout, the error says so and the hold is given up, not
// kept renewed by a keeper that nobody will stop: Done closes with
// EndAbandoned, and once the TTL has run out another client takes the
// lock over.
func TestWithAbandonsAfterFailedRelease(t *testing.T) {
	t.Parallel()
	for _, k := range withKinds() {
		t.Run(k.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			direct := newClient(t, env.Config())
			p := newProxy(t)
			c := newClient(t, p.Config(env.Config()))
			away := func(context.Context) error {
				p.Refuse()
				return nil
			}
			h, err := k.with(t, c, direct, ns, away, lock.WithTTL(3*time.Second),
				lock.WithRetryTimeout(500*time.Millisecond), lock.WithCleanupTimeout(500*time.Millisecond))
			if err == nil {
				t.Fatal("With: nil error, though its release could not reach the API server")
			}
			var le *lock.LostError
			if herr := h.Err(); !errors.As(herr, &le) || le.End != lock.EndAbandoned {
				t.Fatalf("after With: Err() = %v, want a *LostError with End %q", herr, lock.EndAbandoned)
			}
			// Back online: the abandoned hold must not be renewed, so the
			// lock is free (or taken over) within the TTL.
			if err := p.Accept(); err != nil {
				t.Fatal(err)
			}
			free := func(ctx context.Context) (bool, error) {
				if k.name == "mutex" {
					st, err := direct.Get(ctx, ns, "l")
					return err == nil && st.Phase == lock.PhaseExpired, nil
				}
				st, err := direct.GetSemaphore(ctx, ns, "l")
				return err == nil && len(st.Holders) == 1 && st.Holders[0].Phase == lock.PhaseExpired, nil
			}
			if perr := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 10*time.Second, true, free); perr != nil {
				t.Errorf("the abandoned %s did not run out within 10s of the API server's return: it is still renewed", k.name)
			}
		})
	}
}
