package lock

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/resourceversion"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/utils/ptr"
)

// The queue of a fair mutex: one Lease per waiter, its entry. This file
// holds the entries' mapping and the reads of a queue; fair.go the protocol
// that uses them.
const (
	// KindWaiter is the value of LabelKind on a queue entry.
	KindWaiter = "Waiter"
	// LabelMutex, on a queue entry, names its mutex: the mutex's name when
	// it fits a label value, else "sha256-" and 40 hex digits of its hash.
	// Listing a queue is a query on it (and on LabelKind).
	LabelMutex = "konlease.io/mutex"
	// AnnotationMutex, on a queue entry, is the full name of its mutex;
	// an entry whose annotation does not match the mutex is ignored.
	AnnotationMutex = "konlease.io/mutex"
	// AnnotationSession, on a queue entry, names the session Lease whose
	// renewals keep the entry live.
	AnnotationSession = "konlease.io/session"
	// DefaultWaiterTTL is how long a session lives without renewal: a
	// waiter whose process dies (kill -9, a lost node) is passed over about
	// this long after the session's last renewal. Sessions are renewed
	// every third of it.
	DefaultWaiterTTL = 10 * time.Second
	// MinWaiterTTL and MaxWaiterTTL bound WithWaiterTTL. A session that
	// claims more than MaxWaiterTTL is not trusted (it could stall a queue
	// for longer), and its entries are ignored.
	MinWaiterTTL = time.Second
	MaxWaiterTTL = 5 * time.Minute
	// entrySuffixLen is the length of the random part of an entry's name.
	entrySuffixLen = 10
)

// entry is a queue entry, decoded.
type entry struct {
	lease   *coordinationv1.Lease
	holder  string
	session string
}

// pos is the entry's place in the queue: the resourceVersion it was
// created at, since entries are never updated.
func (e *entry) pos() string { return e.lease.ResourceVersion }

// queueLabel is the LabelMutex value of mutex name.
func queueLabel(name string) string {
	if len(name) <= validation.LabelValueMaxLength && len(validation.IsValidLabelValue(name)) == 0 {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "sha256-" + hex.EncodeToString(sum[:20])
}

// queueSelector selects the entries of mutex name.
func queueSelector(name string) string {
	return labels.SelectorFromSet(labels.Set{LabelKind: KindWaiter, LabelMutex: queueLabel(name)}).String()
}

// entryName is a fresh name for an entry of mutex name: the mutex's name
// (shortened to fit) and a random suffix, so that `kubectl get leases`
// shows whose entry it is. A Create that collides with any other Lease
// fails, and is retried with another suffix: an entry never replaces
// anything.
func entryName(mutex string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	suffix := strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))[:entrySuffixLen]
	prefix := mutex
	if limit := validation.DNS1123SubdomainMaxLength - len(".w-") - entrySuffixLen; len(prefix) > limit {
		prefix = strings.TrimRight(prefix[:limit], ".-")
	}
	return prefix + ".w-" + suffix
}

// newEntryLease is a fresh entry for holder on mutex namespace/name, kept
// live by session.
func newEntryLease(namespace, name, holder, session string, now time.Time) *coordinationv1.Lease {
	t := metav1.NewMicroTime(now)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:   namespace,
			Name:        entryName(name),
			Labels:      map[string]string{LabelKind: KindWaiter, LabelMutex: queueLabel(name)},
			Annotations: map[string]string{AnnotationMutex: name, AnnotationSession: session},
		},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), AcquireTime: &t},
	}
}

