package lock

import (
	"fmt"
	"math"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/ttl"
)

// The mapping between a mutex and its Lease. Other tools read these, so they
// are part of the package's contract; see the package documentation.
const (
	// LabelKind is set to KindMutex on every mutex Lease, so that listing
	// mutexes is a label-selector query.
	LabelKind = "konlease.io/kind"
	// KindMutex is the value of LabelKind on a mutex Lease.
	KindMutex = "Mutex"
	// AnnotationUnlock marks a Lease as a mutex. Its value UnlockExplicit
	// means the Lease is released only by its holder's unlock, by TTL expiry
	// when a TTL is set, or by a deliberate force-unlock. This annotation,
	// not the label, is what makes a Lease a mutex: a Lease without it is
	// never modified.
	AnnotationUnlock = "konlease.io/unlock"
	// UnlockExplicit is the value of AnnotationUnlock.
	UnlockExplicit = "explicit"
	// AnnotationTTL holds the mutex's TTL as a Go duration ("30s", "5m").
	// Absent means no TTL.
	AnnotationTTL = "konlease.io/ttl"
	// AnnotationFair is "true" on a fair mutex: its waiters queue in FIFO
	// order (see the package documentation). Absent or "false": waiters
	// race.
	AnnotationFair = "konlease.io/fair"
	// AnnotationHandoffTo, AnnotationHandoffVersion and AnnotationHandoffTTL
	// mark a fair mutex that its last holder handed directly to the waiter
	// at the head of the queue, and that the new holder has not confirmed
	// yet: the queue entry handed to, the resourceVersion of that entry that
	// the releaser saw, and the entry's TTL, after which (counted from the
	// handoff) an unconfirmed handoff may be taken over.
	AnnotationHandoffTo      = "konlease.io/handoff-to"
	AnnotationHandoffVersion = "konlease.io/handoff-version"
	AnnotationHandoffTTL     = "konlease.io/handoff-ttl"
	// FieldManager is the field manager name of every write this package
	// makes.
	FieldManager = "konlease"
	// MaxHolderLength is the longest holder identity accepted, in bytes
	// (the length of a DNS subdomain such as a pod or host name).
	MaxHolderLength = validation.DNS1123SubdomainMaxLength
)

// Phase is a mutex's state as users see it.
type Phase string

const (
	// PhaseUnlocked means nobody holds the mutex.
	PhaseUnlocked Phase = "Unlocked"
	// PhaseLocked means a holder holds the mutex.
	PhaseLocked Phase = "Locked"
	// PhaseExpired means the Lease still names a holder but its TTL has run
	// out, so anyone may take the mutex over.
	PhaseExpired Phase = "Expired"
	// PhaseInvalid means the Lease carries the mutex label but cannot be
	// read as a mutex (its konlease annotations are missing or garbled);
	// Status.Reason says why. Only List reports it: such a Lease is never
	// modified, and every other call refuses it with a *NotMutexError.
	PhaseInvalid Phase = "Invalid"
)

// Status is a mutex as users see it.
type Status struct {
	Namespace string
	Name      string
	// Holder is the current (or, when Phase is PhaseExpired, the last)
	// holder; empty when unlocked.
	Holder string
	Phase  Phase
	// LockedAt is when the holder acquired the mutex; zero when unlocked.
	LockedAt time.Time
	// RenewedAt is the holder's last renewal (or acquisition, or release).
	RenewedAt time.Time
	// ExpiresAt is RenewedAt plus the TTL while locked; zero without TTL or
	// when unlocked.
	ExpiresAt time.Time
	// TTL is zero for a mutex without TTL.
	TTL time.Duration
	// Token is the fencing token of the current or last acquisition: the
	// number of acquisitions over the mutex's life. Zero: never acquired.
	Token int64
	// ResourceVersion of the Lease the status was read from.
	ResourceVersion string
	// TookOverFrom is set only by Mutex.Status: the holder whose hold this
	// acquisition took over because its TTL had run out; empty when the
	// mutex was free.
	TookOverFrom string
	// Reason says why the Lease is not a valid mutex when Phase is
	// PhaseInvalid; empty otherwise.
	Reason string
	// Fair: waiters queue in FIFO order.
	Fair bool
	// Waiters are the holder identities queued on a fair mutex, oldest
	// first, as far as the read that made this status could tell (Get and
	// List fill it in; Mutex.Status does not).
	Waiters []string
}

