package lock

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/ttl"
)

const (
	// DefaultPollInterval is how often a waiter re-reads a mutex when it may
	// not watch it (RBAC without the watch verb).
	DefaultPollInterval = 2 * time.Second
	// listPageSize bounds one List response.
	listPageSize = 500
)

// Client gives access to mutexes through one API server. It is safe for
// concurrent use, and cheap: one per process is enough.
type Client struct {
	leases       coordinationv1client.LeasesGetter
	clock        clock.Clock
	server       *ttl.ServerClock
	log          logr.Logger
	pollInterval time.Duration
	waiterTTL    time.Duration
	sessions     sessions
	// deletable holds the namespaces where mayDelete found delete allowed.
	deletable  sync.Map
	metrics    Metrics
	events     *eventSink
	wantEvents bool
	// background counts work that outlives the call that started it
	// (deleting a holder's queue entry); Close waits for it.
	background sync.WaitGroup
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithLogger sets the logger; the default discards. The package logs
// decisions at V(1) and request-level detail at V(2).
func WithLogger(l logr.Logger) ClientOption { return func(c *Client) { c.log = l } }

// WithClock injects the local clock (tests, or a deliberately skewed client).
// The default is the real clock.
func WithClock(clk clock.Clock) ClientOption { return func(c *Client) { c.clock = clk } }

// WithServerClock sets the estimator of the API server's clock. NewForConfig
// wires one to every response's Date header; with NewClient, pass one that
// is fed by ServerClockTransport on the same client's transport, or none:
// without it, expiry of a TTL is judged only by local observation time, which
// is always safe but makes a fresh waiter wait one full TTL before taking over
// a mutex whose holder died long ago.
func WithServerClock(sc *ttl.ServerClock) ClientOption { return func(c *Client) { c.server = sc } }

// WithPollInterval sets how often a waiter re-reads a mutex when watching it
// is forbidden. Default DefaultPollInterval; each wait is jittered by up to
// 50% so that waiters spread out.
func WithPollInterval(d time.Duration) ClientOption { return func(c *Client) { c.pollInterval = d } }

// WithWaiterTTL sets how long this client's fair waiters stay in a queue
// after their process stops renewing its session (it died, or lost the API
// server): about that long after the last renewal, others pass them over.
// From MinWaiterTTL to MaxWaiterTTL; default DefaultWaiterTTL. Sessions
// are renewed every third of it.
func WithWaiterTTL(d time.Duration) ClientOption { return func(c *Client) { c.waiterTTL = d } }

// NewClient returns a Client that uses leases, the narrowest client-go
// interface that reaches Lease objects (a typed clientset's CoordinationV1()
// is one).
func NewClient(leases coordinationv1client.LeasesGetter, opts ...ClientOption) (*Client, error) {
	if leases == nil {
		return nil, fmt.Errorf("lock.NewClient: leases getter is nil: %w", ErrInvalid)
	}
	c := &Client{leases: leases, clock: clock.RealClock{}, log: logr.Discard(), pollInterval: DefaultPollInterval, waiterTTL: DefaultWaiterTTL, metrics: noMetrics{}}
	for _, o := range opts {
		o(c)
	}
	if c.clock == nil {
		return nil, fmt.Errorf("lock.NewClient: clock is nil: %w", ErrInvalid)
	}
	if c.metrics == nil {
		return nil, fmt.Errorf("lock.NewClient: metrics is nil: %w", ErrInvalid)
	}
	if c.pollInterval <= 0 {
		return nil, fmt.Errorf("lock.NewClient: poll interval %s is not positive: %w", c.pollInterval, ErrInvalid)
	}
	if c.waiterTTL < MinWaiterTTL || c.waiterTTL > MaxWaiterTTL || c.waiterTTL%time.Second != 0 {
		return nil, fmt.Errorf("lock.NewClient: waiter TTL %s must be whole seconds from %s to %s: %w", c.waiterTTL, MinWaiterTTL, MaxWaiterTTL, ErrInvalid)
	}
	return c, nil
}

// NewForConfig returns a Client for the API server of cfg. It estimates the
// server's clock from the Date header of every response (see package ttl),
// so that TTL expiry never compares this machine's wall clock with another's.
// A config that sets no client-side rate limit (QPS 0, no RateLimiter) gets
// none, rather than client-go's default of 5 requests per second.
func NewForConfig(cfg *rest.Config, opts ...ClientOption) (*Client, error) {
	if cfg == nil {
		return nil, fmt.Errorf("lock.NewForConfig: config is nil: %w", ErrInvalid)
	}
	// Options are applied twice: first to learn the clock the transport
	// must read, then for real in NewClient.
	probe := &Client{clock: clock.RealClock{}}
	for _, o := range opts {
		o(probe)
	}
	if probe.clock == nil {
		return nil, fmt.Errorf("lock.NewForConfig: clock is nil: %w", ErrInvalid)
	}
	sc := probe.server
	if sc == nil {
		sc = ttl.NewServerClock(probe.clock)
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 && cfg.RateLimiter == nil {
		// client-go's default client-side limit (5 QPS, burst 10) would
		// queue a handoff, which is a burst of one write per waiter, behind
		// a token bucket: measured here, 16 contending goroutines went from
		// 9ms to 350ms per acquisition. The API server's priority and
		// fairness protects it; a caller that wants a limit sets one.
		cfg.QPS = -1
	}
	cfg.Wrap(ServerClockTransport(sc, probe.clock))
	cs, err := coordinationv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("lock.NewForConfig: %w", err)
	}
	c, err := NewClient(cs, append(slices.Clone(opts), WithServerClock(sc))...)
	if err != nil {
		return nil, err
	}
	if c.wantEvents && c.events == nil {
		if c.events, err = newEventSink(cfg, c); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// ServerClockTransport returns a transport wrapper (for rest.Config.Wrap) that
// feeds sc with the Date header of every response, timed with clk.
func ServerClockTransport(sc *ttl.ServerClock, clk clock.PassiveClock) func(http.RoundTripper) http.RoundTripper {
	return func(rt http.RoundTripper) http.RoundTripper {
		return &dateSampler{next: rt, server: sc, clock: clk}
	}
}

type dateSampler struct {
	next   http.RoundTripper
	server *ttl.ServerClock
	clock  clock.PassiveClock
}

func (d *dateSampler) RoundTrip(req *http.Request) (*http.Response, error) {
	sent := d.clock.Now()
	resp, err := d.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	received := d.clock.Now()
	if date, perr := ttl.ParseDate(resp.Header.Get("Date")); perr == nil {
		d.server.Observe(date, sent, received)
	}
	return resp, nil
}

// WrappedRoundTripper lets client-go see through the wrapper.
func (d *dateSampler) WrappedRoundTripper() http.RoundTripper { return d.next }

// serverNow is the best estimate of the API server's time, for the
// timestamps written into a Lease. It never decides anything.
func (c *Client) serverNow() time.Time {
	if c.server == nil {
		return c.clock.Now()
	}
	return c.server.Estimate()
}

// expired reports whether a held record's TTL has certainly run out, judged
// from a single read at firstSeen.
func (c *Client) expired(r *record, firstSeen time.Time) bool {
	if !r.held() || r.ttl <= 0 {
		return false
	}
	return r.expiry(firstSeen).Expired(c.clock.Now(), c.server)
}

// get reads a mutex Lease and decodes it. A missing Lease is
// (nil, *NotFoundError).
func (c *Client) get(ctx context.Context, namespace, name string) (*record, error) {
	return c.getAs(ctx, namespace, name, decode)
}

// getAs is get with the decoder of a kind of record (mutex, semaphore
// slot).
func (c *Client) getAs(ctx context.Context, namespace, name string, dec func(*coordinationv1.Lease) (*record, error)) (*record, error) {
	l, err := c.leases.Leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &NotFoundError{Namespace: namespace, Name: name}
		}
		return nil, apiError("get", namespace, name, err)
	}
	return dec(l)
}

// update writes l with its resourceVersion as the precondition.
func (c *Client) update(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	out, err := c.leases.Leases(l.Namespace).Update(ctx, l, metav1.UpdateOptions{FieldManager: FieldManager})
	if apierrors.IsConflict(err) {
		if name := metricName(l); name != "" {
			c.metrics.Conflict(l.Namespace, name)
		}
	}
	return out, err
}

// metricName is the mutex or semaphore that Lease l is part of, "" for a
// queue entry or a session.
func metricName(l *coordinationv1.Lease) string {
	switch {
	case l.Annotations[AnnotationSemaphore] != "":
		return l.Annotations[AnnotationSemaphore]
	case l.Labels[LabelKind] == KindWaiter, l.Labels[LabelKind] == KindSession:
		return ""
	}
	return l.Name
}

func (c *Client) create(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.leases.Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
}

// apiError adds what was being done to an API error, and for an RBAC
// refusal names the verb that is missing. The API error stays wrapped, so
// apierrors.IsForbidden and friends still work on the result.
func apiError(verb, namespace, name string, err error) error {
	return leaseError("mutex "+namespace+"/"+name, verb, namespace, err)
}

// semError is apiError for the semaphore namespace/name; slot is the
// slot's number, or -1 for the semaphore's own Lease.
func semError(verb, namespace, name string, slot int, err error) error {
	return leaseError(semSubject(namespace, name, slot), verb, namespace, err)
}

// leaseError describes err from verb on a Lease in namespace that belongs
// to subject ("mutex ns/name", "semaphore ns/name (slot 0)", ...). A
// refusal names the verb to grant.
func leaseError(subject, verb, namespace string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("%s: not allowed to %s leases.coordination.k8s.io in namespace %q (grant the %q verb on leases to this identity): %w",
			subject, verb, namespace, verb, err)
	}
	return fmt.Errorf("%s: %s lease: %w", subject, verb, err)
}

func validateRef(namespace, name string) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	return ValidateName(name)
}
