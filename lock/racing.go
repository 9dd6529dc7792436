package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// race is the acquire loop of a mutex without a queue: every waiter
// watches the Lease, and whoever's conditional write lands first after a
// release has it. hint is the record this handle last wrote or read (nil:
// none), lost the token of a hold of this handle that was lost (-1: none).
func (m *Mutex) race(ctx context.Context, a *acquirer, hint *record, lost int32) error {
	wait := a.wait
	// The hint is the record this handle last wrote or read. It saves the
	// read when nobody else used the mutex meanwhile: a write based on a
	// stale hint just conflicts. But only a take may rest on it; refusing
	// or waiting needs the Lease as it is now.
	r, fromHint := hint, hint != nil
	if hint != nil && !m.hintSeen.IsZero() {
		a.obsRV, a.obsAt = hint.lease.ResourceVersion, m.hintSeen
	}
	m.hintSeen = time.Time{}
	// ours: a record that names this holder through an acquisition this
	// handle no longer claims (a lost hold, or one refused as late). It is
	// this handle's own stale record, not another holder's, so it may be
	// taken again, with the same conditional write as any take.
	m.refused = -1
	ours := func(r *record) bool {
		return r.holder == m.holder && (r.token == lost || r.token == m.refused)
	}
	// Every failed step ends here: a transient failure is retried from a
	// fresh read after a backoff; anything else, or running out of time,
	// ends the call.
	retry := func(err error) (again bool, final error) {
		if a.retry.wait(ctx, err) {
			return true, nil
		}
		return false, a.fail(ctx, err)
	}
	for {
		if fromHint && r != nil && r.held() && !ours(r) {
			r, fromHint = nil, false
		}
		if r == nil {
			var err error
			if r, err = a.read(ctx); errors.Is(err, ErrNotFound) && m.slotOf != "" {
				return err // a semaphore's slots are made with it, never by a take
			} else if errors.Is(err, ErrNotFound) {
				a.unknown = nil // whatever that write did, it is gone
				done, next, err := m.create(ctx, a)
				if done {
					return nil
				}
				if err != nil {
					if again, final := retry(err); !again {
						return final
					}
				}
				r = next
				continue
			} else if err != nil {
				if again, final := retry(err); !again {
					return final
				}
				r = nil
				continue
			}
			a.retry.reset()
		}
		if u := a.unknown; u != nil {
			a.unknown = nil
			if r.holder == m.holder && r.token == u.token {
				// The write whose outcome was unknown did take effect.
				m.log.V(1).Info("acquire succeeded despite an error", "error", u.err.Error())
				if m.startHold(ctx, r, *u) {
					return nil
				}
				r, fromHint = nil, false // refused as late: ours() may retake it
				continue
			}
		}
		if m.requireTTL && r.ttl != m.createTTL {
			return fmt.Errorf("mutex %s/%s has TTL %s, not %s as required; nothing changed: %w",
				m.namespace, m.name, ttlString(r.ttl), ttlString(m.createTTL), ErrTTLConflict)
		}
		if r.fair && m.slotOf == "" {
			err := m.acquireFair(ctx, a, r, ours)
			if !errors.Is(err, errNotFair) {
				return err
			}
			r, fromHint = nil, false // no longer fair, or gone: decide again
			continue
		}
		seen := a.observe(r)
		switch {
		case !r.held() || ours(r) || m.c.expired(r, seen):
			var prev string
			if r.held() && !ours(r) {
				prev = r.holder
			}
			done, next, err := m.take(ctx, a, r, prev)
			if done {
				return nil
			}
			r, fromHint = next, false
			if err != nil {
				if again, final := retry(err); !again {
					return final
				}
				r = nil
				continue
			}
			a.retry.reset()
			if r == nil && a.watching() {
				// Conflict: the write that beat ours will arrive on the watch.
				if r, err = a.next(ctx, nil); err != nil {
					if again, final := retry(err); !again {
						return final
					}
					r = nil
				}
			}
		case r.holder == m.holder:
			return fmt.Errorf("mutex %s/%s: holder %q holds it (token %d) through another handle or process: %w",
				m.namespace, m.name, m.holder, r.token, ErrAlreadyHeld)
		case !wait:
			return r.lockedError(nil)
		default:
			a.notify(r)
			next, err := a.next(ctx, r)
			if err != nil {
				if again, final := retry(err); !again {
					return final
				}
				next = nil
			}
			r = next
		}
	}
}

// take tries to acquire the mutex from record r with one conditional
// write; prev is the holder whose expired hold it takes over, if any. done:
// the mutex is ours. next: a newer record to decide on, or nil when it must
// be read again.
func (m *Mutex) take(ctx context.Context, a *acquirer, r *record, prev string) (done bool, next *record, err error) {
	l, token, err := r.acquire(m.holder, m.c.serverNow())
	if err != nil {
		return false, nil, err
	}
	sent := m.c.clock.Now()
	out, err := m.c.update(ctx, l)
	switch {
	case err == nil:
		nr, err := m.decode(out)
		if err != nil {
			return false, nil, err
		}
		return m.startHold(ctx, nr, attempt{token: token, sent: sent, prev: prev}), nil, nil
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		m.log.V(2).Info("acquire lost a race", "reason", apierrors.ReasonForError(err))
		return false, nil, nil
	case isDefinite(err):
		return false, nil, m.apiError("update", err)
	default:
		return m.resolve(ctx, a, attempt{token: token, sent: sent, prev: prev, err: err})
	}
}

// create creates the mutex already acquired by this holder (token 1).
func (m *Mutex) create(ctx context.Context, a *acquirer) (done bool, next *record, err error) {
	l := newLease(m.namespace, m.name, m.createTTL, m.createFair)
	now := m.c.serverNow()
	l.Spec = leaseSpec(m.holder, m.createTTL, now, now, 1)
	sent := m.c.clock.Now()
	out, err := m.c.create(ctx, l)
	switch {
	case err == nil:
		r, err := m.decode(out)
		if err != nil {
			return false, nil, err
		}
		m.log.V(1).Info("created mutex", "ttl", m.createTTL)
		return m.startHold(ctx, r, attempt{token: 1, sent: sent}), nil, nil
	case apierrors.IsAlreadyExists(err):
		return false, nil, nil
	case apierrors.IsForbidden(err):
		return false, nil, fmt.Errorf("mutex %s/%s does not exist and this identity may not create it (grant the \"create\" verb on leases, or have it created beforehand): %w",
			m.namespace, m.name, m.apiError("create", err))
	case isDefinite(err):
		return false, nil, m.apiError("create", err)
	default:
		return m.resolve(ctx, a, attempt{token: 1, sent: sent, err: err})
	}
}
