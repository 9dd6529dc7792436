package lock

import (
	"context"
	"errors"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Unlock releases the mutex if this handle holds it, or, for a handle that
// did not lock it, if the Lease names this handle's holder identity (how
// the CLI's unlock command works). It never releases a lock that someone
// else acquired in the meantime: it then returns an error wrapping
// ErrNotHeld and changes nothing. Transient failures are retried as for
// Lock; while they last, a held lock goes on being renewed.
func (m *Mutex) Unlock(ctx context.Context) error {
	_, err := m.UnlockStatus(ctx)
	return err
}

// UnlockStatus is Unlock, and returns the mutex as it was just before the
// release. Its Phase is PhaseExpired when the holder's TTL had run out
// (ExpiresAt says when): nobody took the mutex over, but someone could
// have, so work done since then was not protected.
func (m *Mutex) UnlockStatus(ctx context.Context) (Status, error) {
	m.op.Lock()
	defer m.op.Unlock()
	m.mu.Lock()
	h := m.cur
	m.mu.Unlock()

	rt := m.newRetrier("unlocking the mutex")
	// released is the token of a release whose outcome is unknown: if the
	// Lease then shows that acquisition released, it was this one.
	var released int32 = -1
	for {
		st, err := m.unlockOnce(ctx, h, &released)
		if err == nil || !rt.wait(ctx, err) {
			return st, err
		}
	}
}

// unlockOnce makes one attempt at Unlock (re-reading after conflicts). On a
// failure that leaves hold h held, its keeper runs again until the next
// attempt.
func (m *Mutex) unlockOnce(ctx context.Context, h *hold, released *int32) (Status, error) {
	var r *record
	seen := m.c.clock.Now()
	if h != nil {
		h.cancel()
		<-h.stopped
		r = h.rec
	}
	for {
		if r == nil {
			var err error
			seen = m.c.clock.Now()
			if r, err = m.get(ctx); errors.Is(err, ErrNotFound) {
				return Status{}, m.notHeld(h, nil)
			} else if err != nil {
				return Status{}, m.unlockFailed(h, err)
			}
		}
		if *released >= 0 && ((!r.held() && r.token == *released) || (r.handoff != nil && r.token == *released+1)) {
			// An earlier attempt's release (or handoff, which only the
			// holder of the token before can write) took effect after all.
			m.finishUnlock(h, r)
			return r.status(false), nil
		}
		if !r.held() || r.holder != m.holder || (h != nil && r.token != h.token) {
			return Status{}, m.notHeld(h, r)
		}
		before := r.status(m.c.expired(r, seen))
		skip := ""
		if h != nil && h.queue != nil && h.queue.own != nil {
			skip = h.queue.own.lease.Name
		}
		l, err := m.releaseLease(ctx, h, r, skip)
		if err != nil {
			return Status{}, m.unlockFailed(h, err)
		}
		out, err := m.c.update(ctx, l)
		switch {
		case err == nil:
			nr, derr := m.decode(out)
			if derr != nil {
				nr = nil
			}
			m.finishUnlock(h, nr)
			m.log.V(1).Info("released mutex", "token", r.token, "expired", before.Phase == PhaseExpired)
			return before, nil
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			r = nil // changed since we read it: read and check again
		default:
			if !isDefinite(err) {
				*released = r.token
			}
			return Status{}, m.unlockFailed(h, m.apiError("update", err))
		}
	}
}

// finishUnlock ends hold h (if any) after a release; last is the released
// record, the next Lock's hint.
func (m *Mutex) finishUnlock(h *hold, last *record) {
	if h != nil {
		m.end(h, last)
		return
	}
	m.mu.Lock()
	m.last = last
	m.mu.Unlock()
}

// notHeld ends h (if any) and explains why Unlock did nothing; r is the
// record read, nil if the mutex does not exist.
func (m *Mutex) notHeld(h *hold, r *record) error {
	e := &NotHeldError{Namespace: m.namespace, Name: m.name, Holder: m.holder}
	if r != nil {
		e.Exists, e.Current, e.CurrentToken = true, r.holder, int64(r.token)
		e.Reacquired = r.holder == m.holder
	}
	var err error = e
	if h != nil {
		end := EndTakenOver
		switch {
		case !e.Exists:
			end = EndDeleted
		case e.Current == "":
			end = EndForceUnlocked
		}
		m.lose(h, m.lost(end, e, "this holder no longer holds it: %s", e.why()))
		m.end(h, r)
		err = errors.Join(err, h.err)
	} else {
		m.mu.Lock()
		m.last = r
		m.mu.Unlock()
	}
	return err
}

// abandonHold gives up the current hold after the release at the end of
// With failed for good: nobody is left to retry it, and a hold kept by its
// keeper would stay locked for as long as the process lives. The keeper
// stops, so a TTL Lease is no longer renewed and runs out; Done closes with
// a *LostError (EndAbandoned) that wraps cause; the next Lock may take the
// stale record again. No network call is made here.
func (m *Mutex) abandonHold(cause error) {
	m.mu.Lock()
	h := m.cur
	m.mu.Unlock()
	if h == nil || h.cancel == nil {
		return
	}
	h.cancel()
	<-h.stopped
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-h.done:
		return
	default:
	}
	reason := "its release failed, so it is no longer renewed"
	if h.rec != nil && h.rec.ttl > 0 {
		reason += "; it is free once its TTL has run out"
	}
	h.err = m.lost(EndAbandoned, cause, "%s", reason)
	close(h.done)
	m.log.Error(cause, "gave up the hold after its release failed", "token", h.token)
	m.endMetrics(h, EndAbandoned)
}

// unlockFailed keeps a hold alive after a failed release: the caller still
// holds the lock, so its keeper goes on renewing it and watching for loss.
func (m *Mutex) unlockFailed(h *hold, err error) error {
	if h != nil {
		m.startKeeper(h, time.Time{})
	}
	return err
}
