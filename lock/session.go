package lock

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/ttl"
)

// KindSession is the value of LabelKind on a session Lease: the liveness
// of one process's waiters in one namespace (see the package
// documentation, "Fair mutexes").
const KindSession = "Session"

// sessionPrefix starts every session's name.
const sessionPrefix = "konlease-session-"

// sentHistory is how many of a session's latest writes remember when they
// were sent: a handoff names one that the releaser saw, which is at most a
// renewal or two old.
const sentHistory = 8

// session is a session Lease, decoded.
type session struct {
	lease     *coordinationv1.Lease
	ttl       time.Duration
	lastWrite time.Time
}

func decodeSession(l *coordinationv1.Lease) (*session, error) {
	switch {
	case l.Labels[LabelKind] != KindSession || !strings.HasPrefix(l.Name, sessionPrefix):
		return nil, fmt.Errorf("lease %s/%s is not a konlease session", l.Namespace, l.Name)
	case l.Spec.LeaseDurationSeconds == nil:
		return nil, fmt.Errorf("session %s/%s has no spec.leaseDurationSeconds", l.Namespace, l.Name)
	}
	d := time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	if d < MinWaiterTTL || d > MaxWaiterTTL {
		return nil, fmt.Errorf("session %s/%s: spec.leaseDurationSeconds %d is outside %s to %s", l.Namespace, l.Name, *l.Spec.LeaseDurationSeconds, MinWaiterTTL, MaxWaiterTTL)
	}
	s := &session{lease: l, ttl: d}
	for _, mf := range l.ManagedFields {
		if mf.Time != nil && mf.Time.After(s.lastWrite) {
			s.lastWrite = mf.Time.Time
		}
	}
	return s, nil
}

// expiry describes the session for the takeover rules of package ttl.
func (s *session) expiry(firstSeen time.Time) ttl.Expiry {
	return ttl.Expiry{TTL: s.ttl, FirstSeen: firstSeen, LastWrite: s.lastWrite}
}

// sessions are a Client's own sessions, one per namespace.
type sessions struct {
	mu sync.Mutex
	by map[string]*ownSession
}

// ownSession is this process's session in one namespace, kept alive by a
// goroutine while entries use it.
type ownSession struct {
	c         *Client
	namespace string

	mu sync.Mutex
	// cur is the session as last written; nil before it exists.
	cur *session
	// sent maps the resourceVersions of its latest writes to the local time
	// each write was sent.
	sent map[string]time.Time
	// order lists the keys of sent, oldest first.
	order []string
	users int
	// orphans are entries under this session whose deletion failed. A live
	// session keeps them live, and everyone queued behind one would wait
	// for as long as the session lives: the keeper deletes them.
	orphans []*coordinationv1.Lease
	// idle is when users last dropped to zero.
	idle time.Time
	// lost is closed when the session was found deleted or expired: the
	// entries that use it are dead, and their waiters queue again.
	lost chan struct{}
	stop context.CancelFunc
	done chan struct{}
}

// session returns this client's session in namespace, created and kept
// alive for as long as the caller uses it: release gives it back. The
// session lingers for a waiter TTL after its last user, so that a process
// that waits again and again does not create one each time.
func (c *Client) session(ctx context.Context, namespace string) (*ownSession, *session, error) {
	c.sessions.mu.Lock()
	if c.sessions.by == nil {
		c.sessions.by = map[string]*ownSession{}
	}
	s := c.sessions.by[namespace]
	if s == nil {
		s = &ownSession{c: c, namespace: namespace, sent: map[string]time.Time{}, lost: make(chan struct{})}
		c.sessions.by[namespace] = s
	}
	s.users++
	c.sessions.mu.Unlock()

	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	if cur != nil {
		return s, cur, nil
	}
	if err := s.create(ctx); err != nil {
		s.release()
		return nil, nil, err
	}
	s.mu.Lock()
	cur = s.cur
	s.mu.Unlock()
	return s, cur, nil
}

