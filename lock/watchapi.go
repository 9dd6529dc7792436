package lock

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/utils/clock"
)

// WatchEvent is one change of a watched mutex.
type WatchEvent struct {
	// Status is the mutex as it is now; for a deletion, as it was last
	// seen.
	Status Status
	// Deleted: the mutex's Lease was deleted. Watching goes on: a mutex
	// created again under the same name is reported again.
	Deleted bool
}

// Watch calls fn with the status of the mutex namespace/name, at once and
// then on every change, until ctx ends (it returns ctx's error) or fn
// returns an error (it returns that error). It changes nothing.
//
// A change is a write to the mutex's Lease (a lock, renewal, unlock,
// handoff, force-unlock, deletion), and the moment a holder's TTL has
// provably run out (Phase turns PhaseExpired, judged as a waiter judges it:
// see package ttl), which no write marks. The waiters of a fair mutex
// (Status.Waiters) are read again whenever the mutex or its queue changes:
// a waiter that joins or leaves is reported at once; one whose process
// died is reported until it is passed over and its entry deleted. Reading
// them needs the list verb on leases; without it they are left out, and
// the mutex is watched all the same.
//
// Watch follows the Lease with one watch, resumed where it stopped after
// an outage; a fair mutex adds one on its queue. Without the RBAC verb
// watch it polls (WithPollInterval). A mutex that does not exist, or a
// Lease that is not a mutex, is an error before fn is called; failures
// after that are retried until ctx ends.
func (c *Client) Watch(ctx context.Context, namespace, name string, fn func(WatchEvent) error) error {
	if err := validateRef(namespace, name); err != nil {
		return err
	}
	w := newStatusWatch(c, namespace, fn)
	w.name = name
	w.mutexes = newLeaseWatch(c, namespace, name)
	return w.run(ctx)
}

// WatchList is Watch for every mutex in namespace ("": all namespaces)
// that List would return (it takes List's options): fn gets each one at
// once, in List's order, and then every change of any of them, including
// mutexes created after the start. Labelled Leases that are not valid
// mutexes are reported with PhaseInvalid, as List reports them.
func (c *Client) WatchList(ctx context.Context, namespace string, fn func(WatchEvent) error, opts ...ListOption) error {
	if namespace != "" {
		if err := ValidateNamespace(namespace); err != nil {
			return err
		}
	}
	var o listOptions
	for _, opt := range opts {
		opt(&o)
	}
	sel, err := mutexSelector(o.selector)
	if err != nil {
		return err
	}
	w := newStatusWatch(c, namespace, fn)
	w.listOpts = opts
	w.mutexes = newSelectorWatch(c, namespace, sel)
	return w.run(ctx)
}

// mutexSelector is the label selector of List: the mutex label, and what
// extra requires.
func mutexSelector(extra labels.Selector) (string, error) {
	kind, err := labels.NewRequirement(LabelKind, selection.Equals, []string{KindMutex})
	if err != nil {
		return "", invalid(fmt.Errorf("mutex label selector: %w", err))
	}
	sel := labels.NewSelector()
	if extra != nil {
		reqs, selectable := extra.Requirements()
		if !selectable {
			return "", invalid(errors.New("the label selector matches nothing"))
		}
		sel = sel.Add(reqs...)
	}
	return sel.Add(*kind).String(), nil
}

// statusWatch is the state of one Watch or WatchList call.
type statusWatch struct {
	c         *Client
	namespace string
	// name is the mutex of Watch; empty for WatchList.
	name     string
	listOpts []ListOption
	fn       func(WatchEvent) error
	// mutexes follows the mutex Lease (Watch) or every mutex Lease the
	// selector selects (WatchList); entries, once a fair mutex was seen,
	// their queue entries.
	mutexes, entries *leaseWatch
	items            map[string]*watched
	// started: the first read succeeded. Failures before it are the
	// caller's; after it, they are retried.
	started bool
	// stop is the error fn returned, which ends the call.
	stop error
}

// emit reports ev to fn.
func (w *statusWatch) emit(ev WatchEvent) error {
	if err := w.fn(ev); err != nil {
		w.stop = err
		return err
	}
	return nil
}

