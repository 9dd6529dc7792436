package lock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/ttl"
)

// startKeeper starts the goroutine that looks after hold h: it renews a TTL
// mutex, closes h.done when the hold can no longer be trusted, and watches
// the Lease so that a force-unlock or takeover is noticed at once. sent is
// when the write that acquired (or last renewed) the mutex was sent; zero
// means renew at once.
func (m *Mutex) startKeeper(h *hold, sent time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	h.stopped = make(chan struct{})
	var wg sync.WaitGroup
	if h.queue != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m.keepQueue(ctx, h.queue)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.keep(ctx, h, sent)
		// The hold ended (lost, or Unlock): the queue side stops too, also
		// when nobody ever calls Unlock after a loss.
		cancel()
	}()
	go func() {
		wg.Wait()
		close(h.stopped)
	}()
}

// keepQueue looks after the queue side of a fair hold: it deletes the entry
// through which the holder waited (even when the hold ends at once: an
// entry left behind would be handed the mutex again), gives back its
// session, and follows the queue for Unlock until ctx ends.
func (m *Mutex) keepQueue(ctx context.Context, q *queueHold) {
	if !q.cleaned && q.own != nil {
		// The deletion outlives the hold if need be (the Client's Close
		// waits for it): Unlock need not wait for it, since a releaser
		// passes over entries older than its own.
		q.cleaned = true
		own, sess := q.own, q.sess
		m.c.background.Add(1)
		go func() {
			defer m.c.background.Done()
			m.deleteEntry(context.WithoutCancel(ctx), own, sess)
		}()
	}
	q.view.start()
	<-ctx.Done()
	q.view.stop()
}

// cleanEntry deletes, once, the entry through which a fair hold waited,
// whatever ctx says (bounded by the cleanup timeout), and gives back its
// session.
func (m *Mutex) cleanEntry(ctx context.Context, q *queueHold) {
	if q.cleaned || q.own == nil {
		return
	}
	q.cleaned = true
	m.deleteEntry(ctx, q.own, q.sess)
}

// deleteEntry deletes own, retrying transient failures within the cleanup
// timeout whatever ctx says, and gives back its session.
func (m *Mutex) deleteEntry(ctx context.Context, own *entry, sess *ownSession) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanupTimeout)
	defer cancel()
	rt := m.newRetrier("deleting the queue entry of an acquisition")
	for {
		err := m.c.deleteExact(cctx, own.lease)
		if err == nil || !rt.wait(cctx, err) {
			if err != nil {
				m.log.Info("deleting this holder's queue entry failed; it is deleted at the session's next renewal", "entry", own.lease.Name, "error", err.Error())
				sess.orphan(own.lease)
			}
			break
		}
	}
	sess.release()
}

func (m *Mutex) keep(ctx context.Context, h *hold, sent time.Time) {
	c := m.c
	clk := c.clock
	d := h.rec.ttl
	renewing := d > 0 && m.renew
	// An unconfirmed handoff is confirmed like a renewal, a third into its
	// window, whatever the TTL: until then the hold is trusted only for the
	// window. A short hold unlocks before that, and its Unlock, a write
	// conditional on the handoff, confirms nothing it does not need to.
	confirming := h.window > 0

	// Watching (or polling) the Lease happens on a goroutine of its own: a
	// watch or read that hangs on a stalled network must never keep this
	// loop from its deadline, which is what makes Done close in time.
	lost := make(chan error, 1)
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan struct{})
	go func() {
		defer close(followed)
		m.follow(fctx, h.token, h.rec.lease.ResourceVersion, lost)
	}()
	defer func() {
		stopFollow()
		<-followed
	}()

	var deadline, renewal clock.Timer
	ch := func(t clock.Timer) <-chan time.Time {
		if t == nil {
			return nil
		}
		return t.C()
	}
	defer func() {
		for _, t := range []clock.Timer{deadline, renewal} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	if !h.deadline.IsZero() {
		deadline = clk.NewTimer(max(h.deadline.Sub(clk.Now()), 0))
	}
	if renewing || confirming {
		span := d
		if confirming {
			span = h.window
		}
		next := time.Duration(0)
		if !sent.IsZero() {
			next = sent.Add(ttl.RenewInterval(span)).Sub(clk.Now())
		}
		renewal = clk.NewTimer(max(next, 0))
	}

	for {
		select {
		case <-ctx.Done():
			return

		case err := <-lost:
			m.lose(h, err)
			return

		case <-ch(deadline):
			if confirming {
				m.lose(h, m.lost(EndInvalid, nil, "the handoff to it could not be confirmed in time, so the next waiter may take it over"))
				return
			}
			m.lose(h, m.lost(EndTTL, nil, "no renewal succeeded in time, so once its TTL (%s) runs out another holder may take it over", ttl.Format(d)))
			return

		case <-ch(renewal):
			// renewOnce is bounded by the hold's deadline.
			lostErr, err := m.renewOnce(ctx, h)
			if lostErr != nil {
				m.lose(h, lostErr)
				return
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// Try again soon: a few times before the deadline.
				c.log.V(1).Info("renewal failed, retrying", "namespace", m.namespace, "mutex", m.name, "error", err.Error())
				span := d
				if confirming {
					span = h.window
				}
				renewal = clk.NewTimer(ttl.HolderMargin(span) / 2)
				continue
			}
			confirming = false
			if deadline != nil {
				deadline.Stop()
				deadline = nil
			}
			if !h.deadline.IsZero() {
				deadline = clk.NewTimer(max(h.deadline.Sub(clk.Now()), 0))
			}
			renewal = nil
			if renewing {
				renewal = clk.NewTimer(ttl.RenewInterval(d))
			}
		}
	}
}