// create writes the session and starts its keeper.
func (s *ownSession) create(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur != nil {
		return nil
	}
	c := s.c
	var b [10]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	name := sessionPrefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b[:]))
	now := metav1.NewMicroTime(c.serverNow())
	host, _ := os.Hostname()
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: s.namespace, Name: name, Labels: map[string]string{LabelKind: KindSession}},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(strings.TrimSpace(host + " pid " + strconv.Itoa(os.Getpid()))),
			LeaseDurationSeconds: ptr.To(ttl.LeaseDurationSeconds(c.waiterTTL)),
			AcquireTime:          &now, RenewTime: &now,
		},
	}
	sent := c.clock.Now()
	out, err := c.create(ctx, l)
	if err != nil {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("waiting in the queue of a fair mutex or semaphore needs a session Lease, which this identity may not create: %w", leaseError("session "+s.namespace+"/"+name, "create", s.namespace, err))
		}
		return leaseError("session "+s.namespace+"/"+name, "create", s.namespace, err)
	}
	cur, err := decodeSession(out)
	if err != nil {
		return err
	}
	s.setLocked(cur, sent)
	ctx, s.stop = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	go func() {
		defer close(s.done)
		s.keep(ctx)
	}()
	c.log.V(1).Info("created session", "namespace", s.namespace, "session", name)
	return nil
}

func (s *ownSession) setLocked(cur *session, sent time.Time) {
	s.cur = cur
	rv := cur.lease.ResourceVersion
	s.sent[rv] = sent
	s.order = append(s.order, rv)
	for len(s.order) > sentHistory {
		delete(s.sent, s.order[0])
		s.order = s.order[1:]
	}
}

// sentOf is when the write that made version rv of the session was sent.
func (s *ownSession) sentOf(name, rv string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cur == nil || s.cur.lease.Name != name {
		return time.Time{}, false
	}
	t, ok := s.sent[rv]
	return t, ok
}

// orphan hands the keeper an entry of this session that could not be
// deleted: it tries again after each renewal. The entry is live only while
// its session is: if that is lost or removed, the entry dies with it (and
// the next session's keeper still deletes it).
func (s *ownSession) orphan(l *coordinationv1.Lease) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.orphans = append(s.orphans, l)
}

// deleteOrphans tries once to delete each orphan, within d.
func (s *ownSession) deleteOrphans(ctx context.Context, d time.Duration) {
	s.mu.Lock()
	todo := s.orphans
	s.orphans = nil
	s.mu.Unlock()
	if len(todo) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var left []*coordinationv1.Lease
	for _, l := range todo {
		if err := s.c.deleteExact(ctx, l); err != nil && !apierrors.IsConflict(err) {
			left = append(left, l)
			continue
		}
		// Deleted, gone, or (a conflict) changed by someone else, which
		// makes it no entry this session made any more: done either way.
		s.c.log.V(1).Info("deleted a queue entry left behind", "namespace", s.namespace, "entry", l.Name)
	}
	s.mu.Lock()
	s.orphans = append(s.orphans, left...)
	s.mu.Unlock()
}

// lostC is closed when the session is lost.
func (s *ownSession) lostC() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lost
}

// release gives back a use of the session.
func (s *ownSession) release() {
	c := s.c
	c.sessions.mu.Lock()
	s.users--
	if s.users == 0 {
		s.idle = c.clock.Now()
	}
	c.sessions.mu.Unlock()
}

// keep renews the session every third of its TTL, deleting the orphans
// after each renewal, and deletes it once it has been unused for a TTL. A renewal that finds the session gone, or
// cannot succeed before the session could have expired, ends it: lost
// closes, and the next user creates a new one.
func (s *ownSession) keep(ctx context.Context) {
	c := s.c
	d := c.waiterTTL
	for {
		t := c.clock.NewTimer(ttl.RenewInterval(d))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		c.sessions.mu.Lock()
		unused := s.users == 0 && !s.idle.IsZero() && c.clock.Since(s.idle) >= d
		if unused {
			delete(c.sessions.by, s.namespace)
		}
		c.sessions.mu.Unlock()
		if unused {
			s.remove()
			return
		}
		if err := s.renew(ctx); err != nil {
			c.log.V(1).Info("session lost", "namespace", s.namespace, "reason", err.Error())
			s.mu.Lock()
			close(s.lost)
			s.lost, s.cur = make(chan struct{}), nil
			s.sent, s.order = map[string]time.Time{}, nil
			s.mu.Unlock()
			return
		}
		s.deleteOrphans(ctx, ttl.RenewInterval(d))
	}
}

