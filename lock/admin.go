package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/ttl"
)

// The operator calls: Create, Get, List, Delete and ForceUnlock.

// CreateOptions configure Create.
type CreateOptions struct {
	// TTL of the mutex; zero for none. Must satisfy ttl.Validate otherwise.
	TTL time.Duration
	// UpdateTTL lets Create change the TTL, and the fairness, of an
	// existing, unlocked mutex (fairness only while nobody waits). The TTL
	// of a locked mutex is never changed: its holder renews on the old one.
	UpdateTTL bool
	// Fair makes a fair mutex: waiters queue in FIFO order (see the package
	// documentation).
	Fair bool
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
		l, err := c.create(ctx, newLease(namespace, name, opts.TTL, opts.Fair))
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
		if r.ttl == opts.TTL && r.fair == opts.Fair {
			return r.status(c.expired(r, c.clock.Now())), false, nil
		}
		if !opts.UpdateTTL {
			if r.ttl != opts.TTL {
				return Status{}, false, fmt.Errorf("mutex %s/%s exists with TTL %s, not %s (nothing changed): %w",
					namespace, name, ttlString(r.ttl), ttlString(opts.TTL), ErrTTLConflict)
			}
			return Status{}, false, fmt.Errorf("mutex %s/%s exists and is %s, not %s (nothing changed): %w",
				namespace, name, fairness(r.fair), fairness(opts.Fair), ErrFairnessConflict)
		}
		if r.held() {
			return Status{}, false, fmt.Errorf("cannot change mutex %s/%s while %q holds it: %w",
				namespace, name, r.holder, r.lockedError(nil))
		}
		if r.fair != opts.Fair {
			q, err := c.listQueue(ctx, namespace, name)
			if err != nil {
				return Status{}, false, err
			}
			if n := len(q.entries); n > 0 {
				return Status{}, false, fmt.Errorf("cannot make mutex %s/%s %s while %d waiters are queued for it (nothing changed): %w",
					namespace, name, fairness(opts.Fair), n, ErrFairnessConflict)
			}
		}
		l = r.lease.DeepCopy()
		delete(l.Annotations, AnnotationTTL)
		delete(l.Annotations, AnnotationFair)
		l.Spec.LeaseDurationSeconds = nil
		if opts.TTL > 0 {
			l.Annotations[AnnotationTTL] = ttl.Format(opts.TTL)
			l.Spec.LeaseDurationSeconds = ptr.To(ttl.LeaseDurationSeconds(opts.TTL))
		}
		if opts.Fair {
			l.Annotations[AnnotationFair] = "true"
		}
		l, err = c.update(ctx, l)
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			continue // changed under us: decide again
		}
		if err != nil {
			return Status{}, false, apiError("update", namespace, name, err)
		}
		c.log.V(1).Info("changed mutex", "namespace", namespace, "name", name, "ttl", opts.TTL, "fair", opts.Fair)
		if r, err = decode(l); err != nil {
			return Status{}, false, err
		}
		return r.status(false), false, nil
	}
}

func fairness(fair bool) string {
	if fair {
		return "fair"
	}
	return "not fair"
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
	st := r.status(c.expired(r, seen))
	if r.fair {
		q, err := c.listQueue(ctx, namespace, name)
		if err != nil {
			return Status{}, err
		}
		live, _, err := c.judgeEntries(ctx, namespace, q.entries, &sightings{}, "")
		if err != nil {
			return Status{}, err
		}
		for _, e := range live {
			st.Waiters = append(st.Waiters, e.holder)
		}
	}
	return st, nil
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
	if slices.ContainsFunc(out, func(s Status) bool { return s.Fair }) {
		w, err := c.waiters(ctx, namespace)
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].Waiters = w[out[i].Namespace+"/"+out[i].Name]
		}
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
			if err := c.deleteQueue(ctx, namespace, name); err != nil {
				return r.status(expired), fmt.Errorf("mutex %s/%s was deleted, but not all of its queue: %w", namespace, name, err)
			}
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
			c.event(r.lease, true, EventForceUnlocked, "ForceUnlock", "force-unlocked; %q was evicted (token %d)", r.holder, r.token)
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