// watched is what a statusWatch knows of one mutex.
type watched struct {
	st Status
	// rec is the record st was made from; nil for an invalid Lease, or
	// when polling (st then comes from List).
	rec *record
	// seen is when this version of the Lease was first seen (rule (a) of
	// package ttl).
	seen time.Time
	// queueRV is the resourceVersion of the queue read that st.Waiters
	// come from; a queue event no newer is in them already.
	queueRV string
}

func newStatusWatch(c *Client, namespace string, fn func(WatchEvent) error) *statusWatch {
	return &statusWatch{c: c, namespace: namespace, fn: fn, items: map[string]*watched{}}
}

func (w *statusWatch) run(ctx context.Context) error {
	defer w.mutexes.stop()
	defer func() {
		if w.entries != nil {
			w.entries.stop()
		}
	}()
	if err := w.read(ctx); err != nil {
		return err
	}
	w.started = true
	clk := w.c.clock
	for {
		if err := w.startWatches(ctx, false); err != nil {
			return err
		}
		var timers []clock.Timer
		arm := func(d time.Duration) <-chan time.Time {
			t := clk.NewTimer(max(d, 0))
			timers = append(timers, t)
			return t.C()
		}
		var expiryC, pollC, retryC <-chan time.Time
		if at, ok := w.nextExpiry(); ok {
			expiryC = arm(at.Sub(clk.Now()))
		}
		entries := w.entriesWatch()
		switch {
		case w.mutexes.forbidden:
			pollC = arm(jitter(w.c.pollInterval))
		case w.mutexes.w == nil || (entries.w == nil && !entries.forbidden && w.entries != nil):
			retryC = arm(max(w.mutexes.retryAfter(), entries.retryAfter()))
		}
		var err error
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-expiryC:
			err = w.refreshExpired()
		case <-pollC:
			err = w.reread(ctx)
		case <-retryC:
			err = w.startWatches(ctx, true)
		case ev, ok := <-w.mutexes.events():
			if res, again := w.mutexes.handle(ev, ok); !again {
				err = w.mutexEvent(ctx, res)
			}
		case ev, ok := <-entries.events():
			if res, again := entries.handle(ev, ok); !again {
				err = w.entryEvent(ctx, res)
			}
		}
		for _, t := range timers {
			t.Stop()
		}
		if err != nil {
			return err
		}
	}
}

// entriesWatch is the queue's watch, or, before a fair mutex was seen, a
// closed one that yields nothing.
func (w *statusWatch) entriesWatch() *leaseWatch {
	if w.entries == nil {
		return &leaseWatch{}
	}
	return w.entries
}

// startWatches opens the watches that are down: those that closed cleanly,
// or, when retry is set, also those whose last start failed (the backoff
// has passed). A watch of the mutexes that lost its place (rv "") first
// reads them anew, so that nothing that changed meanwhile goes unreported.
func (w *statusWatch) startWatches(ctx context.Context, retry bool) error {
	for _, lw := range []*leaseWatch{w.mutexes, w.entries} {
		if lw == nil || lw.w != nil || lw.forbidden || (lw.failed > 0 && !retry) {
			continue
		}
		if lw == w.mutexes && lw.rv == "" {
			failed := lw.failed
			if err := w.reread(ctx); err != nil {
				return err
			}
			if lw.failed > failed {
				continue // the read failed: both are retried after the backoff
			}
		}
		if err := lw.start(ctx, lw.rv); err != nil {
			return err
		}
		if lw.w != nil {
			lw.failed = 0
		}
	}
	return nil
}

// reread reads the watched mutexes anew and reports what changed, gone
// ones included. A failure is retried with the watch's backoff.
func (w *statusWatch) reread(ctx context.Context) error {
	err := w.read(ctx)
	if err == nil || ctx.Err() != nil || w.stop != nil {
		return err
	}
	w.c.log.V(1).Info("reading the watched mutexes failed; retrying", "namespace", w.namespace, "name", w.name, "error", err.Error())
	w.mutexes.failed++
	return nil
}