// renew renews the session with conditional writes, retrying failures
// until the session could have expired.
func (s *ownSession) renew(ctx context.Context) error {
	c := s.c
	s.mu.Lock()
	cur := s.cur
	s.mu.Unlock()
	last, _ := s.sentOf(cur.lease.Name, cur.lease.ResourceVersion)
	// A duration on this client's clock, not an absolute time: the clock
	// may be skewed (WithClock), and the context counts real time.
	rctx, cancel := context.WithTimeout(ctx, max(ttl.HolderDeadline(last, cur.ttl).Sub(c.clock.Now()), 0))
	defer cancel()
	rt := newRetrier(c.clock, c.log, cur.ttl, "renewing a session")
	for {
		l := cur.lease.DeepCopy()
		now := metav1.NewMicroTime(c.serverNow())
		l.Spec.RenewTime = &now
		sent := c.clock.Now()
		out, err := c.update(rctx, l)
		if err == nil {
			next, derr := decodeSession(out)
			if derr != nil {
				return derr
			}
			s.mu.Lock()
			s.setLocked(next, sent)
			s.mu.Unlock()
			return nil
		}
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			// Someone deleted it (it looked expired to them) or wrote it:
			// either way its waiters can no longer be sure to be live.
			return fmt.Errorf("session %s/%s was changed by someone else: %w", s.namespace, cur.lease.Name, err)
		}
		if !rt.wait(rctx, err) {
			return fmt.Errorf("session %s/%s: no renewal succeeded in time: %w", s.namespace, cur.lease.Name, err)
		}
	}
}

// remove deletes the session (it is unused).
func (s *ownSession) remove() {
	c := s.c
	s.mu.Lock()
	cur := s.cur
	s.cur = nil
	s.mu.Unlock()
	if cur == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), DefaultCleanupTimeout)
	defer cancel()
	if err := c.deleteExact(ctx, cur.lease); err != nil {
		c.log.V(1).Info("deleting an unused session failed; it expires", "namespace", s.namespace, "session", cur.lease.Name, "error", err.Error())
	}
}

// Close deletes this client's sessions (the liveness records of its fair
// waiters) and stops renewing them. A client that is not closed leaves
// them to expire, which others clean up. Waits in progress should have
// ended first: their entries would be passed over.
func (c *Client) Close(ctx context.Context) error {
	c.background.Wait()
	defer c.events.close()
	c.sessions.mu.Lock()
	all := c.sessions.by
	c.sessions.by = nil
	c.sessions.mu.Unlock()
	var errs []error
	for _, s := range all {
		if s.stop != nil {
			s.stop()
			<-s.done
		}
		s.mu.Lock()
		cur := s.cur
		s.cur = nil
		s.mu.Unlock()
		if cur != nil {
			if err := c.deleteExact(ctx, cur.lease); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// deleteExact deletes the very object l (same UID and resourceVersion):
// never a newer version, never another object of that name. Already gone
// is success.
func (c *Client) deleteExact(ctx context.Context, l *coordinationv1.Lease) error {
	pre := metav1.Preconditions{UID: &l.UID, ResourceVersion: &l.ResourceVersion}
	err := c.leases.Leases(l.Namespace).Delete(ctx, l.Name, metav1.DeleteOptions{Preconditions: &pre})
	if err == nil || apierrors.IsNotFound(err) {
		return nil
	}
	return leaseError("lease "+l.Namespace+"/"+l.Name, "delete", l.Namespace, err)
}

// mayDelete checks, once per namespace, that this identity may delete
// leases there, before a waiter creates an entry it would not be allowed to
// remove: a server-side dry run of deleting a name that cannot exist
// answers 404 when allowed and 403 when not, and changes nothing.
func (c *Client) mayDelete(ctx context.Context, namespace string) error {
	if _, ok := c.deletable.Load(namespace); ok {
		return nil
	}
	probe := sessionPrefix + "rbac-probe"
	err := c.leases.Leases(namespace).Delete(ctx, probe, metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}})
	switch {
	case err == nil, apierrors.IsNotFound(err):
		c.deletable.Store(namespace, true)
		return nil
	case apierrors.IsForbidden(err):
		return fmt.Errorf("waiting in the queue of a fair mutex or semaphore needs the \"delete\" verb on leases, to leave the queue again; nothing was queued: %w", leaseError("namespace "+namespace, "delete", namespace, err))
	}
	return leaseError("namespace "+namespace, "delete", namespace, err)
}