// record is a mutex Lease, decoded.
type record struct {
	lease  *coordinationv1.Lease
	holder string
	ttl    time.Duration
	token  int32
	// acquired and renewed are the times written by the holder.
	acquired, renewed time.Time
	// lastWrite is the API server's own time of the Lease's last
	// field-changing write (the newest managedFields time, whole seconds),
	// zero if the Lease carries no managed fields.
	lastWrite time.Time
	// fair: the mutex has a queue.
	fair bool
	// handoff is set while a handoff to a queued waiter is unconfirmed.
	handoff *handoff
	// slot and retired, for a semaphore's slot: its number, and whether
	// it is beyond the limit.
	slot    int
	retired bool
}

// handoff is an unconfirmed direct handoff (AnnotationHandoffTo and its
// companions).
type handoff struct {
	// entry is the name of the queue entry handed to, version the
	// resourceVersion of it that the releaser decided on.
	entry, version string
	// ttl is the entry's TTL: the handoff may be taken over once it has
	// run out since the handoff was written.
	ttl time.Duration
}

// decode checks that l is a mutex and decodes it. It refuses any Lease that
// does not carry the mutex annotation, and any whose konlease annotations
// cannot be trusted, so that such a Lease is never written.
func decode(l *coordinationv1.Lease) (*record, error) {
	notMutex := func(format string, args ...any) error {
		return &NotMutexError{Namespace: l.Namespace, Name: l.Name, Reason: fmt.Sprintf(format, args...)}
	}
	if sem, ok := l.Annotations[AnnotationSemaphore]; ok {
		return nil, notMutex("it is slot %s of semaphore %q", l.Annotations[AnnotationSlot], sem)
	}
	if l.Labels[LabelKind] == KindSemaphore {
		return nil, notMutex("it is a semaphore")
	}
	mode, ok := l.Annotations[AnnotationUnlock]
	if !ok {
		return nil, notMutex("it has no %s annotation (a leader-election or other Lease)", AnnotationUnlock)
	}
	if mode != UnlockExplicit {
		return nil, notMutex("annotation %s is %q, want %q", AnnotationUnlock, mode, UnlockExplicit)
	}
	return decodeRecord(l, notMutex)
}

// decodeRecord decodes the single-holder record that a mutex and a
// semaphore's slot share, once the caller has checked the Lease's kind.
// notX makes the kind's refusal.
func decodeRecord(l *coordinationv1.Lease, notX func(format string, args ...any) error) (*record, error) {
	notMutex := notX
	r := &record{lease: l}
	if s, ok := l.Annotations[AnnotationTTL]; ok {
		d, err := ttl.Parse(s)
		if err != nil {
			return nil, notMutex("annotation %s: %s", AnnotationTTL, err.Error())
		}
		r.ttl = d
	}
	switch f := l.Annotations[AnnotationFair]; f {
	case "", "false":
	case "true":
		r.fair = true
	default:
		return nil, notMutex("annotation %s is %q, want \"true\" or \"false\"", AnnotationFair, f)
	}
	// A malformed handoff (an edit by hand) is ignored: the Lease then reads
	// as an ordinary hold, and the holder named confirms nothing by it.
	if to := l.Annotations[AnnotationHandoffTo]; to != "" && r.fair {
		v := l.Annotations[AnnotationHandoffVersion]
		d, err := time.ParseDuration(l.Annotations[AnnotationHandoffTTL])
		if _, verr := resourceversion.CompareResourceVersion(v, v); verr == nil && err == nil && d > 0 {
			r.handoff = &handoff{entry: to, version: v, ttl: d}
		}
	}
	rec := resourcelock.LeaseSpecToLeaderElectionRecord(&l.Spec)
	if rec.LeaderTransitions < 0 {
		return nil, notMutex("spec.leaseTransitions is negative")
	}
	r.holder = rec.HolderIdentity
	r.token = int32(rec.LeaderTransitions)
	r.acquired = rec.AcquireTime.Time
	r.renewed = rec.RenewTime.Time
	for _, mf := range l.ManagedFields {
		if mf.Time != nil && mf.Time.After(r.lastWrite) {
			r.lastWrite = mf.Time.Time
		}
	}
	return r, nil
}