// decodeEntry checks that l is an entry of mutex name and decodes it. A
// Lease that merely looks like one (hand-made, garbled) is refused, and
// the queue then ignores it: it can neither take a place nor stall
// anyone.
func decodeEntry(l *coordinationv1.Lease, name string) (*entry, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("lease %s/%s is not a queue entry of mutex %q: %s", l.Namespace, l.Name, name, fmt.Sprintf(format, args...))
	}
	switch {
	case l.Labels[LabelKind] != KindWaiter:
		return nil, bad("label %s is %q", LabelKind, l.Labels[LabelKind])
	case l.Annotations[AnnotationMutex] != name:
		return nil, bad("annotation %s is %q", AnnotationMutex, l.Annotations[AnnotationMutex])
	case !strings.HasPrefix(l.Annotations[AnnotationSession], sessionPrefix):
		return nil, bad("annotation %s is %q", AnnotationSession, l.Annotations[AnnotationSession])
	case l.Spec.HolderIdentity == nil || ValidateHolder(*l.Spec.HolderIdentity) != nil:
		return nil, bad("no valid spec.holderIdentity")
	}
	if _, err := resourceversion.CompareResourceVersion(l.ResourceVersion, l.ResourceVersion); err != nil {
		return nil, fmt.Errorf("%w: %w", bad("its resourceVersion %q does not compare as an integer (an API server older than Kubernetes 1.35?)", l.ResourceVersion), ErrUnsupported)
	}
	return &entry{lease: l, holder: *l.Spec.HolderIdentity, session: l.Annotations[AnnotationSession]}, nil
}

// before orders entries by their place in the queue.
func (e *entry) before(o *entry) bool {
	if c, _ := resourceversion.CompareResourceVersion(e.pos(), o.pos()); c != 0 {
		return c < 0
	}
	return e.lease.Name < o.lease.Name
}

// sightings remembers when this process first saw each version of each
// entry: rule (a) of package ttl judges an entry's expiry from that.
type sightings struct {
	mu   sync.Mutex
	seen map[string]sighting
}

type sighting struct {
	rv string
	at time.Time
}

// see notes that version rv of the Lease name was seen at now and returns
// when that version was first seen.
func (s *sightings) see(name, rv string, now time.Time) time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]sighting{}
	}
	if old, ok := s.seen[name]; ok && old.rv == rv {
		return old.at
	}
	s.seen[name] = sighting{rv: rv, at: now}
	return now
}

func (s *sightings) forget(name string) {
	s.mu.Lock()
	delete(s.seen, name)
	s.mu.Unlock()
}

// queue is a snapshot of a mutex's queue: its valid entries in order, and
// the resourceVersion of the list, from which a watch can follow it.
type queue struct {
	entries []*entry
	rv      string
}

// listQueue reads the queue of mutex namespace/name. Entries that are not
// valid are left out.
func (c *Client) listQueue(ctx context.Context, namespace, name string) (*queue, error) {
	opts := metav1.ListOptions{LabelSelector: queueSelector(name), Limit: listPageSize}
	q := &queue{}
	for {
		list, err := c.leases.Leases(namespace).List(ctx, opts)
		if err != nil {
			if apierrors.IsForbidden(err) {
				return nil, fmt.Errorf("%s/%s is fair, and its queue cannot be read: %w", namespace, name, leaseError("queue of "+namespace+"/"+name, "list", namespace, err))
			}
			return nil, leaseError("queue of "+namespace+"/"+name, "list", namespace, err)
		}
		for i := range list.Items {
			if e, err := decodeEntry(&list.Items[i], name); err == nil {
				q.entries = append(q.entries, e)
			} else {
				c.log.V(2).Info("ignoring lease in the queue", "reason", err.Error())
			}
		}
		q.rv = list.ResourceVersion
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	slices.SortFunc(q.entries, func(a, b *entry) int {
		if a.before(b) {
			return -1
		}
		return 1
	})
	return q, nil
}

// liveSession reports whether session sess is live as of now, judged as
// any TTL is (package ttl); s supplies when each version was first seen.
func (c *Client) liveSession(sess *session, s *sightings, now time.Time) bool {
	if sess == nil {
		return false
	}
	return !sess.expiry(s.see(sess.lease.Name, sess.lease.ResourceVersion, now)).Expired(now, c.server)
}

// getSession reads a session; a missing or invalid one is nil.
func (c *Client) getSession(ctx context.Context, namespace, name string) (*session, error) {
	l, err := c.leases.Leases(namespace).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, leaseError("session "+namespace+"/"+name, "get", namespace, err)
	}
	sess, err := decodeSession(l)
	if err != nil {
		c.log.V(2).Info("ignoring an invalid session", "reason", err.Error())
		return nil, nil
	}
	return sess, nil
}

