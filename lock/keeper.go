package lock

import (
	"context"
	"errors"
	"fmt"
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
	go func() {
		defer close(h.stopped)
		m.keep(ctx, h, sent)
	}()
}

func (m *Mutex) keep(ctx context.Context, h *hold, sent time.Time) {
	c := m.c
	clk := c.clock
	d := h.rec.ttl
	renewing := d > 0 && m.renew

	var deadline, renewal, poll, retry clock.Timer
	stopAll := func() {
		for _, t := range []clock.Timer{deadline, renewal, poll, retry} {
			if t != nil {
				t.Stop()
			}
		}
	}
	defer stopAll()
	ch := func(t clock.Timer) <-chan time.Time {
		if t == nil {
			return nil
		}
		return t.C()
	}
	if d > 0 {
		deadline = clk.NewTimer(max(h.deadline.Sub(clk.Now()), 0))
	}
	if renewing {
		next := time.Duration(0)
		if !sent.IsZero() {
			next = sent.Add(ttl.RenewInterval(d)).Sub(clk.Now())
		}
		renewal = clk.NewTimer(max(next, 0))
	}

	lw := newLeaseWatch(c, m.namespace, m.name)
	defer lw.stop()
	rearm := func() {
		if retry != nil {
			retry.Stop()
			retry = nil
		}
		if poll != nil {
			poll.Stop()
			poll = nil
		}
		switch {
		case lw.forbidden:
			poll = clk.NewTimer(jitter(c.pollInterval))
		case lw.w == nil:
			retry = clk.NewTimer(lw.retryAfter())
		}
	}
	if err := lw.start(ctx, h.rec.lease.ResourceVersion); err != nil {
		return
	}
	rearm()

	for {
		select {
		case <-ctx.Done():
			return

		case <-ch(deadline):
			m.lose(h, fmt.Errorf("mutex %s/%s: no renewal succeeded in time, so after its TTL (%s) another holder may take it over: %w",
				m.namespace, m.name, ttl.Format(d), ErrLost))
			return

		case <-ch(renewal):
			lost, err := m.renewOnce(ctx, h)
			if lost != nil {
				m.lose(h, lost)
				return
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				// Try again soon: a few times before the deadline.
				c.log.V(1).Info("renewal failed, retrying", "namespace", m.namespace, "mutex", m.name, "error", err.Error())
				renewal = clk.NewTimer(ttl.HolderMargin(d) / 2)
				continue
			}
			deadline.Stop()
			deadline = clk.NewTimer(max(h.deadline.Sub(clk.Now()), 0))
			renewal = clk.NewTimer(ttl.RenewInterval(d))

		case <-ch(poll):
			r, err := c.get(ctx, m.namespace, m.name)
			if lost := m.check(h, r, err); lost != nil {
				m.lose(h, lost)
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
				m.lose(h, fmt.Errorf("mutex %s/%s was deleted: %w", m.namespace, m.name, ErrLost))
				return
			case res.lease != nil:
				r, err := decode(res.lease)
				if lost := m.check(h, r, err); lost != nil {
					m.lose(h, lost)
					return
				}
			default: // the watch lost its place: read once, then watch anew.
				r, err := c.get(ctx, m.namespace, m.name)
				if lost := m.check(h, r, err); lost != nil {
					m.lose(h, lost)
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

// check returns why hold h is lost according to record r (read with error
// err), or nil if it is still ours or the read failed for another reason.
func (m *Mutex) check(h *hold, r *record, err error) error {
	switch {
	case errors.Is(err, ErrNotFound):
		return fmt.Errorf("mutex %s/%s was deleted: %w", m.namespace, m.name, ErrLost)
	case errors.Is(err, ErrNotMutex):
		return fmt.Errorf("%w: %w", err, ErrLost)
	case err != nil:
		return nil
	case !r.held():
		return fmt.Errorf("mutex %s/%s was force-unlocked: %w", m.namespace, m.name, ErrLost)
	case r.holder != m.holder || r.token != h.token:
		return fmt.Errorf("mutex %s/%s was taken over by %q (token %d): %w", m.namespace, m.name, r.holder, r.token, ErrLost)
	}
	return nil
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
		switch {
		case err == nil:
			r, derr := decode(out)
			if derr != nil {
				return fmt.Errorf("%w: %w", derr, ErrLost), nil
			}
			h.rec = r
			h.deadline = ttl.HolderDeadline(sent, d)
			c.log.V(2).Info("renewed mutex", "namespace", m.namespace, "mutex", m.name, "token", h.token)
			return nil, nil
		case apierrors.IsConflict(err), apierrors.IsNotFound(err):
			// Someone wrote the Lease: read it and see whether it is still
			// ours (a label edited by hand) or not (taken over).
			r, gerr := c.get(rctx, m.namespace, m.name)
			if lost := m.check(h, r, gerr); lost != nil {
				return lost, nil
			}
			if gerr != nil {
				return nil, gerr
			}
			h.rec = r
		default:
			return nil, apiError("update", m.namespace, m.name, err)
		}
	}
}
