package lock

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

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

// NewClient returns a Client that uses leases, the narrowest client-go
// interface that reaches Lease objects (a typed clientset's CoordinationV1()
// is one).
func NewClient(leases coordinationv1client.LeasesGetter, opts ...ClientOption) (*Client, error) {
	if leases == nil {
		return nil, fmt.Errorf("lock.NewClient: leases getter is nil: %w", ErrInvalid)
	}
	c := &Client{leases: leases, clock: clock.RealClock{}, log: logr.Discard(), pollInterval: DefaultPollInterval}
	for _, o := range opts {
		o(c)
	}
	if c.clock == nil {
		return nil, fmt.Errorf("lock.NewClient: clock is nil: %w", ErrInvalid)
	}
	if c.pollInterval <= 0 {
		return nil, fmt.Errorf("lock.NewClient: poll interval %s is not positive: %w", c.pollInterval, ErrInvalid)
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
	return NewClient(cs, append(slices.Clone(opts), WithServerClock(sc))...)
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
	l, err := c.leases.Leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &NotFoundError{Namespace: namespace, Name: name}
		}
		return nil, apiError("get", namespace, name, err)
	}
	return decode(l)
}

// update writes l with its resourceVersion as the precondition.
func (c *Client) update(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.leases.Leases(l.Namespace).Update(ctx, l, metav1.UpdateOptions{FieldManager: FieldManager})
}

func (c *Client) create(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.leases.Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{FieldManager: FieldManager})
}

// apiError adds what was being done to an API error, and for an RBAC
// refusal names the verb that is missing. The API error stays wrapped, so
// apierrors.IsForbidden and friends still work on the result.
func apiError(verb, namespace, name string, err error) error {
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("mutex %s/%s: not allowed to %s leases.coordination.k8s.io in namespace %q (grant the %q verb on leases to this identity): %w",
			namespace, name, verb, namespace, verb, err)
	}
	return fmt.Errorf("mutex %s/%s: %s lease: %w", namespace, name, verb, err)
}

func validateRef(namespace, name string) error {
	if err := ValidateNamespace(namespace); err != nil {
		return err
	}
	return ValidateName(name)
}

// CreateOptions configure Create.
type CreateOptions struct {
	// TTL of the mutex; zero for none. Must satisfy ttl.Validate otherwise.
	TTL time.Duration
	// UpdateTTL lets Create change the TTL of an existing, unlocked mutex.
	// The TTL of a locked mutex is never changed: its holder renews on the
	// old one.
	UpdateTTL bool
}

// Create creates the mutex namespace/name and reports whether it did.
// Creating a mutex that exists with the same TTL succeeds (created is false)
// and changes nothing; with another TTL it fails with ErrTTLConflict unless
// opts.UpdateTTL is set and the mutex is unlocked.
func (c *Client) Create(ctx context.Context, namespace, name string, opts CreateOptions) (st Status, created bool, err error) {
	if err := validateRef(namespace, name); err != nil {
		return Status{}, false, err
	}
	if opts.TTL != 0 {
		if err := ttl.Validate(opts.TTL); err != nil {
			return Status{}, false, invalid(fmt.Errorf("mutex %s/%s: %w", namespace, name, err))
		}
	}
	for {
		l, err := c.create(ctx, newLease(namespace, name, opts.TTL))
		if err == nil {
			c.log.V(1).Info("created mutex", "namespace", namespace, "name", name, "ttl", opts.TTL)
			r, derr := decode(l)
			if derr != nil {
				return Status{}, false, derr
			}
			return r.status(false), true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return Status{}, false, apiError("create", namespace, name, err)
		}
		r, err := c.get(ctx, namespace, name)
		if errors.Is(err, ErrNotFound) {
			continue // deleted in between: create again
		}
		if err != nil {
			return Status{}, false, err
		}
		if r.ttl == opts.TTL {
			return r.status(c.expired(r, c.clock.Now())), false, nil
		}
		if !opts.UpdateTTL {
			return Status{}, false, fmt.Errorf("mutex %s/%s exists with TTL %s, not %s (nothing changed): %w",
				namespace, name, ttlString(r.ttl), ttlString(opts.TTL), ErrTTLConflict)
		}
		if r.held() {
			return Status{}, false, fmt.Errorf("cannot change the TTL of mutex %s/%s while %q holds it: %w",
				namespace, name, r.holder, r.lockedError(nil))
		}
		l = r.lease.DeepCopy()
		delete(l.Annotations, AnnotationTTL)
		l.Spec.LeaseDurationSeconds = nil
		if opts.TTL > 0 {
			l.Annotations[AnnotationTTL] = ttl.Format(opts.TTL)
			l.Spec.LeaseDurationSeconds = ptr.To(ttl.LeaseDurationSeconds(opts.TTL))
		}
		l, err = c.update(ctx, l)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // changed under us: decide again
		}
		if err != nil {
			return Status{}, false, apiError("update", namespace, name, err)
		}
		c.log.V(1).Info("changed mutex TTL", "namespace", namespace, "name", name, "from", r.ttl, "to", opts.TTL)
		if r, err = decode(l); err != nil {
			return Status{}, false, err
		}
		return r.status(false), false, nil
	}
}

