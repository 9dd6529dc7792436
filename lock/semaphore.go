package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/ttl"
)

// WithLimit sets the limit that Acquire gives the semaphore when it has to
// create it (1 to MaxLimit). An existing semaphore keeps its own: the
// limit, like the TTL, belongs to the semaphore. Without it, Acquire on a
// missing semaphore fails with ErrNotFound. Only for semaphores.
func WithLimit(n int) Option { return func(m *Mutex) { m.createLimit, m.requireLimit = n, false } }

// WithRequiredLimit is WithLimit made strict, as WithRequiredTTL is for the
// TTL: Acquire creates a missing semaphore with limit n, and refuses an
// existing one with another limit with an error wrapping ErrLimitConflict,
// before writing anything: a caller that counts on at most n holders must
// not get more. Only for semaphores.
func WithRequiredLimit(n int) Option {
	return func(m *Mutex) { m.createLimit, m.requireLimit = n, true }
}

// WithSemaphoreWaitNotify sets a function that a semaphore's Acquire calls
// when it starts to wait because the semaphore is full, and whenever its
// holders change while it waits. It must not block. Only for semaphores.
func WithSemaphoreWaitNotify(fn func(SemaphoreStatus)) Option {
	return func(m *Mutex) { m.onSemWait = fn }
}

// Semaphore is a handle on one semaphore for one holder identity: at most
// its limit of holders hold it at once. It is made of the semaphore's own
// Lease and one Lease per slot; a hold is the hold of one slot, with every
// guarantee of a mutex's (conditional writes, the TTL and renewal, Done
// closing before anyone else may take the slot, the fencing token of the
// slot). See the package documentation, "Semaphores".
type Semaphore struct {
	c         *Client
	namespace string
	name      string
	// tmpl carries the options; each slot's handle is made from it.
	tmpl *Mutex
	log  logr.Logger

	// op serializes Acquire, TryAcquire and Release.
	op sync.Mutex

	mu sync.Mutex
	// cur is the handle of the slot held, nil when none; prev the last one
	// held, for Err.
	cur, prev *Mutex
	// slots are the handles by slot, kept for their hints.
	slots map[int]*Mutex
}

// NewSemaphore returns a handle on the semaphore namespace/name. It
// validates the arguments and sends nothing. The options are those of
// NewMutex (WithHolder, WithTTL, WithRequiredTTL, WithFair, WithoutRenewal,
// ...) and WithLimit and WithSemaphoreWaitNotify.
func (c *Client) NewSemaphore(namespace, name string, opts ...Option) (*Semaphore, error) {
	if err := validateSemaphoreName(name); err != nil {
		return nil, err
	}
	if err := ValidateNamespace(namespace); err != nil {
		return nil, err
	}
	if n := limitOf(opts); n < 0 || n > MaxLimit {
		return nil, fmt.Errorf("semaphore %s/%s: limit %d is outside 1 to %d: %w", namespace, name, n, MaxLimit, ErrInvalid)
	}
	tmpl, err := c.newHandle(namespace, name, opts)
	if err != nil {
		return nil, err
	}
	tmpl.slotOf = name
	return &Semaphore{c: c, namespace: namespace, name: name, tmpl: tmpl, log: tmpl.log, slots: map[int]*Mutex{}}, nil
}

// limitOf is the limit opts set, 0 if none.
func limitOf(opts []Option) int {
	var m Mutex
	for _, o := range opts {
		o(&m)
	}
	return m.createLimit
}

// validateSemaphoreName checks a semaphore's name: a Lease name that leaves
// room for its slots' suffix.
func validateSemaphoreName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if len(slotName(name, MaxLimit-1)) > 253 || len(name) > 240 {
		return fmt.Errorf("invalid semaphore name %q: at most 240 characters, to leave room for its slots' names: %w", name, ErrInvalid)
	}
	return nil
}

// Namespace, Name and Holder say what the handle is for.
func (s *Semaphore) Namespace() string { return s.namespace }
func (s *Semaphore) Name() string      { return s.name }
func (s *Semaphore) Holder() string    { return s.tmpl.holder }

// slot returns the handle of slot k, made once.
func (s *Semaphore) slot(k int) *Mutex {
	if h := s.slots[k]; h != nil {
		return h
	}
	h := s.tmpl.settings()
	h.name = slotName(s.name, k)
	h.slotNum = k
	h.log = s.log.WithValues("slot", k)
	s.slots[k] = h
	return h
}

