package lock

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/scheme"
	eventsv1client "k8s.io/client-go/kubernetes/typed/events/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
)

// Event reasons, on the Lease of a mutex (or of a semaphore's slot), so
// that `kubectl events --for lease/NAME` and `kubectl describe lease NAME`
// tell its story.
const (
	EventAcquired      = "Acquired"
	EventReleased      = "Released"
	EventTakenOver     = "TakenOver"
	EventForceUnlocked = "ForceUnlocked"
	EventLost          = "Lost"
	// EventReportingController is the controller name the events carry.
	EventReportingController = "konlease.io/lock"
)

// WithEventRecorder makes the client record Kubernetes Events on the
// Leases it locks with rec (client-go's tools/events): acquired (with the
// token), released, taken over after the TTL (naming the previous holder),
// force-unlocked (with whom it evicted) and lost (with the reason).
func WithEventRecorder(rec events.EventRecorder) ClientOption {
	return func(c *Client) { c.events = &eventSink{rec: rec} }
}

// WithEvents makes NewForConfig record those Events itself, through
// client-go's event broadcaster on the same configuration (with its spam
// filter: repeats become a series). An identity that may not create
// events.events.k8s.io records nothing, after one log line at V(1); nothing
// else changes. Client.Close flushes and stops it. NewClient ignores it:
// give it WithEventRecorder.
func WithEvents() ClientOption {
	return func(c *Client) { c.wantEvents = true }
}

// eventSink is where a client's events go.
type eventSink struct {
	rec         events.EventRecorder
	broadcaster events.EventBroadcaster // owned (WithEvents); nil otherwise
	// cancel stops the owned broadcaster's recording goroutines, which its
	// Shutdown leaves running (client-go stops them only with the context
	// given to StartRecordingToSinkWithContext).
	cancel context.CancelFunc
	stop   sync.Once
	// recorded and written count the events recorded and those the owned
	// broadcaster has written (or dropped as a repeat): close waits for
	// the difference, so that a short-lived process loses none.
	recorded, written atomic.Int64
}

// flushTimeout bounds how long close waits for events to be written.
const flushTimeout = 2 * time.Second

// newEventSink builds the broadcaster of WithEvents.
func newEventSink(cfg *rest.Config, c *Client) (*eventSink, error) {
	cs, err := eventsv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("lock.NewForConfig: events client: %w", err)
	}
	e := &eventSink{}
	sink := &quietSink{EventSinkImpl: events.EventSinkImpl{Interface: cs}, c: c, written: &e.written}
	e.broadcaster = events.NewBroadcaster(sink)
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.broadcaster.StartRecordingToSinkWithContext(ctx); err != nil {
		cancel()
		e.broadcaster.Shutdown()
		return nil, fmt.Errorf("lock.NewForConfig: start recording events: %w", err)
	}
	e.cancel = cancel
	// The broadcaster names the instance after the controller and the host.
	e.rec = e.broadcaster.NewRecorder(scheme.Scheme, EventReportingController)
	return e, nil
}

// close waits, within flushTimeout, for the events recorded to be
// written, then stops an owned broadcaster. (A repeat that the
// broadcaster folds into an existing series is never written on its own:
// close then waits the whole timeout, once.)
func (e *eventSink) close() {
	if e == nil || e.broadcaster == nil {
		return
	}
	e.stop.Do(func() {
		deadline := time.Now().Add(flushTimeout)
		for e.written.Load() < e.recorded.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond) // polls the broadcaster's goroutines, which say nothing
		}
		e.broadcaster.Shutdown()
		e.cancel()
	})
}

// quietSink drops events once the API server refused one (RBAC): the
// library must not fill a log with refusals it can do nothing about.
type quietSink struct {
	events.EventSinkImpl
	c        *Client
	disabled atomic.Bool
	written  *atomic.Int64
}

func (q *quietSink) refused(err error) bool {
	if !apierrors.IsForbidden(err) {
		return false
	}
	if !q.disabled.Swap(true) {
		q.c.log.V(1).Info("recording events is forbidden; recording none (grant create and patch on events.events.k8s.io to see them)", "error", err.Error())
	}
	return true
}

func (q *quietSink) Create(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	defer q.written.Add(1)
	if q.disabled.Load() {
		return ev, nil
	}
	out, err := q.EventSinkImpl.Create(ctx, ev)
	if q.refused(err) {
		return ev, nil
	}
	return out, err
}

func (q *quietSink) Update(ctx context.Context, ev *eventsv1.Event) (*eventsv1.Event, error) {
	if q.disabled.Load() {
		return ev, nil
	}
	out, err := q.EventSinkImpl.Update(ctx, ev)
	if q.refused(err) {
		return ev, nil
	}
	return out, err
}

func (q *quietSink) Patch(ctx context.Context, ev *eventsv1.Event, data []byte) (*eventsv1.Event, error) {
	defer q.written.Add(1)
	if q.disabled.Load() {
		return ev, nil
	}
	out, err := q.EventSinkImpl.Patch(ctx, ev, data)
	if q.refused(err) {
		return ev, nil
	}
	return out, err
}

// event records an event on the Lease l, if the client records events.
func (c *Client) event(l *coordinationv1.Lease, warning bool, reason, action, note string, args ...any) {
	if c.events == nil || l == nil {
		return
	}
	typ := corev1.EventTypeNormal
	if warning {
		typ = corev1.EventTypeWarning
	}
	ref := &coordinationv1.Lease{}
	ref.Kind, ref.APIVersion = "Lease", coordinationv1.SchemeGroupVersion.String()
	ref.Namespace, ref.Name, ref.UID = l.Namespace, l.Name, types.UID(l.UID)
	c.events.recorded.Add(1)
	c.events.rec.Eventf(ref, nil, typ, reason, action, note, args...)
}