// held reports whether the record names a holder.
func (r *record) held() bool { return r.holder != "" }

// expiry describes the held record for the takeover rules of package ttl.
func (r *record) expiry(firstSeen time.Time) ttl.Expiry {
	return ttl.Expiry{TTL: r.ttl, FirstSeen: firstSeen, LastWrite: r.lastWrite}
}

// status renders the record for users. expired says whether the TTL has
// run out.
func (r *record) status(expired bool) Status {
	s := Status{
		Namespace:       r.lease.Namespace,
		Name:            r.lease.Name,
		Holder:          r.holder,
		Phase:           PhaseUnlocked,
		RenewedAt:       r.renewed,
		TTL:             r.ttl,
		Token:           int64(r.token),
		ResourceVersion: r.lease.ResourceVersion,
		Fair:            r.fair,
	}
	if r.held() {
		s.Phase = PhaseLocked
		if expired {
			s.Phase = PhaseExpired
		}
		s.LockedAt = r.acquired
		if r.ttl > 0 && !r.renewed.IsZero() {
			s.ExpiresAt = r.renewed.Add(r.ttl)
		}
	}
	return s
}

func (r *record) lockedError(cause error) *LockedError {
	s := r.status(false)
	return &LockedError{
		Namespace: s.Namespace, Name: s.Name, Holder: s.Holder,
		LockedAt: s.LockedAt, ExpiresAt: s.ExpiresAt, Token: s.Token, cause: cause,
	}
}

// leaseSpec builds a Lease spec through client-go's leader-election record
// helpers, so that a mutex Lease also reads as a valid leader-election
// record, then applies the mutex's own rules: no holder and no duration are
// unset fields, not zero values.
func leaseSpec(holder string, d time.Duration, acquired, renewed time.Time, token int32) coordinationv1.LeaseSpec {
	rec := resourcelock.LeaderElectionRecord{
		HolderIdentity:    holder,
		AcquireTime:       metav1.Time{Time: acquired},
		RenewTime:         metav1.Time{Time: renewed},
		LeaderTransitions: int(token),
	}
	if d > 0 {
		rec.LeaseDurationSeconds = int(ttl.LeaseDurationSeconds(d))
	}
	spec := resourcelock.LeaderElectionRecordToLeaseSpec(&rec)
	if holder == "" {
		spec.HolderIdentity = nil
	}
	if d <= 0 {
		spec.LeaseDurationSeconds = nil
	}
	if acquired.IsZero() {
		spec.AcquireTime = nil
	}
	if renewed.IsZero() {
		spec.RenewTime = nil
	}
	return spec
}

// newLease is a fresh mutex Lease.
func newLease(namespace, name string, d time.Duration, fair bool) *coordinationv1.Lease {
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   namespace,
			Name:        name,
			Labels:      map[string]string{LabelKind: KindMutex},
			Annotations: map[string]string{AnnotationUnlock: UnlockExplicit},
		},
		Spec: coordinationv1.LeaseSpec{LeaseTransitions: ptr.To[int32](0)},
	}
	if d > 0 {
		l.Annotations[AnnotationTTL] = ttl.Format(d)
		l.Spec.LeaseDurationSeconds = ptr.To(ttl.LeaseDurationSeconds(d))
	}
	if fair {
		l.Annotations[AnnotationFair] = "true"
	}
	return l
}

