package lock

import (
	"context"
	"errors"
	"fmt"
)

// acquireFair is Acquire or TryAcquire on a fair semaphore: the queue of
// fair mutexes, on the semaphore's name. The head of the queue watches the
// slots and takes a free one, or claims one that a releaser handed to it;
// a releaser hands its slot to the head (see releaseLease).
func (s *Semaphore) acquireFair(ctx context.Context, wait bool, sem *semaphore, slots []*record) error {
	a := &acquirer{m: s.tmpl, wait: wait, retry: s.tmpl.newRetrier("acquiring the semaphore")}
	defer a.stop()
	w := &waiter{m: s.tmpl, a: a, ours: func(*record) bool { return false }}
	w.passOnHandoff = func(ctx context.Context, entry string) { s.passOnHandoffs(ctx, entry, -1) }
	defer w.leave(ctx)
	for {
		q, err := s.c.listQueue(ctx, s.namespace, s.name)
		if err != nil {
			if a.retry.wait(ctx, err) {
				continue
			}
			return a.fail(ctx, err)
		}
		w.q = q
		if w.own == nil {
			live, err := w.judge(ctx, q.entries)
			if err != nil {
				return err
			}
			if len(live) == 0 {
				done, err := s.takeFree(ctx, w, slots)
				if done || err != nil {
					return err
				}
			}
			if slots, err = s.refresh(ctx); err != nil {
				return err
			}
			st := s.status(sem, slots, &w.seen, s.c.clock.Now())
			for _, e := range live {
				st.Waiters = append(st.Waiters, e.holder)
			}
			if !wait {
				return &SemaphoreFullError{Status: st}
			}
			if err := w.enqueue(ctx); err != nil {
				return err
			}
			if s.tmpl.onSemWait != nil {
				s.tmpl.onSemWait(st)
			}
			continue
		}
		pos := -1
		for i, e := range q.entries {
			if e.lease.Name == w.own.lease.Name {
				pos = i
			}
		}
		if pos < 0 {
			w.dropEntry() // deleted by someone who judged it dead: queue again
			continue
		}
		pred, err := w.predecessor(ctx, q.entries[:pos])
		if err != nil {
			return err
		}
		if pred != nil {
			if err := w.follow(ctx, pred); err != nil {
				if errors.Is(err, ctx.Err()) {
					return &SemaphoreFullError{Status: s.status(sem, slots, &w.seen, s.c.clock.Now()), cause: err}
				}
				return err
			}
			continue
		}
		acquired, err := s.atHead(ctx, w, sem)
		if acquired || err != nil {
			return err
		}
	}
}

// refresh lists the slots again.
func (s *Semaphore) refresh(ctx context.Context) ([]*record, error) {
	slots, _, err := s.c.listSlots(ctx, s.namespace, s.name)
	return slots, err
}

// takeFree takes a free slot for waiter w (at the head of the queue, or
// with nobody queued), from the slots as listed.
func (s *Semaphore) takeFree(ctx context.Context, w *waiter, slots []*record) (bool, error) {
	now := s.c.clock.Now()
	for _, r := range slots {
		if r.retired && r.held() && !s.expired(r, &w.seen, now) {
			return false, nil // nobody joins the holders of retired slots
		}
	}
	for _, r := range slots {
		free := !r.held() || s.expired(r, &w.seen, now) || (r.handoff != nil && w.takeable(r, w.seen.see(r.lease.Name, r.lease.ResourceVersion, now)))
		if r.retired || !free {
			continue
		}
		h := s.slot(r.slot)
		h.joining = w.holdQueue()
		sa := &acquirer{m: h, retry: h.newRetrier("acquiring the semaphore")}
		done, _, err := h.take(ctx, sa, r, w.previous(r))
		h.joining = nil
		if w.a.cleanupBy.IsZero() {
			w.a.cleanupBy = sa.cleanupBy // one cleanup budget per call
		}
		if done {
			w.acquired = true
			s.mu.Lock()
			s.cur = h
			s.mu.Unlock()
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
	return false, nil
}

// atHead waits at the head of the queue: for a handoff of a slot to this
// waiter's entry, or a free slot. It returns acquired false with no error
// when the waiter must look at the queue again (its session was lost).
func (s *Semaphore) atHead(ctx context.Context, w *waiter, sem *semaphore) (bool, error) {
	if w.view == nil {
		w.view = newQueueView(s.c, s.namespace, s.name, w.q)
		w.view.semaphore = s.name
		w.view.start()
	}
	lw := newSelectorWatch(s.c, s.namespace, slotSelector(s.name))
	defer lw.stop()
	notified := ""
	for {
		select {
		case <-w.sess.lostC():
			w.abandonEntry(ctx) // session lost: queue again
			return false, nil
		default:
		}
		slots, rv, err := s.c.listSlots(ctx, s.namespace, s.name)
		if err != nil {
			return false, err
		}
		for _, r := range slots {
			if r.handoff == nil || r.handoff.entry != w.own.lease.Name || r.holder != s.tmpl.holder {
				continue
			}
			h := s.slot(r.slot)
			done, _, err := w.claimOn(ctx, h, r)
			if err != nil {
				return false, err
			}
			if done {
				w.acquired = true
				s.mu.Lock()
				s.cur = h
				s.mu.Unlock()
				// A second releaser may have handed this waiter a slot too.
				cctx, cancel := w.a.cleanupCtx(ctx)
				s.passOnHandoffs(cctx, w.own.lease.Name, r.slot)
				cancel()
				return true, nil
			}
		}
		if done, err := s.takeFree(ctx, w, slots); done || err != nil {
			return done, err
		}
		if st := s.status(sem, slots, &w.seen, s.c.clock.Now()); s.tmpl.onSemWait != nil && fmt.Sprint(st.holderNames()) != notified {
			notified = fmt.Sprint(st.holderNames())
			s.tmpl.onSemWait(st)
		}
		if err := s.waitChange(ctx, lw, rv, slots, &w.seen, w.sess.lostC()); err != nil {
			return false, err
		}
	}
}

// passOnHandoffs passes on every slot that a releaser handed to the entry
// name and that this handle does not keep (keep: that slot, -1: none),
// with one conditional write each: to the next waiter, or free.
func (s *Semaphore) passOnHandoffs(ctx context.Context, entry string, keep int) {
	slots, _, err := s.c.listSlots(ctx, s.namespace, s.name)
	if err != nil {
		return
	}
	for _, r := range slots {
		if r.slot == keep || r.handoff == nil || r.handoff.entry != entry || r.holder != s.tmpl.holder {
			continue
		}
		if err := s.slot(r.slot).passOn(ctx, r, entry); err != nil {
			s.log.Info("passing on a slot handed to a waiter that no longer waits failed; it runs out unconfirmed", "slot", r.slot, "error", err.Error())
		}
	}
}
