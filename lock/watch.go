package lock

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/clock"
)

// leaseWatch follows one Lease through a watch, restarting it from the last
// seen resourceVersion when it ends, and reporting when watching is
// forbidden so that the caller can poll instead.
type leaseWatch struct {
	c         *Client
	namespace string
	// name is the one Lease followed; with a label selector instead,
	// every Lease it selects is.
	name          string
	labelSelector string
	w             watch.Interface
	// rv is where a restarted watch resumes: the newest resourceVersion
	// seen in an event or bookmark.
	rv        string
	forbidden bool
	backoff   wait.Backoff
	// failed counts watch failures in a row, for the backoff.
	failed int
	// quiet: the open watch has delivered nothing yet.
	quiet bool
}

func newLeaseWatch(c *Client, namespace, name string) *leaseWatch {
	return &leaseWatch{
		c: c, namespace: namespace, name: name,
		// Restarting a failed watch: quick at first, at most every 5s.
		backoff: wait.Backoff{Duration: 100 * time.Millisecond, Factor: 2, Jitter: 0.5, Steps: 7, Cap: 5 * time.Second},
	}
}

// newSelectorWatch follows every Lease in namespace that the label
// selector selects.
func newSelectorWatch(c *Client, namespace, selector string) *leaseWatch {
	lw := newLeaseWatch(c, namespace, "")
	lw.labelSelector = selector
	return lw
}

// start opens the watch from resourceVersion rv unless it is open. It
// returns an error only for a watch that cannot work: forbidden (then
// forbidden is set), or a context that ended.
func (lw *leaseWatch) start(ctx context.Context, rv string) error {
	if lw.w != nil || lw.forbidden {
		return nil
	}
	opts := metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}
	if lw.labelSelector != "" {
		opts.LabelSelector = lw.labelSelector
	} else {
		opts.FieldSelector = fields.OneTermEqualSelector("metadata.name", lw.name).String()
	}
	w, err := lw.c.leases.Leases(lw.namespace).Watch(ctx, opts)
	if err != nil {
		if apierrors.IsForbidden(err) {
			lw.forbidden = true
			lw.c.log.V(1).Info("watching leases is forbidden, polling instead", "namespace", lw.namespace, "name", lw.name, "interval", lw.c.pollInterval)
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		lw.failed++
		lw.c.log.V(2).Info("watch failed", "namespace", lw.namespace, "name", lw.name, "error", err.Error())
		return nil
	}
	lw.rv = rv
	lw.w = w
	lw.quiet = true
	return nil
}

// events is the open watch's channel, nil (blocks forever) when there is
// none.
func (lw *leaseWatch) events() <-chan watch.Event {
	if lw.w == nil {
		return nil
	}
	return lw.w.ResultChan()
}

// retryAfter is how long to wait before restarting a failed watch; zero
// when nothing failed.
func (lw *leaseWatch) retryAfter() time.Duration {
	if lw.failed == 0 {
		return 0
	}
	b := lw.backoff
	b.Steps = min(lw.failed, b.Steps)
	var d time.Duration
	for b.Steps > 0 {
		d = b.Step()
	}
	return d
}

func (lw *leaseWatch) stop() {
	if lw.w != nil {
		lw.w.Stop()
		lw.w = nil
	}
}

// watchResult is what one watch event means to a caller.
type watchResult struct {
	// lease is the new state (Added/Modified); nil otherwise.
	lease *coordinationv1.Lease
	// deleted: the Lease was deleted. For a selector watch, gone is the
	// deleted Lease instead, and the watch goes on.
	deleted bool
	gone    *coordinationv1.Lease
	// reread: the watch cannot resume (410 Gone, or an error event); read
	// the Lease again.
	reread bool
}