// Done closes when the current hold ends (see Mutex.Done); closed when the
// handle holds nothing.
func (s *Semaphore) Done() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return closedChan
	}
	return s.cur.Done()
}

// Err says why the latest hold ended (see Mutex.Err).
func (s *Semaphore) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cur != nil:
		return s.cur.Err()
	case s.prev != nil:
		return s.prev.Err()
	}
	return nil
}

// Token is the fencing token of the current hold, 0 when none: the number
// of acquisitions of its slot. Tokens grow per slot (Slot says which), not
// across the semaphore, whose holders run at the same time anyway: a
// resource that fences per slot refuses a holder of that slot that lost it.
func (s *Semaphore) Token() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil {
		return 0
	}
	return s.cur.Token()
}

// Slot is the number of the slot held, -1 when none.
func (s *Semaphore) Slot() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.Token() == 0 {
		return -1
	}
	return s.cur.slotNum
}

// Acquire takes a slot of the semaphore, waiting as long as ctx allows (a
// deadline is the timeout). If ctx ends first, the error matches ErrLocked
// and wraps ctx's error, and nothing is left held. A missing semaphore is
// created with WithLimit's limit. Transient failures are retried as for
// Mutex.Lock.
func (s *Semaphore) Acquire(ctx context.Context) error { return s.acquire(ctx, true) }

// TryAcquire makes one decision: it takes a slot if one is free, and
// otherwise returns an error matching ErrLocked (a *SemaphoreFullError).
func (s *Semaphore) TryAcquire(ctx context.Context) error { return s.acquire(ctx, false) }

func (s *Semaphore) acquire(ctx context.Context, wait bool) (err error) {
	s.op.Lock()
	defer s.op.Unlock()
	start := s.c.clock.Now()
	if wait {
		s.c.metrics.Waiting(s.namespace, s.name, 1)
		defer s.c.metrics.Waiting(s.namespace, s.name, -1)
	}
	defer func() { s.c.metrics.Acquire(s.namespace, s.name, acquireResult(err), s.c.clock.Since(start)) }()
	s.mu.Lock()
	if s.cur != nil && s.cur.Err() == nil {
		s.mu.Unlock()
		return fmt.Errorf("semaphore %s/%s: holder %q: %w", s.namespace, s.name, s.tmpl.holder, ErrAlreadyHeld)
	}
	if s.cur != nil {
		s.prev, s.cur = s.cur, nil
	}
	s.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	rt := s.tmpl.newRetrier("acquiring the semaphore")
	var (
		seen     sightings
		lw       *leaseWatch
		lastFull *SemaphoreFullError
		notified string
	)
	defer func() {
		if lw != nil {
			lw.stop()
		}
	}()
	fail := func(err error) error {
		if rt.failing() && (isTransient(err) || ctx.Err() != nil) {
			return fmt.Errorf("semaphore %s/%s: gave up retrying after %s of failures: %w",
				s.namespace, s.name, s.c.clock.Since(rt.since).Round(time.Millisecond), rt.last)
		}
		if cerr := ctx.Err(); cerr != nil && lastFull != nil {
			lastFull.cause = cerr
			return lastFull
		}
		return err
	}
	for {
		sem, slots, rv, err := s.read(ctx)
		if errors.Is(err, ErrNotFound) && s.tmpl.createLimit > 0 {
			if _, _, err = s.c.CreateSemaphore(ctx, s.namespace, s.name, SemaphoreOptions{Limit: s.tmpl.createLimit, TTL: s.tmpl.createTTL, Fair: s.tmpl.createFair}); err == nil {
				continue
			}
		}
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return fmt.Errorf("semaphore %s/%s does not exist (create it, or give Acquire a limit with WithLimit): %w", s.namespace, s.name, err)
			}
			if rt.wait(ctx, err) {
				continue
			}
			return fail(err)
		}
		rt.reset()
		if s.tmpl.requireLimit && sem.limit != s.tmpl.createLimit {
			return fmt.Errorf("semaphore %s/%s has limit %d, not %d as required; nothing changed: %w",
				s.namespace, s.name, sem.limit, s.tmpl.createLimit, ErrLimitConflict)
		}
		if s.tmpl.requireTTL && sem.ttl != s.tmpl.createTTL {
			return fmt.Errorf("semaphore %s/%s has TTL %s, not %s as required; nothing changed: %w",
				s.namespace, s.name, ttlString(sem.ttl), ttlString(s.tmpl.createTTL), ErrTTLConflict)
		}
		now := s.c.clock.Now()
		st := s.status(sem, slots, &seen, now)
		for _, r := range slots {
			// An unconfirmed handoff to this identity is not a hold: it
			// went to a wait of it that has ended (two releasers handed it
			// a slot at once), and it is passed on or runs out.
			if r.held() && r.holder == s.tmpl.holder && r.handoff == nil && !s.expired(r, &seen, now) {
				return fmt.Errorf("semaphore %s/%s: holder %q holds slot %d through another handle or process: %w",
					s.namespace, s.name, s.tmpl.holder, r.slot, ErrAlreadyHeld)
			}
		}
		if sem.fair {
			return s.acquireFair(ctx, wait, sem, slots)
		}
		done, err := s.takeAny(ctx, slots, &seen, now)
		if done {
			return nil
		}
		if err != nil {
			if rt.wait(ctx, err) {
				continue
			}
			return fail(err)
		}
		lastFull = &SemaphoreFullError{Status: st}
		if !wait {
			return lastFull
		}
		if key := fmt.Sprint(st.holderNames()); key != notified && s.tmpl.onSemWait != nil {
			notified = key
			s.tmpl.onSemWait(st)
		}
		if lw == nil {
			lw = newSelectorWatch(s.c, s.namespace, slotSelector(s.name))
		}
		if err := s.waitChange(ctx, lw, rv, slots, &seen, nil); err != nil {
			if rt.wait(ctx, err) {
				continue
			}
			return fail(err)
		}
	}
}

