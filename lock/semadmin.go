package lock

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/konlease/konlease/ttl"
)

// SemaphoreStatus is a semaphore as users see it.
type SemaphoreStatus struct {
	Namespace string
	Name      string
	// Limit is the most holders at once.
	Limit int
	// TTL is zero for a semaphore without TTL.
	TTL  time.Duration
	Fair bool
	// Holders are the held slots, by slot number.
	Holders []SlotStatus
	// Waiters are the identities queued on a fair semaphore, oldest first
	// (GetSemaphore and ListSemaphores fill it in).
	Waiters []string
	// ResourceVersion of the semaphore's Lease.
	ResourceVersion string
	// Phase is PhaseInvalid for a labelled Lease that is not a valid
	// semaphore (ListSemaphores); Reason then says why.
	Phase  Phase
	Reason string
}

// SlotStatus is one held slot.
type SlotStatus struct {
	Slot   int
	Holder string
	// Phase is PhaseLocked, or PhaseExpired when the holder's TTL has run
	// out (anyone may take the slot).
	Phase     Phase
	LockedAt  time.Time
	RenewedAt time.Time
	ExpiresAt time.Time
	// Token is the fencing token of the slot's current acquisition.
	Token int64
	// Retired: the slot is beyond the limit (it was lowered).
	Retired bool
}

// holderNames are the holders' identities.
func (s SemaphoreStatus) holderNames() []string {
	var out []string
	for _, h := range s.Holders {
		out = append(out, h.Holder)
	}
	return out
}

// semaphoreStatus renders a semaphore and its slots.
func (c *Client) semaphoreStatus(sem *semaphore, slots []*record, seen *sightings, now time.Time) SemaphoreStatus {
	st := SemaphoreStatus{Namespace: sem.lease.Namespace, Name: sem.lease.Name, Limit: sem.limit, TTL: sem.ttl, Fair: sem.fair,
		ResourceVersion: sem.lease.ResourceVersion, Phase: PhaseUnlocked}
	for _, r := range slots {
		if !r.held() {
			continue
		}
		rs := r.status(c.expired(r, seen.see(r.lease.Name, r.lease.ResourceVersion, now)))
		st.Holders = append(st.Holders, SlotStatus{Slot: r.slot, Holder: rs.Holder, Phase: rs.Phase, LockedAt: rs.LockedAt,
			RenewedAt: rs.RenewedAt, ExpiresAt: rs.ExpiresAt, Token: rs.Token, Retired: r.retired})
	}
	if len(st.Holders) > 0 {
		st.Phase = PhaseLocked
	}
	return st
}

// SemaphoreFullError reports that a semaphore has no free slot. It matches
// ErrLocked with errors.Is, and wraps the context's error when a blocking
// Acquire gave up.
type SemaphoreFullError struct {
	Status SemaphoreStatus
	cause  error
}

