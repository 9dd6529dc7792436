package lock

import (
	"context"
	"fmt"
	"strconv"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/ttl"
)

// The mapping of a semaphore: one Lease that describes it, and one Lease
// per slot, each a single-holder record exactly like a mutex's Lease.
const (
	// KindSemaphore is the value of LabelKind on a semaphore's own Lease.
	KindSemaphore = "Semaphore"
	// KindSemaphoreSlot is the value of LabelKind on a semaphore's slot.
	KindSemaphoreSlot = "SemaphoreSlot"
	// AnnotationLimit, on a semaphore's Lease, is its limit: at most that
	// many holders at once. Its slots are numbered 0 to the largest limit
	// the semaphore ever had, less one.
	AnnotationLimit = "konlease.io/limit"
	// AnnotationSemaphore, on a slot, names its semaphore. (On queue
	// entries, LabelMutex and AnnotationMutex name it, as a mutex's.)
	AnnotationSemaphore = "konlease.io/semaphore"
	// AnnotationSlot, on a slot, is its number.
	AnnotationSlot = "konlease.io/slot"
	// AnnotationRetired is "true" on a slot at or beyond the semaphore's
	// limit (the limit was lowered): it is never taken, and while it is
	// held nobody takes any slot.
	AnnotationRetired = "konlease.io/retired"
	// MaxLimit is the largest limit a semaphore may have: each slot is a
	// Lease, and a waiter watches them all.
	MaxLimit = 1000
)

// semaphore is a semaphore's own Lease, decoded.
type semaphore struct {
	lease *coordinationv1.Lease
	limit int
	ttl   time.Duration
	fair  bool
}

// notSemaphore refuses a Lease that is not a semaphore.
func notSemaphore(l *coordinationv1.Lease, format string, args ...any) error {
	return &NotMutexError{Namespace: l.Namespace, Name: l.Name, Reason: fmt.Sprintf(format, args...), Kind: "semaphore"}
}

func decodeSemaphore(l *coordinationv1.Lease) (*semaphore, error) {
	if l.Labels[LabelKind] != KindSemaphore {
		return nil, notSemaphore(l, "label %s is %q, not %q (a mutex, or another Lease)", LabelKind, l.Labels[LabelKind], KindSemaphore)
	}
	n, err := strconv.Atoi(l.Annotations[AnnotationLimit])
	if err != nil || n < 1 || n > MaxLimit {
		return nil, notSemaphore(l, "annotation %s is %q, want 1 to %d", AnnotationLimit, l.Annotations[AnnotationLimit], MaxLimit)
	}
	s := &semaphore{lease: l, limit: n, fair: l.Annotations[AnnotationFair] == "true"}
	if v, ok := l.Annotations[AnnotationTTL]; ok {
		if s.ttl, err = ttl.Parse(v); err != nil {
			return nil, notSemaphore(l, "annotation %s: %s", AnnotationTTL, err.Error())
		}
	}
	return s, nil
}

// decodeSlot checks that l is a slot of semaphore sem and decodes it.
func decodeSlot(l *coordinationv1.Lease, sem string) (*record, error) {
	notSlot := func(format string, args ...any) error {
		return &NotMutexError{Namespace: l.Namespace, Name: l.Name, Reason: fmt.Sprintf(format, args...), Kind: "semaphore slot"}
	}
	if l.Labels[LabelKind] != KindSemaphoreSlot || l.Annotations[AnnotationSemaphore] != sem {
		return nil, notSlot("it is not a slot of semaphore %q", sem)
	}
	k, err := strconv.Atoi(l.Annotations[AnnotationSlot])
	if err != nil || k < 0 || k >= MaxLimit {
		return nil, notSlot("annotation %s is %q", AnnotationSlot, l.Annotations[AnnotationSlot])
	}
	r, err := decodeRecord(l, notSlot)
	if err != nil {
		return nil, err
	}
	r.slot = k
	r.retired = l.Annotations[AnnotationRetired] == "true"
	return r, nil
}

// slotName is the name of slot k of semaphore name: the name shortened to
// fit, and the number.
func slotName(name string, k int) string {
	suffix := ".s-" + strconv.Itoa(k)
	if limit := validation.DNS1123SubdomainMaxLength - len(suffix); len(name) > limit {
		name = name[:limit]
	}
	return name + suffix
}

// slotSelector selects the slots of semaphore name.
func slotSelector(name string) string {
	return labels.SelectorFromSet(labels.Set{LabelKind: KindSemaphoreSlot, LabelMutex: queueLabel(name)}).String()
}

// newSemaphoreLease is a semaphore's own Lease.
func newSemaphoreLease(namespace, name string, limit int, d time.Duration, fair bool) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   namespace,
			Name:        name,
			Labels:      map[string]string{LabelKind: KindSemaphore},
			Annotations: map[string]string{AnnotationLimit: strconv.Itoa(limit)},
		},
	}
	setTerms(l, d, fair)
	return l
}

// newSlotLease is slot k of semaphore namespace/name, free.
func newSlotLease(namespace, name string, k int, d time.Duration, fair, retired bool) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      slotName(name, k),
			Labels:    map[string]string{LabelKind: KindSemaphoreSlot, LabelMutex: queueLabel(name)},
			Annotations: map[string]string{
				AnnotationSemaphore: name,
				AnnotationSlot:      strconv.Itoa(k),
			},
		},
		Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](0)},
	}
	setTerms(l, d, fair)
	if retired {
		l.Annotations[AnnotationRetired] = "true"
	}
	return l
}

// setTerms writes the TTL and fairness annotations (and the TTL's
// leaseDurationSeconds) that a semaphore and its slots share.
func setTerms(l *coordinationv1.Lease, d time.Duration, fair bool) {
	delete(l.Annotations, AnnotationTTL)
	delete(l.Annotations, AnnotationFair)
	l.Spec.LeaseDurationSeconds = nil
	if d > 0 {
		l.Annotations[AnnotationTTL] = ttl.Format(d)
		l.Spec.LeaseDurationSeconds = ptr.To(ttl.LeaseDurationSeconds(d))
	}
	if fair {
		l.Annotations[AnnotationFair] = "true"
	}
}

// decode decodes a Lease of the kind this handle holds: a mutex, or a slot
// of its semaphore.
func (m *Mutex) decode(l *coordinationv1.Lease) (*record, error) {
	if m.slotOf != "" {
		return decodeSlot(l, m.slotOf)
	}
	return decode(l)
}

// get reads the Lease this handle holds.
func (m *Mutex) get(ctx context.Context) (*record, error) {
	return m.c.getAs(ctx, m.namespace, m.name, m.decode)
}

// queueName is the name whose queue this handle's waiters join: the
// mutex's own, or its semaphore's.
func (m *Mutex) queueName() string {
	if m.slotOf != "" {
		return m.slotOf
	}
	return m.name
}
