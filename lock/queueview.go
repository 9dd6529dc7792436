package lock

import (
	"context"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/clock"
)

// queueView is what the holder of a fair mutex knows of its queue: the
// entries, followed by a watch from the list that the acquisition decided
// on, and the sessions of the namespace, followed by a watch of their own.
// Unlock hands the mutex to the view's head without a request. A view that
// lags (an entry created or deleted a moment ago) can only make Unlock
// release instead of handing off, or hand off to a waiter that has just
// left, whose handoff then runs out unconfirmed: never a second holder.
type queueView struct {
	c               *Client
	namespace, name string

	mu      sync.Mutex
	entries map[string]*entry
	// sessions maps a session's name to its latest version, or to nil
	// once it was deleted (its entries are dead).
	sessions map[string]*session
	// entriesRV is where the entries' watch resumes.
	entriesRV string
	seen      sightings
	// semaphore is the name of the semaphore whose queue this is ("": a
	// mutex's). Its view also follows the slots, and targeted maps each
	// slot with an unconfirmed handoff to the entry handed to: a second
	// releaser must not hand its slot to a waiter that has one coming.
	semaphore string
	targeted  map[string]string

	// stopRun and ran: the goroutine of start, while it runs.
	stopRun context.CancelFunc
	ran     chan struct{}
}

// start follows the queue on a goroutine of its own until stop; a view
// that runs already goes on. The head of a queue starts its view while it
// waits, so that the hold it is handed knows the queue from its first
// moment; the hold's keeper stops it, and starts it again if the hold
// goes on (after a failed Unlock).
func (v *queueView) start() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopRun != nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.stopRun, v.ran = cancel, make(chan struct{})
	ran := v.ran
	go func() {
		defer close(ran)
		v.run(ctx)
	}()
}

// stop ends the goroutine of start and waits for it; what the view knows
// stays readable.
func (v *queueView) stop() {
	v.mu.Lock()
	cancel, ran := v.stopRun, v.ran
	v.stopRun, v.ran = nil, nil
	v.mu.Unlock()
	if cancel != nil {
		cancel()
		<-ran
	}
}

func newQueueView(c *Client, namespace, name string, q *queue) *queueView {
	v := &queueView{c: c, namespace: namespace, name: name, entries: map[string]*entry{}, sessions: map[string]*session{}}
	v.reset(q)
	return v
}

// reset replaces the entries with those of a fresh list.
func (v *queueView) reset(q *queue) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entries = map[string]*entry{}
	for _, e := range q.entries {
		v.entries[e.lease.Name] = e
	}
	v.entriesRV = q.rv
}

// head is the oldest entry whose session is not known to be dead, after
// own (the holder's entry, nil if it did not queue), and that session (nil
// when the view has not seen it yet). Entries queued before own are
// stale: own reached the head, so they were gone, whatever the view has
// heard of their deletion yet.
func (v *queueView) head(own *entry) (*entry, *session) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.c.clock.Now()
	var best *entry
	for _, e := range v.entries {
		if own != nil && !own.before(e) {
			continue
		}
		if v.isTargeted(e.lease.Name) {
			continue
		}
		if best != nil && !e.before(best) {
			continue
		}
		if s, known := v.sessions[e.session]; known && (s == nil || !v.c.liveSession(s, &v.seen, now)) {
			continue
		}
		best = e
	}
	if best == nil {
		return nil, nil
	}
	return best, v.sessions[best.session]
}