// handle interprets one event, or a closed channel (ok false).
func (lw *leaseWatch) handle(ev watch.Event, ok bool) (res watchResult, again bool) {
	if !ok {
		// The server ends watches now and then; resume where we were. A
		// watch that ends before saying anything counts as a failure, so
		// that a server that keeps closing them is not hammered.
		lw.w = nil
		if lw.quiet {
			lw.failed++
		}
		return watchResult{}, true
	}
	lw.quiet = false
	switch ev.Type {
	case watch.Added, watch.Modified:
		l, isLease := ev.Object.(*coordinationv1.Lease)
		if !isLease || (lw.labelSelector == "" && l.Name != lw.name) {
			// Not the Lease watched (a server, or a fake, that does not
			// apply the field selector): not ours to judge.
			return watchResult{}, true
		}
		lw.failed = 0
		lw.rv = l.ResourceVersion
		return watchResult{lease: l}, false
	case watch.Deleted:
		if l, isLease := ev.Object.(*coordinationv1.Lease); isLease && lw.labelSelector == "" && l.Name != lw.name {
			return watchResult{}, true
		}
		if l, isLease := ev.Object.(*coordinationv1.Lease); isLease && lw.labelSelector != "" {
			lw.rv = l.ResourceVersion
			return watchResult{gone: l}, false
		}
		lw.stop()
		lw.rv = ""
		return watchResult{deleted: true}, false
	case watch.Bookmark:
		if acc, err := meta.Accessor(ev.Object); err == nil {
			lw.rv = acc.GetResourceVersion()
		}
		return watchResult{}, true
	default: // watch.Error
		err := apierrors.FromObject(ev.Object)
		lw.c.log.V(2).Info("watch error event", "namespace", lw.namespace, "name", lw.name, "error", err.Error())
		lw.stop()
		lw.rv = ""
		if !apierrors.IsGone(err) && !apierrors.IsResourceExpired(err) {
			lw.failed++
		}
		return watchResult{reread: true}, false
	}
}

// acquirer is the state of one Lock or TryLock call.
type acquirer struct {
	m    *Mutex
	wait bool
	lw   *leaseWatch
	// obsRV and obsAt: the resourceVersion last observed and the local
	// time it was first observed (rule (a) of package ttl).
	obsRV string
	obsAt time.Time
	// lastHeld is the last record seen held by someone else.
	lastHeld *record
	notified string
	// wakeAt, if set, also ends a wait in next (which then returns the
	// record it was given); interrupt, if set, does the same when it
	// closes. The queue protocol uses them for its own deadlines.
	wakeAt    time.Time
	interrupt <-chan struct{}
	// retry paces retries after transient failures.
	retry *retrier
	// unknown is an acquiring write of this call whose outcome is not
	// known yet; nil if none.
	unknown *attempt
	// cleanupBy ends the requests made after the caller's context ended
	// (zero until the first of them).
	cleanupBy time.Time
}

// cleanupCtx is the context of requests that must be made whatever ctx
// says: releasing what an unanswered write may have taken, leaving the
// queue. Once ctx has ended they share one budget of the cleanup timeout,
// counted from the first of them, so that Lock returns at most that long
// after its context ends however many of them it makes; before, each gets
// the cleanup timeout of its own.
func (a *acquirer) cleanupCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return context.WithTimeout(context.WithoutCancel(ctx), a.m.cleanupTimeout)
	}
	if a.cleanupBy.IsZero() {
		// Real time, as the caller's context counts it: a.m.c.clock may be
		// a fake or skewed one (WithClock).
		a.cleanupBy = time.Now().Add(a.m.cleanupTimeout)
	}
	return context.WithDeadline(context.WithoutCancel(ctx), a.cleanupBy)
}

// observe notes that r was seen now and returns when its version was first
// seen.
func (a *acquirer) observe(r *record) time.Time {
	if r.lease.ResourceVersion != a.obsRV {
		a.obsRV = r.lease.ResourceVersion
		a.obsAt = a.m.c.clock.Now()
	}
	if r.held() && r.holder != a.m.holder {
		a.lastHeld = r
	}
	return a.obsAt
}

func (a *acquirer) read(ctx context.Context) (*record, error) {
	return a.m.get(ctx)
}

func (a *acquirer) watching() bool { return a.lw != nil && a.lw.w != nil }

func (a *acquirer) stop() {
	if a.lw != nil {
		a.lw.stop()
	}
}

// notify tells the WithWaitNotify function whom Lock waits for, once per
// holder.
func (a *acquirer) notify(r *record) {
	if a.m.onWait == nil || r.holder == a.notified {
		return
	}
	a.notified = r.holder
	a.m.onWait(r.status(false))
}