// follow watches the Lease of a hold (token) from resourceVersion rv, or
// polls it when watching is forbidden, until ctx ends or the Lease shows
// the hold is gone: then it sends why on lost and returns.
func (m *Mutex) follow(ctx context.Context, token int32, rv string, lost chan<- error) {
	c := m.c
	clk := c.clock
	lw := newLeaseWatch(c, m.namespace, m.name)
	defer lw.stop()
	var poll, retry clock.Timer
	ch := func(t clock.Timer) <-chan time.Time {
		if t == nil {
			return nil
		}
		return t.C()
	}
	rearm := func() {
		for _, t := range []clock.Timer{poll, retry} {
			if t != nil {
				t.Stop()
			}
		}
		poll, retry = nil, nil
		switch {
		case lw.forbidden:
			poll = clk.NewTimer(jitter(c.pollInterval))
		case lw.w == nil:
			retry = clk.NewTimer(lw.retryAfter())
		}
	}
	defer func() {
		for _, t := range []clock.Timer{poll, retry} {
			if t != nil {
				t.Stop()
			}
		}
	}()
	report := func(r *record, err error) bool {
		if why := m.check(token, r, err); why != nil {
			lost <- why
			return true
		}
		return false
	}
	if err := lw.start(ctx, rv); err != nil {
		return
	}
	rearm()
	for {
		select {
		case <-ctx.Done():
			return

		case <-ch(poll):
			if report(m.get(ctx)) {
				return
			}
			rearm()

		case <-ch(retry):
			if err := lw.start(ctx, ""); err != nil {
				return
			}
			if lw.w != nil {
				lw.failed = 0
			}
			rearm()

		case ev, ok := <-lw.events():
			res, again := lw.handle(ev, ok)
			switch {
			case again:
			case res.deleted:
				lost <- m.lost(EndDeleted, nil, "it was deleted")
				return
			case res.lease != nil:
				if report(m.decode(res.lease)) {
					return
				}
			default: // the watch lost its place: read once, then watch anew.
				r, err := m.get(ctx)
				if report(r, err) {
					return
				}
				if r != nil {
					lw.rv = r.lease.ResourceVersion
				}
			}
			if lw.w == nil && lw.failed == 0 && !lw.forbidden {
				if err := lw.start(ctx, ""); err != nil {
					return
				}
			}
			rearm()
		}
	}
}

// check returns why the hold with token is lost according to record r
// (read with error err), or nil if it is still ours or the read failed for
// another reason.
func (m *Mutex) check(token int32, r *record, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return m.lost(EndDeleted, nil, "it was deleted")
	case errors.Is(err, ErrNotMutex):
		return m.lost(EndInvalid, err, "its Lease is no longer a valid mutex (%s)", reasonOf(err))
	case err != nil:
		return nil
	case !r.held():
		return m.lost(EndForceUnlocked, nil, "it was force-unlocked")
	case r.holder != m.holder || r.token != token:
		return m.lost(EndTakenOver, nil, "it was taken over by %q (token %d)", r.holder, r.token)
	}
	return nil
}

// lost is the *LostError of this mutex, ended as end; reason is a format
// for the clause that says how.
func (m *Mutex) lost(end HoldEnd, cause error, reason string, args ...any) error {
	return &LostError{Namespace: m.namespace, Name: m.name, Reason: fmt.Sprintf(reason, args...), End: end, cause: cause}
}

// reasonOf is the Reason of a *NotMutexError, else the error's text.
func reasonOf(err error) string {
	var nm *NotMutexError
	if errors.As(err, &nm) {
		return nm.Reason
	}
	return err.Error()
}

// renewOnce renews hold h with one conditional write, bounded by the hold's
// deadline: a renewal that answers after it proves nothing. lost is non-nil
// when the Lease shows the hold is gone; err when this attempt failed but
// the hold may still be ours.
func (m *Mutex) renewOnce(ctx context.Context, h *hold) (lost, err error) {
	c := m.c
	d := h.rec.ttl
	rctx, cancel := context.WithTimeout(ctx, max(h.deadline.Sub(c.clock.Now()), 0))
	defer cancel()
	for {
		sent := c.clock.Now()
		out, err := c.update(rctx, h.rec.renew(c.serverNow()))
		c.metrics.Renewal(m.namespace, m.queueName(), err == nil)
		switch {
		case err == nil:
			r, derr := m.decode(out)
			if derr != nil {
				return m.lost(EndInvalid, derr, "its Lease is no longer a valid mutex (%s)", reasonOf(derr)), nil
			}
			h.rec = r
			h.window = 0 // a handoff is confirmed by this write
			h.deadline = time.Time{}
			if d > 0 {
				h.deadline = ttl.HolderDeadline(sent, d)
			}
			c.log.V(2).Info("renewed mutex", "namespace", m.namespace, "mutex", m.name, "token", h.token)
			return nil, nil
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			// Someone wrote the Lease: read it and see whether it is still
			// ours (a label edited by hand) or not (taken over).
			r, gerr := m.get(rctx)
			if lost := m.check(h.token, r, gerr); lost != nil {
				return lost, nil
			}
			if gerr != nil {
				return nil, gerr
			}
			h.rec = r
		default:
			return nil, m.apiError("update", err)
		}
	}
}