// copyLease is a copy of r's Lease to write, without a handoff: every write
// of a holder or an operator settles one.
func (r *record) copyLease() *coordinationv1.Lease {
	l := r.lease.DeepCopy()
	for _, a := range []string{AnnotationHandoffTo, AnnotationHandoffVersion, AnnotationHandoffTTL} {
		delete(l.Annotations, a)
	}
	return l
}

// withHolder returns a copy of r's Lease acquired by holder at now: token+1.
func (r *record) acquire(holder string, now time.Time) (*coordinationv1.Lease, int32, error) {
	if r.token == math.MaxInt32 {
		return nil, 0, fmt.Errorf("mutex %s/%s: %w", r.lease.Namespace, r.lease.Name, ErrTokenExhausted)
	}
	l := r.copyLease()
	token := r.token + 1
	l.Spec = leaseSpec(holder, r.ttl, now, now, token)
	return l, token, nil
}

// handTo returns a copy of r's Lease handed directly to queue entry e,
// whose session sess was seen live, at now: token+1, holder e's, and the
// handoff annotations that let e's owner trust it without a write of its
// own.
func (r *record) handTo(e *entry, sess *session, now time.Time) (*coordinationv1.Lease, error) {
	l, _, err := r.acquire(e.holder, now)
	if err != nil {
		return nil, err
	}
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[AnnotationHandoffTo] = e.lease.Name
	l.Annotations[AnnotationHandoffVersion] = sess.lease.ResourceVersion
	l.Annotations[AnnotationHandoffTTL] = sess.ttl.String()
	return l, nil
}

// renew returns a copy of r's Lease with renewTime now.
func (r *record) renew(now time.Time) *coordinationv1.Lease {
	l := r.copyLease()
	l.Spec = leaseSpec(r.holder, r.ttl, r.acquired, now, r.token)
	return l
}

// release returns a copy of r's Lease with no holder, released at now. The
// token (leaseTransitions) is kept: it only ever grows.
func (r *record) release(now time.Time) *coordinationv1.Lease {
	l := r.copyLease()
	l.Spec = leaseSpec("", r.ttl, time.Time{}, now, r.token)
	return l
}

// ValidateName checks a mutex name: it must be a valid Lease name (a DNS
// subdomain: lower-case alphanumerics, '-' and '.', at most 253 characters).
func ValidateName(name string) error {
	if name == "" {
		return fmt.Errorf("mutex name is empty: %w", ErrInvalid)
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("invalid mutex name %q: %s: %w", name, strings.Join(msgs, "; "), ErrInvalid)
	}
	return nil
}

// ValidateNamespace checks a namespace name (a DNS label).
func ValidateNamespace(namespace string) error {
	if namespace == "" {
		return fmt.Errorf("namespace is empty: %w", ErrInvalid)
	}
	if msgs := validation.IsDNS1123Label(namespace); len(msgs) > 0 {
		return fmt.Errorf("invalid namespace %q: %s: %w", namespace, strings.Join(msgs, "; "), ErrInvalid)
	}
	return nil
}

// ValidateHolder checks a holder identity. The API server accepts any
// string in spec.holderIdentity, so this package sets the rules: 1 to
// MaxHolderLength bytes of UTF-8, no control characters, no leading or
// trailing white space (an identity that prints the same as another must
// not be a different holder).
func ValidateHolder(holder string) error {
	switch {
	case holder == "":
		return fmt.Errorf("holder identity is empty: %w", ErrInvalid)
	case len(holder) > MaxHolderLength:
		return fmt.Errorf("holder identity is %d bytes long, at most %d allowed: %w", len(holder), MaxHolderLength, ErrInvalid)
	case !utf8.ValidString(holder):
		return fmt.Errorf("holder identity %q is not valid UTF-8: %w", holder, ErrInvalid)
	case strings.TrimSpace(holder) != holder:
		return fmt.Errorf("holder identity %q has leading or trailing white space: %w", holder, ErrInvalid)
	}
	for _, c := range holder {
		if unicode.IsControl(c) {
			return fmt.Errorf("holder identity %q contains a control character: %w", holder, ErrInvalid)
		}
	}
	return nil
}
