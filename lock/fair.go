package lock

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/ttl"
)

// errNotFair ends the queue protocol when the mutex turns out not to be
// fair (any more), or to be gone: the racing loop decides again from a
// fresh read, which also creates a missing mutex.
var errNotFair = errors.New("mutex is not fair")

// waiter is the state of one Lock or TryLock call on a fair mutex (see the
// package documentation, "Fair mutexes").
type waiter struct {
	m    *Mutex
	a    *acquirer
	ours func(*record) bool
	seen sightings
	// sess and own are this call's session and entry, nil until it queues.
	sess *ownSession
	own  *entry
	// q is the newest list of the queue.
	q *queue
	// view follows the queue from when this call is at its head; the hold
	// it acquires takes it over.
	view *queueView
	// acquired: the hold now owns own and sess.
	acquired bool
	// passOnHandoff passes on what a releaser handed to the entry named,
	// which no longer waits: the mutex (nil), or a semaphore's slots.
	passOnHandoff func(ctx context.Context, entry string)
}

// acquireFair is Lock or TryLock on the fair mutex r, just read.
func (m *Mutex) acquireFair(ctx context.Context, a *acquirer, r *record, ours func(*record) bool) error {
	w := &waiter{m: m, a: a, ours: ours}
	defer w.leave(ctx)
	for {
		err := w.round(ctx, r)
		if err == nil && !w.acquired {
			// Success must mean a hold: never report one that did not start.
			return fmt.Errorf("mutex %s/%s: internal error: the queue protocol ended without a hold", m.namespace, m.name)
		}
		if err == nil || errors.Is(err, errNotFair) {
			return err
		}
		if a.retry.wait(ctx, err) {
			r = nil
			continue
		}
		return a.fail(ctx, err)
	}
}

// round lists the queue and acts on it until the call ends or must list
// again. r is the mutex as last read (nil: read it).
func (w *waiter) round(ctx context.Context, r *record) error {
	m := w.m
	for {
		q, err := m.c.listQueue(ctx, m.namespace, m.queueName())
		if err != nil {
			return err
		}
		w.q = q
		w.a.retry.reset()
		if w.own == nil {
			done, err := w.beforeQueuing(ctx, r)
			r = nil // decided on: read afresh next time
			if done || err != nil {
				return err
			}
			continue // queued: look at the queue with the entry in it
		}
		pos := -1
		for i, e := range q.entries {
			if e.lease.Name == w.own.lease.Name {
				pos = i
			}
		}
		if pos < 0 {
			// Someone deleted the entry (it looked dead to them): queue
			// again, at the back.
			m.log.V(1).Info("queue entry disappeared; queuing again", "entry", w.own.lease.Name)
			w.dropEntry()
			continue
		}
		pred, err := w.predecessor(ctx, q.entries[:pos])
		if err != nil {
			return err
		}
		if pred != nil {
			if err := w.follow(ctx, pred); err != nil {
				return err
			}
			continue
		}
		if acquired, err := w.atHead(ctx); acquired || err != nil {
			return err
		}
		// The session was lost: queue again.
	}
}

// beforeQueuing decides for a call that has no entry yet: take the mutex
// if it is free and nobody live waits, fail a TryLock, or queue.
func (w *waiter) beforeQueuing(ctx context.Context, r *record) (done bool, err error) {
	m, a := w.m, w.a
	if r == nil {
		if r, err = a.read(ctx); err != nil {
			if errors.Is(err, ErrNotFound) {
				return false, errNotFair
			}
			return false, err
		}
	}
	if !r.fair {
		return false, errNotFair
	}
	live, err := w.judge(ctx, w.q.entries)
	if err != nil {
		return false, err
	}
	seen := a.observe(r)
	if len(live) == 0 && (!r.held() || w.ours(r) || w.takeable(r, seen)) {
		m.joining = &queueHold{view: newQueueView(m.c, m.namespace, m.queueName(), w.q)}
		done, _, err := m.take(ctx, a, r, w.previous(r))
		if !done {
			m.joining = nil
		}
		w.acquired = done
		// Lost a race, or a late refusal: read and decide again.
		return done, err
	}
	switch {
	case r.held() && r.holder == m.holder && !w.ours(r) && r.handoff == nil:
		return false, fmt.Errorf("mutex %s/%s: holder %q holds it (token %d) through another handle or process: %w",
			m.namespace, m.name, m.holder, r.token, ErrAlreadyHeld)
	case !a.wait:
		le := r.lockedError(nil)
		le.Waiters = len(live)
		return false, le
	}
	if err := w.enqueue(ctx); err != nil {
		return false, err
	}
	if r.held() {
		a.notify(r) // queued: tell the caller whom it waits behind
	}
	return false, nil
}

