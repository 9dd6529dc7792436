package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// isDefinite reports whether a failed write certainly did not happen: the
// API server answered with a status that rejects the request. Anything else
// (a timeout, a broken connection, a cancelled context) leaves the outcome
// unknown.
func isDefinite(err error) bool {
	var s apierrors.APIStatus
	if !errors.As(err, &s) {
		return false
	}
	switch {
	case apierrors.IsTimeout(err), apierrors.IsServerTimeout(err), apierrors.IsInternalError(err),
		apierrors.IsServiceUnavailable(err), apierrors.IsUnexpectedServerError(err):
		return false
	}
	return true
}

// attempt is one acquisition: the write that made it (or, for a handoff,
// the session write that it rests on) and what it needs to start a hold.
// With err set it is a write whose outcome is unknown.
type attempt struct {
	token int32
	// sent is when the write was sent, local clock.
	sent time.Time
	// prev is the holder whose expired hold this takes over, if any.
	prev string
	// window, for an unconfirmed handoff, is how long from sent the hold
	// may be trusted before it is confirmed (zero: not a handoff).
	window time.Duration
	// err is how the write failed.
	err error
}

// resolve settles a write whose outcome is unknown by reading the Lease
// back. If the read fails too, the write stays pending (a.unknown): the
// acquire loop settles it with its next successful read, or, if it gives
// up first, abandon releases what the write may have taken. If the write
// took effect and the caller has given up, the lock is released again, so
// that a cancelled Lock never leaves a lock behind.
func (m *Mutex) resolve(ctx context.Context, a *acquirer, p attempt) (bool, *record, error) {
	cctx, cancel := a.cleanupCtx(ctx)
	defer cancel()
	r, err := m.get(cctx)
	if errors.Is(err, ErrNotFound) {
		return false, nil, m.giveUp(ctx, p.err)
	}
	if err != nil {
		a.unknown = &p
		return false, nil, errors.Join(p.err, err)
	}
	if r.holder != m.holder || r.token != p.token {
		return false, r, m.giveUp(ctx, p.err)
	}
	if ctx.Err() == nil {
		m.log.V(1).Info("acquire succeeded despite an error", "error", p.err.Error())
		return m.startHold(ctx, r, p), nil, nil
	}
	a.unknown = &p
	if err := m.abandon(ctx, a); err != nil {
		return false, nil, err
	}
	return false, nil, ctx.Err()
}

// abandon runs when Lock gives up while an acquiring write of its own
// (a.unknown) may have taken effect unseen: it reads the Lease back,
// retrying transient failures within the cleanup timeout, and releases the
// mutex if that write took it, so that a failed Lock leaves nothing
// locked. Every write is conditional: it never releases another holder's
// lock.
func (m *Mutex) abandon(ctx context.Context, a *acquirer) error {
	p := a.unknown
	if p == nil {
		return nil
	}
	a.unknown = nil
	cctx, cancel := a.cleanupCtx(ctx)
	defer cancel()
	rt := newRetrier(m.c.clock, m.log, m.cleanupTimeout, "releasing an acquisition made while giving up")
	for {
		r, err := m.get(cctx)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err == nil {
			if r.holder != m.holder || r.token != p.token {
				return nil // that write did not take, or someone came after it
			}
			_, err = m.c.update(cctx, r.release(m.c.serverNow()))
			if err == nil {
				m.log.V(1).Info("released a lock acquired while giving up", "token", p.token)
				return nil
			}
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue // changed since it was read: look again
			}
		}
		if rt.wait(cctx, err) {
			continue
		}
		return fmt.Errorf("mutex %s/%s: acquiring failed (%w), and settling whether it took effect failed too, so holder %q may hold it until it is unlocked or its TTL runs out: %w",
			m.namespace, m.name, p.err, m.holder, err)
	}
}

// giveUp returns werr if the caller's context has ended (the loop must
// stop), nil otherwise (the loop reads and decides again).
func (m *Mutex) giveUp(ctx context.Context, werr error) error {
	if ctx.Err() != nil {
		return werr
	}
	m.log.V(1).Info("write failed, retrying", "error", werr.Error())
	return nil
}