func ttlString(d time.Duration) string {
	if d == 0 {
		return "none"
	}
	return ttl.Format(d)
}

// Get returns the status of the mutex namespace/name.
func (c *Client) Get(ctx context.Context, namespace, name string) (Status, error) {
	if err := validateRef(namespace, name); err != nil {
		return Status{}, err
	}
	seen := c.clock.Now()
	r, err := c.get(ctx, namespace, name)
	if err != nil {
		return Status{}, err
	}
	return r.status(c.expired(r, seen)), nil
}

// ListOption configures List.
type ListOption func(*listOptions)

type listOptions struct {
	selector labels.Selector
}

// WithLabelSelector narrows List to the mutex Leases whose labels also
// match sel (as kubectl's -l). The mutex label itself is always required.
func WithLabelSelector(sel labels.Selector) ListOption {
	return func(o *listOptions) { o.selector = sel }
}

// List returns the mutexes in namespace, or in all namespaces when namespace
// is empty, sorted by namespace and name. A Lease that carries the mutex
// label but cannot be read as a mutex (garbled or missing konlease
// annotations) is not left out: it is listed with Phase PhaseInvalid, its
// Reason saying why, so that an operator sees it; like every Lease that is
// not a mutex, it is never modified.
func (c *Client) List(ctx context.Context, namespace string, opts ...ListOption) ([]Status, error) {
	if namespace != "" {
		if err := ValidateNamespace(namespace); err != nil {
			return nil, err
		}
	}
	var o listOptions
	for _, opt := range opts {
		opt(&o)
	}
	kind, err := labels.NewRequirement(LabelKind, selection.Equals, []string{KindMutex})
	if err != nil {
		return nil, invalid(fmt.Errorf("mutex label selector: %w", err))
	}
	sel := labels.NewSelector()
	if o.selector != nil {
		reqs, selectable := o.selector.Requirements()
		if !selectable {
			return []Status{}, nil // labels.Nothing(): matches no Lease
		}
		sel = sel.Add(reqs...)
	}
	sel = sel.Add(*kind)
	var out []Status
	lopts := metav1.ListOptions{LabelSelector: sel.String(), Limit: listPageSize}
	for {
		seen := c.clock.Now()
		list, err := c.leases.Leases(namespace).List(ctx, lopts)
		if err != nil {
			return nil, listError(namespace, err)
		}
		for i := range list.Items {
			l := &list.Items[i]
			r, err := decode(l)
			var nm *NotMutexError
			if errors.As(err, &nm) {
				c.log.V(1).Info("labelled lease is not a valid mutex", "namespace", l.Namespace, "name", l.Name, "reason", nm.Reason)
				out = append(out, Status{Namespace: l.Namespace, Name: l.Name, Phase: PhaseInvalid, Reason: nm.Reason, ResourceVersion: l.ResourceVersion})
				continue
			}
			if err != nil {
				return nil, err
			}
			out = append(out, r.status(c.expired(r, seen)))
		}
		if list.Continue == "" {
			break
		}
		lopts.Continue = list.Continue
	}
	slices.SortFunc(out, func(a, b Status) int {
		if n := strings.Compare(a.Namespace, b.Namespace); n != 0 {
			return n
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// listError explains a failed List. Listing in all namespaces is a
// cluster-wide request: a Role grants verbs in its own namespace only, so
// an RBAC refusal there needs a ClusterRole, which a Role-minded hint would
// not say.
func listError(namespace string, err error) error {
	if namespace == "" && apierrors.IsForbidden(err) {
		return fmt.Errorf("not allowed to list leases.coordination.k8s.io in all namespaces: that needs a ClusterRole granting the \"list\" verb on leases, bound to this identity with a ClusterRoleBinding (a Role grants verbs in its own namespace only); list one namespace instead: %w", err)
	}
	return apiError("list", namespace, "*", err)
}

// DeleteOptions configure Delete.
type DeleteOptions struct {
	// Force deletes a locked mutex. Its holder learns it lost the lock
	// (Done closes), but the fencing token starts again from zero if the
	// mutex is created anew, so fenced resources must be told too.
	Force bool
}

// Delete deletes the mutex namespace/name and returns its status as it was
// deleted: with opts.Force, Holder is whom it evicted (empty if nobody held
// it). It refuses a locked mutex unless opts.Force is set (a holder whose
// TTL has run out does not count), and always refuses a Lease that is not a
// mutex.
func (c *Client) Delete(ctx context.Context, namespace, name string, opts DeleteOptions) (Status, error) {
	if err := validateRef(namespace, name); err != nil {
		return Status{}, err
	}
	for {
		seen := c.clock.Now()
		r, err := c.get(ctx, namespace, name)
		if err != nil {
			return Status{}, err
		}
		expired := c.expired(r, seen)
		if r.held() && !opts.Force && !expired {
			return Status{}, fmt.Errorf("refusing to delete a locked mutex (use force): %w", r.lockedError(nil))
		}
		pre := metav1.Preconditions{UID: &r.lease.UID, ResourceVersion: &r.lease.ResourceVersion}
		err = c.leases.Leases(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &pre})
		switch {
		case err == nil:
			c.log.V(1).Info("deleted mutex", "namespace", namespace, "name", name, "holder", r.holder)
			return r.status(expired), nil
		case apierrors.IsConflict(err):
			continue // changed since we read it: decide again
		case apierrors.IsNotFound(err):
			return Status{}, &NotFoundError{Namespace: namespace, Name: name}
		default:
			return Status{}, apiError("delete", namespace, name, err)
		}
	}
}

// ForceUnlock releases the mutex namespace/name whoever holds it, and
// returns its status before the release (Holder is whom it evicted; empty if
// it was unlocked already, in which case nothing was written). The evicted
// holder learns it lost the lock. For operators; holders use Mutex.Unlock.
func (c *Client) ForceUnlock(ctx context.Context, namespace, name string) (Status, error) {
	if err := validateRef(namespace, name); err != nil {
		return Status{}, err
	}
	for {
		seen := c.clock.Now()
		r, err := c.get(ctx, namespace, name)
		if err != nil {
			return Status{}, err
		}
		before := r.status(c.expired(r, seen))
		if !r.held() {
			return before, nil
		}
		_, err = c.update(ctx, r.release(c.serverNow()))
		switch {
		case err == nil:
			c.log.V(1).Info("force-unlocked mutex", "namespace", namespace, "name", name, "evicted", r.holder, "token", r.token)
			return before, nil
		case apierrors.IsConflict(err):
			continue
		case apierrors.IsNotFound(err):
			return Status{}, &NotFoundError{Namespace: namespace, Name: name}
		default:
			return Status{}, apiError("update", namespace, name, err)
		}
	}
}