// takeable reports whether a held fair mutex may be taken from its holder:
// its TTL ran out, or it is an unconfirmed handoff whose window ran out.
func (w *waiter) takeable(r *record, seen time.Time) bool {
	c := w.m.c
	if c.expired(r, seen) {
		return true
	}
	if r.handoff == nil {
		return false
	}
	return ttl.Expiry{TTL: r.handoff.ttl, FirstSeen: seen, LastWrite: r.lastWrite}.Expired(c.clock.Now(), c.server)
}

// wakeAt is when a held fair mutex could become takeable.
func (w *waiter) wakeAt(r *record, seen time.Time) time.Time {
	c := w.m.c
	var at time.Time
	if r.held() && r.ttl > 0 {
		at = r.expiry(seen).TakeoverAt(c.server)
	}
	if r.handoff != nil {
		h := ttl.Expiry{TTL: r.handoff.ttl, FirstSeen: seen, LastWrite: r.lastWrite}.TakeoverAt(c.server)
		if at.IsZero() || h.Before(at) {
			at = h
		}
	}
	return at
}

// previous is the holder that taking r over evicts, if any.
func (w *waiter) previous(r *record) string {
	if r.held() && !w.ours(r) {
		return r.holder
	}
	return ""
}

// judge returns the entries whose sessions are live, reading each session
// once. It deletes the entries of sessions that are gone or expired,
// judged from the API server's time: they belong to processes that died.
func (w *waiter) judge(ctx context.Context, entries []*entry) ([]*entry, error) {
	var own string
	if w.own != nil {
		own = w.own.session // this process's: live while this call runs
	}
	live, dead, err := w.m.c.judgeEntries(ctx, w.m.namespace, entries, &w.seen, own)
	for _, d := range dead {
		w.passOver(ctx, d.e, d.sess)
	}
	return live, err
}

// passOver deletes the entry of a dead waiter, and its session if that
// expired: best effort, exactly those versions, never anything newer.
func (w *waiter) passOver(ctx context.Context, e *entry, sess *session) {
	c := w.m.c
	c.log.V(1).Info("passing over a dead waiter", "namespace", w.m.namespace, "mutex", w.m.name, "entry", e.lease.Name, "holder", e.holder)
	if err := c.deleteExact(ctx, e.lease); err != nil {
		c.log.V(1).Info("deleting a dead waiter's entry failed", "entry", e.lease.Name, "error", err.Error())
	}
	if sess != nil {
		_ = c.deleteExact(ctx, sess.lease)
	}
}

// enqueue creates this call's entry, under this process's session.
func (w *waiter) enqueue(ctx context.Context) error {
	m := w.m
	if err := m.c.mayDelete(ctx, m.namespace); err != nil {
		return err
	}
	sess, cur, err := m.c.session(ctx, m.namespace)
	if err != nil {
		return err
	}
	for {
		out, err := m.c.create(ctx, newEntryLease(m.namespace, m.queueName(), m.holder, cur.lease.Name, m.c.serverNow()))
		if apierrors.IsAlreadyExists(err) {
			continue // the random name is taken: draw another
		}
		if err != nil {
			sess.release()
			if apierrors.IsForbidden(err) {
				return fmt.Errorf("%s is fair, and this identity may not queue for it: %w", m.subject(), m.apiError("create", err))
			}
			return m.apiError("create", err)
		}
		e, err := decodeEntry(out, m.queueName())
		if err != nil {
			sess.release()
			return err
		}
		w.sess, w.own = sess, e
		m.log.V(1).Info("queued", "entry", e.lease.Name, "position", e.pos())
		return nil
	}
}

// dropEntry forgets an entry that is gone.
func (w *waiter) dropEntry() {
	w.sess.release()
	w.sess, w.own = nil, nil
}