func (w *statusWatch) read(ctx context.Context) error {
	seen := w.c.clock.Now()
	if w.name != "" {
		key := w.namespace + "/" + w.name
		r, err := w.c.get(ctx, w.namespace, w.name)
		var nf *NotFoundError
		switch {
		case errors.As(err, &nf) && w.started:
			// Deleted while the watch was down, or still missing after a
			// deletion: the watch restarts from now, and a mutex created
			// again arrives as an Added event.
			return w.gone(key)
		case err != nil:
			return err
		}
		w.mutexes.rv = r.lease.ResourceVersion
		return w.update(ctx, r.lease, r, nil, seen)
	}
	// As List, but keeping the records, for the TTL's expiry, and the
	// list's resourceVersion, from which the watch follows it.
	leases, rv, err := w.c.listLeases(ctx, w.namespace, w.mutexes.labelSelector)
	if err != nil {
		return err
	}
	present := map[string]bool{}
	for _, l := range leases {
		present[l.Namespace+"/"+l.Name] = true
		r, derr := decode(l)
		if err := w.update(ctx, l, r, derr, seen); err != nil {
			return err
		}
	}
	for _, key := range slices.Sorted(maps.Keys(w.items)) {
		if !present[key] {
			if err := w.gone(key); err != nil {
				return err
			}
		}
	}
	w.mutexes.rv = rv
	return nil
}