// read reads the semaphore and lists its slots (two requests).
func (s *Semaphore) read(ctx context.Context) (*semaphore, []*record, string, error) {
	l, err := s.c.leases.Leases(s.namespace).Get(ctx, s.name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil, "", &NotFoundError{Namespace: s.namespace, Name: s.name, Kind: "semaphore"}
	}
	if err != nil {
		return nil, nil, "", semError("get", s.namespace, s.name, -1, err)
	}
	sem, err := decodeSemaphore(l)
	if err != nil {
		return nil, nil, "", err
	}
	slots, rv, err := s.c.listSlots(ctx, s.namespace, s.name)
	return sem, slots, rv, err
}

// listSlots lists the valid slots of semaphore namespace/name in order of
// their numbers, and the list's resourceVersion.
func (c *Client) listSlots(ctx context.Context, namespace, name string) ([]*record, string, error) {
	list, err := c.leases.Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: slotSelector(name)})
	if err != nil {
		return nil, "", semError("list", namespace, name, -1, err)
	}
	var slots []*record
	for i := range list.Items {
		if r, err := decodeSlot(&list.Items[i], name); err == nil {
			slots = append(slots, r)
		}
	}
	sort.Slice(slots, func(i, j int) bool { return slots[i].slot < slots[j].slot })
	return slots, list.ResourceVersion, nil
}

// takeAny tries the free slots in a random order, each with one
// conditional write. A slot may be taken only while no retired slot is
// held: after the limit was lowered, holders of slots beyond it are not
// evicted, and nobody joins them until they have gone. That keeps the
// holders within the new limit without counting them, which no single
// write could make safe; a retired slot only ever loses its holder.
func (s *Semaphore) takeAny(ctx context.Context, slots []*record, seen *sightings, now time.Time) (bool, error) {
	var free []*record
	for _, r := range slots {
		live := r.held() && !s.expired(r, seen, now)
		if r.retired && live {
			return false, nil
		}
		if !r.retired && (!live || r.holder == s.tmpl.holder) {
			free = append(free, r)
		}
	}
	// A random order spreads contenders over the free slots.
	rand.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
	for _, r := range free {
		h := s.slot(r.slot)
		h.hintWith(r, seen.see(r.lease.Name, r.lease.ResourceVersion, now))
		err := h.TryLock(ctx)
		switch {
		case err == nil:
			s.mu.Lock()
			s.cur = h
			s.mu.Unlock()
			return true, nil
		case errors.Is(err, ErrLocked), errors.Is(err, ErrNotFound), errors.Is(err, ErrAlreadyHeld):
			continue // someone else got there first
		default:
			return false, err
		}
	}
	return false, nil
}

// expired reports whether a held slot's TTL has run out.
func (s *Semaphore) expired(r *record, seen *sightings, now time.Time) bool {
	return s.c.expired(r, seen.see(r.lease.Name, r.lease.ResourceVersion, now))
}