// predecessor is the last live entry of ahead (the entries before this
// call's), nil when there is none: this call is at the head. Dead ones
// found on the way are passed over.
func (w *waiter) predecessor(ctx context.Context, ahead []*entry) (*entry, error) {
	for i := len(ahead) - 1; i >= 0; i-- {
		live, err := w.judge(ctx, ahead[i:i+1])
		if err != nil {
			return nil, err
		}
		if len(live) == 1 {
			return live[0], nil
		}
	}
	return nil, nil
}

// follow waits behind pred: until its entry is deleted, its session could
// have expired, this call's own session is lost, or ctx ends. It watches
// pred's entry alone, so a release elsewhere in the queue costs it nothing.
func (w *waiter) follow(ctx context.Context, pred *entry) error {
	m := w.m
	c := m.c
	sess, err := c.getSession(ctx, m.namespace, pred.session)
	if err != nil {
		return err
	}
	if !c.liveSession(sess, &w.seen, c.clock.Now()) {
		w.passOver(ctx, pred, sess)
		return nil
	}
	lw := newLeaseWatch(c, m.namespace, pred.lease.Name)
	defer lw.stop()
	if err := lw.start(ctx, w.q.rv); err != nil {
		return err
	}
	for {
		expiry := c.clock.NewTimer(max(sess.expiry(w.seen.see(sess.lease.Name, sess.lease.ResourceVersion, c.clock.Now())).TakeoverAt(c.server).Sub(c.clock.Now()), 0))
		var poll clock.Timer
		var pollC <-chan time.Time
		if lw.w == nil {
			poll = c.clock.NewTimer(jitter(c.pollInterval))
			pollC = poll.C()
		}
		stop := func() {
			expiry.Stop()
			if poll != nil {
				poll.Stop()
			}
		}
		select {
		case <-ctx.Done():
			stop()
			return ctx.Err()
		case <-w.sess.lostC():
			stop()
			w.abandonEntry(ctx) // dead to others: queue again
			return nil
		case <-pollC:
			stop()
			return nil // no watch: look at the queue again
		case <-expiry.C():
			stop()
			// Read the session again: renewed, wait on; else pass over.
			if sess, err = c.getSession(ctx, m.namespace, pred.session); err != nil {
				return err
			}
			if !c.liveSession(sess, &w.seen, c.clock.Now()) {
				w.passOver(ctx, pred, sess)
				return nil
			}
		case ev, ok := <-lw.events():
			stop()
			res, again := lw.handle(ev, ok)
			if again {
				if lw.w == nil && lw.start(ctx, lw.rv) != nil {
					return ctx.Err()
				}
				continue
			}
			if res.lease != nil {
				continue // the entry was edited; it keeps its place
			}
			return nil // deleted, or the watch lost its place
		}
	}
}

// atHead waits at the head of the queue, watching the mutex, until this
// call holds it (acquired), must look at the queue again (neither: its
// session was lost, so its entry is dead and it queues anew), or ends with
// an error.
func (w *waiter) atHead(ctx context.Context) (acquired bool, err error) {
	m, a := w.m, w.a
	r, err := a.read(ctx)
	if errors.Is(err, ErrNotFound) {
		return false, errNotFair
	}
	if err != nil {
		return false, err
	}
	a.interrupt = w.sess.lostC()
	defer func() { a.interrupt, a.wakeAt = nil, time.Time{} }()
	if w.view == nil {
		w.view = newQueueView(m.c, m.namespace, m.queueName(), w.q)
		w.view.start()
	}
	for {
		a.wakeAt = time.Time{}
		if r == nil {
			if r, err = a.read(ctx); errors.Is(err, ErrNotFound) {
				return false, errNotFair
			} else if err != nil {
				return false, err
			}
		}
		if !r.fair {
			return false, errNotFair
		}
		select {
		case <-a.interrupt:
			w.abandonEntry(ctx) // session lost: queue again
			return false, nil
		default:
		}
		seen := a.observe(r)
		switch {
		case r.handoff != nil && r.handoff.entry == w.own.lease.Name && r.holder == m.holder:
			done, next, err := w.claim(ctx, r)
			if done || err != nil {
				return done, err
			}
			r = next
			continue
		case !r.held() || w.ours(r) || w.takeable(r, seen):
			m.joining = w.holdQueue()
			done, next, err := m.take(ctx, a, r, w.previous(r))
			if done {
				w.acquired = true
				return true, nil
			}
			m.joining = nil
			if err != nil {
				return false, err
			}
			if r = next; r != nil {
				continue
			}
			// Conflict: the write that beat ours comes on the watch.
		case r.holder == m.holder && r.handoff == nil:
			return false, fmt.Errorf("mutex %s/%s: holder %q holds it (token %d) through another handle or process: %w",
				m.namespace, m.name, m.holder, r.token, ErrAlreadyHeld)
		default:
			a.notify(r)
			a.wakeAt = w.wakeAt(r, seen)
		}
		next, err := a.next(ctx, r)
		if err != nil {
			return false, err
		}
		if next == nil {
			if next, err = a.read(ctx); errors.Is(err, ErrNotFound) {
				return false, errNotFair
			} else if err != nil {
				return false, err
			}
		}
		r = next
	}
}