// run follows the queue until ctx ends (see start).
func (v *queueView) run(ctx context.Context) {
	c := v.c
	entries := newSelectorWatch(c, v.namespace, queueSelector(v.name))
	sessions := newSelectorWatch(c, v.namespace, labels.SelectorFromSet(labels.Set{LabelKind: KindSession}).String())
	defer entries.stop()
	defer sessions.stop()
	// A semaphore's view follows its slots too (see targeted); for a
	// mutex's, this watch is never started and its channel never fires.
	slots := newSelectorWatch(c, v.namespace, slotSelector(v.name))
	defer slots.stop()
	if v.semaphore != "" && slots.start(ctx, "") != nil {
		return
	}
	v.mu.Lock()
	erv := v.entriesRV
	v.mu.Unlock()
	// The sessions' watch starts from now: its first events are the
	// sessions that exist.
	if entries.start(ctx, erv) != nil || sessions.start(ctx, "") != nil {
		return
	}
	var retry clock.Timer
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retry.Stop()
			retry = nil
		}
		if wait := max(entries.retryAfter(), sessions.retryAfter()); entries.w == nil || sessions.w == nil {
			if entries.forbidden || sessions.forbidden {
				wait = jitter(c.pollInterval)
			}
			retry = c.clock.NewTimer(wait)
			retryC = retry.C()
		}
		select {
		case <-ctx.Done():
			return
		case <-retryC:
			if entries.forbidden {
				// Without watch, poll the entries; sessions stay unknown
				// (taken as live).
				if q, err := c.listQueue(ctx, v.namespace, v.name); err == nil {
					v.reset(q)
				}
				continue
			}
			v.mu.Lock()
			erv = v.entriesRV
			v.mu.Unlock()
			if entries.start(ctx, erv) != nil || sessions.start(ctx, sessions.rv) != nil {
				return
			}
		case ev, ok := <-entries.events():
			res, again := entries.handle(ev, ok)
			if again {
				continue
			}
			switch {
			case res.lease != nil:
				v.setEntry(res.lease)
			case res.gone != nil:
				v.mu.Lock()
				delete(v.entries, res.gone.Name)
				v.seen.forget(res.gone.Name)
				v.entriesRV = entries.rv
				v.mu.Unlock()
			case res.reread:
				if q, err := c.listQueue(ctx, v.namespace, v.name); err == nil {
					v.reset(q)
				}
			}
		case ev, ok := <-slots.events():
			res, again := slots.handle(ev, ok)
			switch {
			case again && slots.w == nil:
				if slots.start(ctx, slots.rv) != nil {
					return
				}
			case res.lease != nil:
				v.setSlot(res.lease)
			}
		case ev, ok := <-sessions.events():
			res, again := sessions.handle(ev, ok)
			if again {
				continue
			}
			v.mu.Lock()
			switch {
			case res.lease != nil:
				if s, err := decodeSession(res.lease); err == nil {
					v.sessions[s.lease.Name] = s
				}
			case res.gone != nil:
				v.sessions[res.gone.Name] = nil // its entries are dead
			case res.reread:
				v.sessions = map[string]*session{}
			}
			v.mu.Unlock()
		}
	}
}

// isTargeted reports whether a slot is being handed to the entry name.
// Called with v.mu held.
func (v *queueView) isTargeted(name string) bool {
	for _, to := range v.targeted {
		if to == name {
			return true
		}
	}
	return false
}

// setSlot records the handoff a slot carries, if any.
func (v *queueView) setSlot(l *coordinationv1.Lease) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.targeted == nil {
		v.targeted = map[string]string{}
	}
	delete(v.targeted, l.Name)
	if r, err := decodeSlot(l, v.semaphore); err == nil && r.handoff != nil {
		v.targeted[l.Name] = r.handoff.entry
	}
}

// sessionGone records that the session name was found missing.
func (v *queueView) sessionGone(name string) {
	v.mu.Lock()
	v.sessions[name] = nil
	v.mu.Unlock()
}

func (v *queueView) setEntry(l *coordinationv1.Lease) {
	e, err := decodeEntry(l, v.name)
	v.mu.Lock()
	defer v.mu.Unlock()
	v.entriesRV = l.ResourceVersion
	if err != nil {
		delete(v.entries, l.Name)
		return
	}
	v.entries[l.Name] = e
}