// fail ends a Lock call with err. It first releases what a write of this
// call whose outcome is unknown may have taken. A call that ran out of time
// while the API server was failing reports that failure, not ErrLocked:
// nobody may hold the mutex at all.
func (a *acquirer) fail(ctx context.Context, err error) error {
	cleanup := a.m.abandon(ctx, a)
	switch {
	case a.retry.failing():
		err = fmt.Errorf("mutex %s/%s: gave up retrying after %s of failures: %w",
			a.m.namespace, a.m.name, a.m.c.clock.Since(a.retry.since).Round(time.Millisecond), a.retry.last)
	default:
		err = a.ctxErr(ctx, err)
	}
	if cleanup != nil {
		return errors.Join(err, cleanup)
	}
	return err
}

// ctxErr turns an error that came from ctx ending into the *LockedError
// that Lock promises, naming whom it waited for.
func (a *acquirer) ctxErr(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && a.lastHeld != nil {
		return a.lastHeld.lockedError(cerr)
	}
	if cerr := ctx.Err(); cerr != nil && errors.Is(err, cerr) {
		return fmt.Errorf("mutex %s/%s: %w", a.m.namespace, a.m.name, cerr)
	}
	return err
}

// next waits until there is something new to decide on: an event on the
// Lease, the TTL of r running out, a poll when watching is forbidden, or
// ctx ending. It returns the newer record, r itself when its TTL ran out,
// or nil when the Lease must be read again (deleted, or the watch lost its
// place).
func (a *acquirer) next(ctx context.Context, r *record) (*record, error) {
	clk := a.m.c.clock
	if a.lw == nil {
		a.lw = newLeaseWatch(a.m.c, a.m.namespace, a.m.name)
	}
	for {
		// Resume from the newest version known: r is what the caller
		// decided on last, newer than or equal to anything watched.
		resume := a.lw.rv
		if r != nil {
			resume = r.lease.ResourceVersion
		}
		if !a.watching() && !a.lw.forbidden && a.lw.failed == 0 {
			if resume == "" {
				return a.read(ctx)
			}
			if err := a.lw.start(ctx, resume); err != nil {
				return nil, err
			}
		}
		var timers []clock.Timer
		arm := func(d time.Duration) <-chan time.Time {
			t := clk.NewTimer(max(d, 0))
			timers = append(timers, t)
			return t.C()
		}
		var expiryC, pollC, retryC <-chan time.Time
		if r != nil && r.held() && r.ttl > 0 {
			expiryC = arm(r.expiry(a.obsAt).TakeoverAt(a.m.c.server).Sub(clk.Now()))
		}
		var wakeC <-chan time.Time
		if !a.wakeAt.IsZero() {
			wakeC = arm(a.wakeAt.Sub(clk.Now()))
		}
		switch {
		case a.lw.forbidden:
			pollC = arm(jitter(a.m.c.pollInterval))
		case !a.watching():
			retryC = arm(a.lw.retryAfter())
		}
		var (
			ev watch.Event
			ok bool
		)
		fired := ""
		select {
		case <-ctx.Done():
			fired = "ctx"
		case <-expiryC:
			fired = "expiry"
		case <-wakeC:
			fired = "expiry"
		case <-a.interrupt:
			fired = "expiry"
		case <-pollC:
			fired = "poll"
		case <-retryC:
			fired = "retry"
		case ev, ok = <-a.lw.events():
			fired = "event"
		}
		for _, t := range timers {
			t.Stop()
		}
		switch fired {
		case "ctx":
			return nil, ctx.Err()
		case "expiry":
			return r, nil
		case "poll":
			return a.read(ctx)
		case "retry":
			if err := a.lw.start(ctx, resume); err != nil {
				return nil, err
			}
			if !a.watching() && !a.lw.forbidden {
				continue
			}
			// Restarted: the Lease may have changed while the watch was
			// down, and a watch resumed from an old resourceVersion
			// replays those changes as events, so just go on waiting.
			a.lw.failed = 0
			continue
		}
		res, again := a.lw.handle(ev, ok)
		if again {
			continue
		}
		switch {
		case res.lease != nil:
			return a.m.decode(res.lease)
		case res.deleted:
			return nil, nil
		default:
			return a.read(ctx)
		}
	}
}

// jitter spreads d over [d, 1.5d) so that pollers do not move in step.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/2+1))
}