// holdQueue is what the hold that this call starts must look after.
func (w *waiter) holdQueue() *queueHold {
	if w.view == nil {
		w.view = newQueueView(w.m.c, w.m.namespace, w.m.queueName(), w.q)
		w.view.semaphore = w.m.slotOf
	}
	return &queueHold{view: w.view, own: w.own, sess: w.sess}
}

// claim takes a handoff to this call's entry. When the session version it
// names is one of this process's writes, and the window it gives has not
// run out, the hold starts at once and its keeper confirms it; otherwise
// (or for a handle that does not renew) one conditional write confirms it
// first. next is the record to decide on when it did not succeed.
func (w *waiter) claim(ctx context.Context, r *record) (done bool, next *record, err error) {
	return w.claimOn(ctx, w.m, r)
}

// claimOn is claim through the handle m of the Lease r (a semaphore's
// slot; for a mutex, w.m itself).
func (w *waiter) claimOn(ctx context.Context, m *Mutex, r *record) (done bool, next *record, err error) {
	c := m.c
	window := r.handoff.ttl
	if r.ttl > 0 {
		window = min(window, r.ttl)
	}
	if sent, ok := w.sess.sentOf(w.own.session, r.handoff.version); ok && m.renew &&
		c.clock.Now().Before(ttl.HolderDeadline(sent, window)) {
		m.joining = w.holdQueue()
		if m.startHold(ctx, r, attempt{token: r.token, sent: sent, window: window}) {
			w.acquired = true
			return true, nil, nil
		}
		m.joining = nil
	}
	sent := c.clock.Now()
	out, err := c.update(ctx, r.renew(c.serverNow()))
	switch {
	case err == nil:
		nr, err := m.decode(out)
		if err != nil {
			return false, nil, err
		}
		m.joining = w.holdQueue()
		if m.startHold(ctx, nr, attempt{token: r.token, sent: sent}) {
			w.acquired = true
			return true, nil, nil
		}
		m.joining = nil
		return false, nil, nil
	case apierrors.IsConflict(err), apierrors.IsNotFound(err):
		return false, nil, nil
	case isDefinite(err):
		return false, nil, m.apiError("update", err)
	}
	// The answer was lost: if the confirmation landed, the hold is ours
	// from that write; if Lock gives up first, abandon releases it.
	w.a.unknown = &attempt{token: r.token, sent: sent, err: err}
	return false, nil, err
}

// leave ends a call that did not acquire: it gives up its entry.
func (w *waiter) leave(ctx context.Context) {
	if w.acquired {
		return
	}
	if w.view != nil {
		w.view.stop()
	}
	if w.own == nil {
		return
	}
	w.abandonEntry(ctx)
}