// waitChange waits until a slot changes, a held slot's TTL (or an
// unconfirmed handoff) could have run out, interrupt closes, or ctx ends.
// Without watch, it polls.
func (s *Semaphore) waitChange(ctx context.Context, lw *leaseWatch, rv string, slots []*record, seen *sightings, interrupt <-chan struct{}) error {
	clk := s.c.clock
	if lw.w == nil && !lw.forbidden {
		if err := lw.start(ctx, rv); err != nil {
			return err
		}
	}
	var timers []clock.Timer
	defer func() {
		for _, t := range timers {
			t.Stop()
		}
	}()
	arm := func(d time.Duration) <-chan time.Time {
		t := clk.NewTimer(max(d, 0))
		timers = append(timers, t)
		return t.C()
	}
	var wake time.Time
	for _, r := range slots {
		first := seen.see(r.lease.Name, r.lease.ResourceVersion, clk.Now())
		var ats []time.Time
		if r.held() && r.ttl > 0 {
			ats = append(ats, r.expiry(first).TakeoverAt(s.c.server))
		}
		if r.handoff != nil {
			ats = append(ats, ttl.Expiry{TTL: r.handoff.ttl, FirstSeen: first, LastWrite: r.lastWrite}.TakeoverAt(s.c.server))
		}
		for _, at := range ats {
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
		}
	}
	var wakeC, pollC <-chan time.Time
	if !wake.IsZero() {
		wakeC = arm(wake.Sub(clk.Now()))
	}
	if lw.w == nil {
		pollC = arm(jitter(s.c.pollInterval))
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-interrupt:
			return nil
		case <-wakeC:
			return nil
		case <-pollC:
			return nil
		case ev, ok := <-lw.events():
			if ok && ev.Type == watch.Bookmark {
				_, _ = lw.handle(ev, ok)
				continue
			}
			if _, again := lw.handle(ev, ok); again && lw.w != nil {
				continue
			}
			return nil
		}
	}
}

// Release gives back the slot held (see Mutex.Unlock); on a fair
// semaphore it hands the slot to the next waiter. It returns an error
// wrapping ErrNotHeld when nothing is held, changing nothing.
func (s *Semaphore) Release(ctx context.Context) error {
	s.op.Lock()
	defer s.op.Unlock()
	s.mu.Lock()
	h := s.cur
	s.mu.Unlock()
	if h == nil {
		return s.releaseByIdentity(ctx)
	}
	err := h.Unlock(ctx)
	if err == nil || errors.Is(err, ErrNotHeld) {
		// Released, or not held any more: either way the hold is over. A
		// failed release keeps it (its keeper runs on).
		s.mu.Lock()
		s.prev, s.cur = h, nil
		s.mu.Unlock()
	}
	return err
}

// releaseByIdentity releases the slot that this handle's holder identity
// holds, for a handle that did not acquire it (the CLI's release command).
func (s *Semaphore) releaseByIdentity(ctx context.Context) error {
	_, slots, _, err := s.read(ctx)
	if err != nil {
		return err
	}
	for _, r := range slots {
		if r.held() && r.holder == s.tmpl.holder {
			return s.slot(r.slot).Unlock(ctx)
		}
	}
	return &NotHeldError{Namespace: s.namespace, Name: s.name, Holder: s.tmpl.holder, Exists: true, Kind: "semaphore"}
}

// abandonHold gives up the slot held after With's release failed for good
// (see Mutex.abandonHold).
func (s *Semaphore) abandonHold(cause error) {
	s.mu.Lock()
	h := s.cur
	s.mu.Unlock()
	if h != nil {
		h.abandonHold(cause)
	}
}

// With runs fn while holding a slot, as Mutex.With does.
func (s *Semaphore) With(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := s.Acquire(ctx); err != nil {
		return err
	}
	return runHeld(ctx, s, s.Release, s.abandonHold, max(s.tmpl.cleanupTimeout, s.tmpl.retryTimeout), s.log, fn)
}

// hintWith makes r, first seen at seen, the next Lock's hint: the
// semaphore read it just now, so the take needs no read of its own.
func (m *Mutex) hintWith(r *record, seen time.Time) {
	m.mu.Lock()
	m.last = r
	m.mu.Unlock()
	m.hintSeen = seen
}

// status renders a semaphore for users.
func (s *Semaphore) status(sem *semaphore, slots []*record, seen *sightings, now time.Time) SemaphoreStatus {
	return s.c.semaphoreStatus(sem, slots, seen, now)
}