// deleteQueue deletes every entry of mutex namespace/name (Delete of the
// mutex). Waiters whose entries go see their mutex gone.
func (c *Client) deleteQueue(ctx context.Context, namespace, name string) error {
	q, err := c.listQueue(ctx, namespace, name)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range q.entries {
		if err := c.deleteExact(ctx, e.lease); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// waiters returns, for each fair mutex in namespace ("": all), the
// identities of its live waiters, oldest first, keyed by namespace/name.
// It reads every entry and session there: two requests.
func (c *Client) waiters(ctx context.Context, namespace string) (map[string][]string, error) {
	list := func(kind string) ([]coordinationv1.Lease, error) {
		var out []coordinationv1.Lease
		opts := metav1.ListOptions{LabelSelector: labels.SelectorFromSet(labels.Set{LabelKind: kind}).String(), Limit: listPageSize}
		for {
			l, err := c.leases.Leases(namespace).List(ctx, opts)
			if err != nil {
				return nil, listError(namespace, err)
			}
			out = append(out, l.Items...)
			if l.Continue == "" {
				return out, nil
			}
			opts.Continue = l.Continue
		}
	}
	sessLeases, err := list(KindSession)
	if err != nil {
		return nil, err
	}
	entryLeases, err := list(KindWaiter)
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	var seen sightings
	live := map[string]bool{}
	for i := range sessLeases {
		if s, err := decodeSession(&sessLeases[i]); err == nil {
			live[s.lease.Namespace+"/"+s.lease.Name] = c.liveSession(s, &seen, now)
		}
	}
	byMutex := map[string][]*entry{}
	for i := range entryLeases {
		l := &entryLeases[i]
		e, err := decodeEntry(l, l.Annotations[AnnotationMutex])
		if err != nil || !live[l.Namespace+"/"+e.session] {
			continue
		}
		key := l.Namespace + "/" + l.Annotations[AnnotationMutex]
		byMutex[key] = append(byMutex[key], e)
	}
	out := map[string][]string{}
	for key, es := range byMutex {
		slices.SortFunc(es, func(a, b *entry) int {
			if a.before(b) {
				return -1
			}
			return 1
		})
		for _, e := range es {
			out[key] = append(out[key], e.holder)
		}
	}
	return out, nil
}

// deadEntry is an entry whose session is gone (sess nil) or expired.
type deadEntry struct {
	e    *entry
	sess *session
}

// judgeEntries sorts entries into live and dead by their sessions, reading
// each session once; it writes nothing. s supplies when each version was
// first seen. Entries of ownSession, the caller's own session, are live
// without a read.
func (c *Client) judgeEntries(ctx context.Context, namespace string, entries []*entry, s *sightings, ownSession string) (live []*entry, dead []deadEntry, err error) {
	cache := map[string]*session{}
	for _, e := range entries {
		if ownSession != "" && e.session == ownSession {
			live = append(live, e)
			continue
		}
		sess, ok := cache[e.session]
		if !ok {
			if sess, err = c.getSession(ctx, namespace, e.session); err != nil {
				return nil, nil, err
			}
			cache[e.session] = sess
		}
		if c.liveSession(sess, s, c.clock.Now()) {
			live = append(live, e)
		} else {
			dead = append(dead, deadEntry{e: e, sess: sess})
		}
	}
	return live, dead, nil
}