func (e *SemaphoreFullError) Error() string {
	s := e.Status
	msg := fmt.Sprintf("semaphore %s/%s is full: %d of %d held by %s", s.Namespace, s.Name, len(s.Holders), s.Limit, quoteAll(s.holderNames()))
	if len(s.Holders) < s.Limit {
		msg = fmt.Sprintf("semaphore %s/%s has no slot to give: %d held (by %s) within the limit of %d, by holders of slots beyond it, which were kept when the limit was lowered", s.Namespace, s.Name, len(s.Holders), quoteAll(s.holderNames()), s.Limit)
	}
	if len(s.Waiters) > 0 {
		msg += fmt.Sprintf(", and %d waiters are queued", len(s.Waiters))
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *SemaphoreFullError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the context error that ended a blocking Acquire, if any.
func (e *SemaphoreFullError) Unwrap() error { return e.cause }

func quoteAll(ss []string) string {
	if len(ss) == 0 {
		return "nobody"
	}
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// SemaphoreOptions configure CreateSemaphore.
type SemaphoreOptions struct {
	// Limit is the most holders at once, 1 to MaxLimit.
	Limit int
	// TTL of every hold; zero for none.
	TTL time.Duration
	// Fair queues waiters in FIFO order, as for a fair mutex.
	Fair bool
	// Update lets CreateSemaphore change an existing semaphore: the limit
	// at any time (lowering it evicts nobody; new holders wait until those
	// of the slots beyond it have gone), the TTL and fairness only while
	// nobody holds a slot or waits.
	Update bool
}

// CreateSemaphore creates the semaphore namespace/name with its slots, and
// reports whether it did. One that exists on the same terms is left as it
// is; on other terms it is refused (ErrTTLConflict, ErrLimitConflict,
// ErrFairnessConflict) unless opts.Update.
func (c *Client) CreateSemaphore(ctx context.Context, namespace, name string, opts SemaphoreOptions) (SemaphoreStatus, bool, error) {
	if err := validateSemaphoreName(name); err != nil {
		return SemaphoreStatus{}, false, err
	}
	if err := ValidateNamespace(namespace); err != nil {
		return SemaphoreStatus{}, false, err
	}
	if opts.Limit < 1 || opts.Limit > MaxLimit {
		return SemaphoreStatus{}, false, fmt.Errorf("semaphore %s/%s: limit %d is outside 1 to %d: %w", namespace, name, opts.Limit, MaxLimit, ErrInvalid)
	}
	if opts.TTL != 0 {
		if err := ttl.Validate(opts.TTL); err != nil {
			return SemaphoreStatus{}, false, invalid(fmt.Errorf("semaphore %s/%s: %w", namespace, name, err))
		}
	}
	leases := c.leases.Leases(namespace)
	for {
		l, err := leases.Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Slots first: a semaphore Lease, once it exists, has them all.
			if err := c.ensureSlots(ctx, namespace, name, opts, nil); err != nil {
				return SemaphoreStatus{}, false, err
			}
			out, err := c.create(ctx, newSemaphoreLease(namespace, name, opts.Limit, opts.TTL, opts.Fair))
			if apierrors.IsAlreadyExists(err) {
				continue
			}
			if err != nil {
				return SemaphoreStatus{}, false, semError("create", namespace, name, -1, err)
			}
			sem, err := decodeSemaphore(out)
			if err != nil {
				return SemaphoreStatus{}, false, err
			}
			c.log.V(1).Info("created semaphore", "namespace", namespace, "name", name, "limit", opts.Limit, "ttl", opts.TTL, "fair", opts.Fair)
			return c.semaphoreStatus(sem, nil, &sightings{}, c.clock.Now()), true, nil
		}
		if err != nil {
			return SemaphoreStatus{}, false, semError("get", namespace, name, -1, err)
		}
		sem, err := decodeSemaphore(l)
		if err != nil {
			return SemaphoreStatus{}, false, err
		}
		slots, _, err := c.listSlots(ctx, namespace, name)
		if err != nil {
			return SemaphoreStatus{}, false, err
		}
		st := c.semaphoreStatus(sem, slots, &sightings{}, c.clock.Now())
		same := sem.limit == opts.Limit && sem.ttl == opts.TTL && sem.fair == opts.Fair
		if same {
			// Slots a crash between the two writes of an update left wrong
			// are mended, so that the slots always match the limit.
			return st, false, c.ensureSlots(ctx, namespace, name, opts, slots)
		}
		if !opts.Update {
			switch {
			case sem.limit != opts.Limit:
				return SemaphoreStatus{}, false, fmt.Errorf("semaphore %s/%s exists with limit %d, not %d (nothing changed): %w", namespace, name, sem.limit, opts.Limit, ErrLimitConflict)
			case sem.ttl != opts.TTL:
				return SemaphoreStatus{}, false, fmt.Errorf("semaphore %s/%s exists with TTL %s, not %s (nothing changed): %w", namespace, name, ttlString(sem.ttl), ttlString(opts.TTL), ErrTTLConflict)
			}
			return SemaphoreStatus{}, false, fmt.Errorf("semaphore %s/%s exists and is %s, not %s (nothing changed): %w", namespace, name, fairness(sem.fair), fairness(opts.Fair), ErrFairnessConflict)
		}
		if (sem.ttl != opts.TTL || sem.fair != opts.Fair) && len(st.Holders) > 0 {
			return SemaphoreStatus{}, false, fmt.Errorf("cannot change the TTL or fairness of semaphore %s/%s while %s hold it: %w", namespace, name, quoteAll(st.holderNames()), &SemaphoreFullError{Status: st})
		}
		if sem.fair != opts.Fair {
			q, err := c.listQueue(ctx, namespace, name)
			if err != nil {
				return SemaphoreStatus{}, false, err
			}
			if n := len(q.entries); n > 0 {
				return SemaphoreStatus{}, false, fmt.Errorf("cannot make semaphore %s/%s %s while %d waiters are queued (nothing changed): %w", namespace, name, fairness(opts.Fair), n, ErrFairnessConflict)
			}
		}
		// The slots first (retired before the limit comes down, so that no
		// new holder takes one beyond it), then the semaphore.
		if err := c.ensureSlots(ctx, namespace, name, opts, slots); err != nil {
			return SemaphoreStatus{}, false, err
		}
		next := l.DeepCopy()
		next.Annotations[AnnotationLimit] = strconv.Itoa(opts.Limit)
		setTerms(next, opts.TTL, opts.Fair)
		if _, err := c.update(ctx, next); apierrors.IsConflict(err) {
			continue
		} else if err != nil {
			return SemaphoreStatus{}, false, semError("update", namespace, name, -1, err)
		}
		c.log.V(1).Info("changed semaphore", "namespace", namespace, "name", name, "limit", opts.Limit, "ttl", opts.TTL, "fair", opts.Fair)
		st, err = c.GetSemaphore(ctx, namespace, name)
		return st, false, err
	}
}

// ensureSlots makes the slots match opts: slots 0 to Limit-1 exist and are
// not retired, the others are retired, and all carry the TTL and fairness.
// slots is what exists (nil: nothing). Every write is conditional; a held
// slot keeps its holder.
func (c *Client) ensureSlots(ctx context.Context, namespace, name string, opts SemaphoreOptions, slots []*record) error {
	have := map[int]*record{}
	top := opts.Limit
	for _, r := range slots {
		have[r.slot] = r
		top = max(top, r.slot+1)
	}
	for k := range top {
		want := k >= opts.Limit
		r := have[k]
		if r == nil {
			if want {
				continue // beyond the limit and never made: nothing to retire
			}
			if _, err := c.create(ctx, newSlotLease(namespace, name, k, opts.TTL, opts.Fair, false)); err != nil && !apierrors.IsAlreadyExists(err) {
				return semError("create", namespace, name, k, err)
			}
			continue
		}
		for r.retired != want || r.ttl != opts.TTL || r.fair != opts.Fair {
			l := r.lease.DeepCopy()
			delete(l.Annotations, AnnotationRetired)
			if want {
				l.Annotations[AnnotationRetired] = "true"
			}
			setTerms(l, opts.TTL, opts.Fair)
			_, err := c.update(ctx, l)
			if err == nil {
				break
			}
			if !apierrors.IsConflict(err) {
				return semError("update", namespace, name, r.slot, err)
			}
			// Its holder renewed meanwhile: read it and write again.
			if r, err = c.getAs(ctx, namespace, l.Name, func(l *coordinationv1.Lease) (*record, error) { return decodeSlot(l, name) }); err != nil {
				return err
			}
		}
	}
	return nil
}

// GetSemaphore returns the status of the semaphore namespace/name, with
// its live waiters when it is fair.
func (c *Client) GetSemaphore(ctx context.Context, namespace, name string) (SemaphoreStatus, error) {
	if err := ValidateNamespace(namespace); err != nil {
		return SemaphoreStatus{}, err
	}
	if err := ValidateName(name); err != nil {
		return SemaphoreStatus{}, err
	}
	seen := c.clock.Now()
	l, err := c.leases.Leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return SemaphoreStatus{}, &NotFoundError{Namespace: namespace, Name: name, Kind: "semaphore"}
	}
	if err != nil {
		return SemaphoreStatus{}, semError("get", namespace, name, -1, err)
	}
	sem, err := decodeSemaphore(l)
	if err != nil {
		return SemaphoreStatus{}, err
	}
	slots, _, err := c.listSlots(ctx, namespace, name)
	if err != nil {
		return SemaphoreStatus{}, err
	}
	st := c.semaphoreStatus(sem, slots, &sightings{}, seen)
	if sem.fair {
		q, err := c.listQueue(ctx, namespace, name)
		if err != nil {
			return SemaphoreStatus{}, err
		}
		live, _, err := c.judgeEntries(ctx, namespace, q.entries, &sightings{}, "")
		if err != nil {
			return SemaphoreStatus{}, err
		}
		for _, e := range live {
			st.Waiters = append(st.Waiters, e.holder)
		}
	}
	return st, nil
}

// ListSemaphores returns the semaphores in namespace ("": all), sorted by
// namespace and name, without their waiters. A Lease labelled as a
// semaphore that is not a valid one is listed with PhaseInvalid.
func (c *Client) ListSemaphores(ctx context.Context, namespace string) ([]SemaphoreStatus, error) {
	if namespace != "" {
		if err := ValidateNamespace(namespace); err != nil {
			return nil, err
		}
	}
	seen := c.clock.Now()
	sel := labels.SelectorFromSet(labels.Set{LabelKind: KindSemaphore}).String()
	list, err := c.leases.Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil {
		return nil, listError(namespace, err)
	}
	slotSel := labels.SelectorFromSet(labels.Set{LabelKind: KindSemaphoreSlot}).String()
	slotList, err := c.leases.Leases(namespace).List(ctx, metav1.ListOptions{LabelSelector: slotSel})
	if err != nil {
		return nil, listError(namespace, err)
	}
	slotsOf := map[string][]*record{}
	for i := range slotList.Items {
		l := &slotList.Items[i]
		if r, err := decodeSlot(l, l.Annotations[AnnotationSemaphore]); err == nil {
			key := l.Namespace + "/" + l.Annotations[AnnotationSemaphore]
			slotsOf[key] = append(slotsOf[key], r)
		}
	}
	var out []SemaphoreStatus
	for i := range list.Items {
		l := &list.Items[i]
		sem, err := decodeSemaphore(l)
		if err != nil {
			var nm *NotMutexError
			errors.As(err, &nm)
			out = append(out, SemaphoreStatus{Namespace: l.Namespace, Name: l.Name, Phase: PhaseInvalid, Reason: nm.Reason, ResourceVersion: l.ResourceVersion})
			continue
		}
		out = append(out, c.semaphoreStatus(sem, slotsOf[l.Namespace+"/"+l.Name], &sightings{}, seen))
	}
	slices.SortFunc(out, func(a, b SemaphoreStatus) int {
		if n := strings.Compare(a.Namespace, b.Namespace); n != 0 {
			return n
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// DeleteSemaphore deletes the semaphore namespace/name, its slots and its
// queue, and returns its status as it was. It refuses one with holders
// unless force (they are told they lost their slots), and never touches a
// Lease that is not a semaphore.
func (c *Client) DeleteSemaphore(ctx context.Context, namespace, name string, force bool) (SemaphoreStatus, error) {
	st, err := c.GetSemaphore(ctx, namespace, name)
	if err != nil {
		return SemaphoreStatus{}, err
	}
	live := 0
	for _, h := range st.Holders {
		if h.Phase == PhaseLocked {
			live++
		}
	}
	if live > 0 && !force {
		return SemaphoreStatus{}, fmt.Errorf("refusing to delete a held semaphore (use force): %w", &SemaphoreFullError{Status: st})
	}
	rv := st.ResourceVersion
	err = c.leases.Leases(namespace).Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
	if apierrors.IsConflict(err) {
		return c.DeleteSemaphore(ctx, namespace, name, force) // changed meanwhile: decide again
	}
	if err != nil && !apierrors.IsNotFound(err) {
		return SemaphoreStatus{}, semError("delete", namespace, name, -1, err)
	}
	slots, _, err := c.listSlots(ctx, namespace, name)
	if err != nil {
		return st, err
	}
	var errs []error
	for _, r := range slots {
		errs = append(errs, c.deleteExact(ctx, r.lease))
	}
	errs = append(errs, c.deleteQueue(ctx, namespace, name))
	c.log.V(1).Info("deleted semaphore", "namespace", namespace, "name", name)
	return st, errors.Join(errs...)
}

// ForceReleaseSemaphore releases the slot that holder holds in the
// semaphore namespace/name, whoever asks, and returns its status before
// the release (Holder empty: holder held none, and nothing changed). The
// evicted holder learns it lost its slot.
func (c *Client) ForceReleaseSemaphore(ctx context.Context, namespace, name, holder string) (SlotStatus, error) {
	if err := ValidateHolder(holder); err != nil {
		return SlotStatus{}, err
	}
	for {
		st, err := c.GetSemaphore(ctx, namespace, name)
		if err != nil {
			return SlotStatus{}, err
		}
		slots, _, err := c.listSlots(ctx, namespace, name)
		if err != nil {
			return SlotStatus{}, err
		}
		var victim *record
		var before SlotStatus
		for i, r := range slots {
			if r.held() && r.holder == holder {
				victim = slots[i]
				for _, h := range st.Holders {
					if h.Slot == r.slot {
						before = h
					}
				}
			}
		}
		if victim == nil {
			return SlotStatus{}, nil
		}
		_, err = c.update(ctx, victim.release(c.serverNow()))
		switch {
		case err == nil:
			c.log.V(1).Info("force-released semaphore slot", "namespace", namespace, "name", name, "slot", victim.slot, "evicted", holder)
			c.event(victim.lease, true, EventForceUnlocked, "ForceRelease", "force-released; %q was evicted (token %d)", holder, victim.token)
			return before, nil
		case apierrors.IsConflict(err):
			continue
		default:
			return SlotStatus{}, semError("update", namespace, name, victim.slot, err)
		}
	}
}