// listLeases lists the Leases in namespace that selector selects, sorted by
// namespace and name, and returns the list's resourceVersion.
func (c *Client) listLeases(ctx context.Context, namespace, selector string) ([]*coordinationv1.Lease, string, error) {
	var out []*coordinationv1.Lease
	opts := metav1.ListOptions{LabelSelector: selector, Limit: listPageSize}
	for {
		list, err := c.leases.Leases(namespace).List(ctx, opts)
		if err != nil {
			return nil, "", listError(namespace, err)
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
		if list.Continue == "" {
			slices.SortFunc(out, func(a, b *coordinationv1.Lease) int {
				return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
			})
			return out, list.ResourceVersion, nil
		}
		opts.Continue = list.Continue
	}
}

// newer reports whether resourceVersion a is newer than b; versions that
// do not compare as integers count as newer when they differ.
func newer(a, b string) bool {
	n, err := resourceversion.CompareResourceVersion(a, b)
	if err != nil {
		return a != b
	}
	return n > 0
}

// mutexEvent handles one event of the mutexes' watch.
func (w *statusWatch) mutexEvent(ctx context.Context, res watchResult) error {
	switch {
	case res.lease != nil:
		key := res.lease.Namespace + "/" + res.lease.Name
		if old, ok := w.items[key]; ok && !newer(res.lease.ResourceVersion, old.st.ResourceVersion) {
			return nil // replayed after a restart: known already
		}
		r, err := decode(res.lease)
		return w.update(ctx, res.lease, r, err, w.c.clock.Now())
	case res.gone != nil:
		return w.gone(res.gone.Namespace + "/" + res.gone.Name)
	case res.deleted:
		// The watch of one Lease stops at its deletion; it restarts from
		// now, and a Lease created again arrives as an Added event.
		return w.gone(w.namespace + "/" + w.name)
	}
	return w.reread(ctx) // the watch lost its place
}

// entryEvent handles one event of the queue's watch: the waiters of the
// entry's mutex are read again, unless the event is in them already.
func (w *statusWatch) entryEvent(ctx context.Context, res watchResult) error {
	l := res.lease
	if l == nil {
		l = res.gone
	}
	if l == nil {
		// Lost its place: every fair mutex's queue is read again.
		for _, key := range slices.Sorted(maps.Keys(w.items)) {
			if it := w.items[key]; it.st.Fair {
				if err := w.refreshWaiters(ctx, key, ""); err != nil {
					return err
				}
			}
		}
		return nil
	}
	key := l.Namespace + "/" + l.Annotations[AnnotationMutex]
	return w.refreshWaiters(ctx, key, l.ResourceVersion)
}

// refreshWaiters reads the waiters of the known fair mutex key again and
// reports them if they changed; rv is the queue event's version ("" for
// none): a read that saw it already is not repeated.
func (w *statusWatch) refreshWaiters(ctx context.Context, key, rv string) error {
	it, ok := w.items[key]
	if !ok || !it.st.Fair || (rv != "" && it.queueRV != "" && !newer(rv, it.queueRV)) {
		return nil
	}
	waiters, qrv, err := w.c.liveWaiters(ctx, it.st.Namespace, it.st.Name)
	if err != nil {
		w.c.log.V(1).Info("reading the queue of a watched mutex failed", "mutex", key, "error", err.Error())
		return nil // read again on its next change
	}
	it.queueRV = qrv
	if slices.Equal(waiters, it.st.Waiters) {
		return nil
	}
	it.st.Waiters = waiters
	return w.emit(WatchEvent{Status: it.st})
}

// update records version l of a mutex, first seen at seen, and reports it
// if it changed: r is its record, or nil when decoding it failed with
// derr (a Lease that is not a valid mutex is reported with PhaseInvalid).
func (w *statusWatch) update(ctx context.Context, l *coordinationv1.Lease, r *record, derr error, seen time.Time) error {
	key := l.Namespace + "/" + l.Name
	old := w.items[key]
	it := &watched{rec: r, seen: seen}
	if old != nil && old.st.ResourceVersion == l.ResourceVersion {
		it.seen = old.seen
	}
	if r == nil {
		var nm *NotMutexError
		if !errors.As(derr, &nm) {
			return derr
		}
		it.st = Status{Namespace: l.Namespace, Name: l.Name, Phase: PhaseInvalid, Reason: nm.Reason, ResourceVersion: l.ResourceVersion}
	} else {
		it.st = r.status(w.c.expired(r, it.seen))
		if r.fair {
			w.watchQueue()
			waiters, qrv, err := w.c.liveWaiters(ctx, l.Namespace, l.Name)
			switch {
			case err == nil:
				it.st.Waiters, it.queueRV = waiters, qrv
			default:
				// Without the list verb (or during an outage) the mutex is
				// still watched; only its waiters are not known anew.
				w.c.log.V(1).Info("reading the queue of a watched mutex failed", "mutex", key, "error", err.Error())
				if old != nil {
					it.st.Waiters, it.queueRV = old.st.Waiters, old.queueRV
				}
			}
		}
	}
	w.items[key] = it
	if old != nil && old.st.ResourceVersion == it.st.ResourceVersion && old.st.Phase == it.st.Phase && slices.Equal(old.st.Waiters, it.st.Waiters) {
		return nil
	}
	return w.emit(WatchEvent{Status: it.st})
}

// gone reports the deletion of the known mutex key.
func (w *statusWatch) gone(key string) error {
	it, ok := w.items[key]
	if !ok {
		return nil
	}
	delete(w.items, key)
	return w.emit(WatchEvent{Status: it.st, Deleted: true})
}

// watchQueue starts following queue entries, once a fair mutex is known.
func (w *statusWatch) watchQueue() {
	if w.entries != nil {
		return
	}
	sel := labels.SelectorFromSet(labels.Set{LabelKind: KindWaiter}).String()
	if w.name != "" {
		sel = queueSelector(w.name)
	}
	w.entries = newSelectorWatch(w.c, w.namespace, sel)
	// From now: the entries that exist are in the waiters read with the
	// mutex, and their synthetic Added events are no newer than that read.
}

// nextExpiry is the earliest time at which a held mutex's TTL will have
// provably run out, as a waiter judges it.
func (w *statusWatch) nextExpiry() (time.Time, bool) {
	var at time.Time
	for _, it := range w.items {
		if it.rec == nil || it.st.Phase != PhaseLocked || it.rec.ttl <= 0 {
			continue
		}
		t := it.rec.expiry(it.seen).TakeoverAt(w.c.server)
		if at.IsZero() || t.Before(at) {
			at = t
		}
	}
	return at, !at.IsZero()
}

// refreshExpired reports the mutexes whose TTL has run out since they
// were seen, in name order.
func (w *statusWatch) refreshExpired() error {
	for _, key := range slices.Sorted(maps.Keys(w.items)) {
		it := w.items[key]
		if it.rec == nil || it.st.Phase != PhaseLocked || !w.c.expired(it.rec, it.seen) {
			continue
		}
		it.st.Phase = PhaseExpired
		if err := w.emit(WatchEvent{Status: it.st}); err != nil {
			return err
		}
	}
	return nil
}

// liveWaiters is the holder identities of the live waiters of the fair
// mutex namespace/name, oldest first, as Get reads them, and the
// resourceVersion of the queue's list.
func (c *Client) liveWaiters(ctx context.Context, namespace, name string) ([]string, string, error) {
	q, err := c.listQueue(ctx, namespace, name)
	if err != nil {
		return nil, "", err
	}
	live, _, err := c.judgeEntries(ctx, namespace, q.entries, &sightings{}, "")
	if err != nil {
		return nil, "", err
	}
	var out []string
	for _, e := range live {
		out = append(out, e.holder)
	}
	return out, q.rv, nil
}