// abandonEntry deletes this call's entry and forgets it, then passes on a
// handoff that reached the entry meanwhile; its requests share the call's
// cleanup budget (acquirer.cleanupCtx), whatever ctx says. A call that
// leaves, and one whose session was lost and queues again under a new one,
// both come here: the old session may still look live to others (its last
// renewal landed, but the answer was lost), and a releaser could hand the
// mutex to the old entry, which nobody would claim. A handoff that lands
// after the deletion (the releaser had not yet seen it) goes unconfirmed
// and runs out: a delay for the next waiter, never a second holder. An
// entry whose deletion fails is left to the session's keeper: while the
// session lives, so does the entry, and everyone behind it would wait for
// it.
func (w *waiter) abandonEntry(ctx context.Context) {
	ctx, cancel := w.a.cleanupCtx(ctx)
	defer cancel()
	m, own, sess := w.m, w.own, w.sess
	if err := m.c.deleteExact(ctx, own.lease); err != nil {
		m.log.Info("leaving the queue failed; the entry is deleted at the session's next renewal", "entry", own.lease.Name, "error", err.Error())
		sess.orphan(own.lease)
	}
	w.dropEntry()
	if w.passOnHandoff != nil {
		w.passOnHandoff(ctx, own.lease.Name)
		return
	}
	m.passOnHandoff(ctx, own.lease.Name)
}

// passOnHandoff passes on the mutex if it was handed to entry, which no
// longer waits: to the next live waiter, or free.
func (m *Mutex) passOnHandoff(ctx context.Context, entry string) {
	r, err := m.get(ctx)
	if err != nil || r.handoff == nil || r.handoff.entry != entry || r.holder != m.holder {
		return
	}
	if err := m.passOn(ctx, r, entry); err != nil {
		m.log.Info("passing on a handoff to a waiter that no longer waits failed; it runs out unconfirmed", "error", err.Error())
	}
}

// passOn releases r (held by this holder) to the next live waiter, or
// frees it; skip is an entry not to hand to. One conditional write.
func (m *Mutex) passOn(ctx context.Context, r *record, skip string) error {
	l, err := m.releaseLease(ctx, nil, r, skip)
	if err != nil {
		return err
	}
	if _, err := m.c.update(ctx, l); err != nil && !apierrors.IsConflict(err) {
		return m.apiError("update", err)
	}
	return nil
}

// maxSessionReads bounds the sessions an Unlock reads while looking for a
// live waiter its view does not know: past it, it releases, and the head
// of the queue takes the mutex with a write of its own.
const maxSessionReads = 8

// releaseLease is the write that ends a hold of r: on a fair mutex, a
// handoff to the oldest live waiter other than skip, else a release. A
// hold h that follows the queue decides from its view, with no request; a
// caller without one (an unlock by identity, a waiter passing a handoff
// on) reads the queue.
func (m *Mutex) releaseLease(ctx context.Context, h *hold, r *record, skip string) (*coordinationv1.Lease, error) {
	c := m.c
	if !r.fair {
		return r.release(c.serverNow()), nil
	}
	var next *entry
	var sess *session
	if h != nil && h.queue != nil {
		// The view's head may belong to a session it has not seen yet:
		// read that session, and pass over the entries of missing ones.
		for range maxSessionReads {
			if next, sess = h.queue.view.head(h.queue.own); next == nil || sess != nil {
				break
			}
			var err error
			if sess, err = c.getSession(ctx, m.namespace, next.session); err != nil {
				return nil, err
			}
			if sess != nil && c.liveSession(sess, &h.queue.view.seen, c.clock.Now()) {
				break
			}
			h.queue.view.sessionGone(next.session)
			next, sess = nil, nil
		}
	} else {
		q, err := c.listQueue(ctx, m.namespace, m.queueName())
		if err != nil {
			return nil, err
		}
		w := &waiter{m: m}
		var rest []*entry
		for _, e := range q.entries {
			if e.lease.Name != skip {
				rest = append(rest, e)
			}
		}
		live, err := w.judge(ctx, rest)
		if err != nil {
			return nil, err
		}
		if len(live) > 0 {
			next = live[0]
		}
	}
	if next != nil && sess == nil {
		var err error
		if sess, err = c.getSession(ctx, m.namespace, next.session); err != nil {
			return nil, err
		}
	}
	if next == nil || sess == nil {
		m.log.V(1).Info("releasing: no live waiter to hand the mutex to")
		return r.release(c.serverNow()), nil
	}
	m.log.V(1).Info("handing the mutex to the next waiter", "to", next.holder, "entry", next.lease.Name)
	return r.handTo(next, sess, c.serverNow())
}
