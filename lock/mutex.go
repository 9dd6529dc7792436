package lock

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/konlease/konlease/ttl"
)

// DefaultCleanupTimeout bounds the requests that clean up after a Lock whose
// own context has ended: settling a write whose outcome is unknown,
// releasing what it took, and leaving a fair mutex's queue. They share it,
// so Lock returns at most this long after its context ends.
const DefaultCleanupTimeout = 10 * time.Second

// Option configures a Mutex.
type Option func(*Mutex)

// WithHolder sets the holder identity. The default is unique per handle: the
// host name plus a random suffix. Two handles with the same identity are
// the same holder: either may unlock what the other locked.
func WithHolder(holder string) Option { return func(m *Mutex) { m.holder = holder } }

// WithTTL sets the TTL that Lock gives the mutex when it has to create it.
// An existing mutex keeps its own TTL: the TTL is a property of the mutex,
// which all its holders and waiters must agree on. To make a mutex with
// another TTL an error rather than a silent change of terms, use
// WithRequiredTTL.
func WithTTL(d time.Duration) Option { return func(m *Mutex) { m.createTTL, m.requireTTL = d, false } }

// WithRequiredTTL is WithTTL made strict: the mutex must have TTL d (zero:
// no TTL). Lock creates a missing mutex with d, and refuses an existing one
// whose TTL differs with an error wrapping ErrTTLConflict, before writing
// anything: a caller that relies on a crashed holder's lock running out
// after d must not get a lock that never runs out, nor one that runs out
// sooner than it thinks.
func WithRequiredTTL(d time.Duration) Option {
	return func(m *Mutex) { m.createTTL, m.requireTTL = d, true }
}

// WithFair makes the mutex that Lock creates, when it does not exist, a
// fair one (see the package documentation). An existing mutex keeps its own
// fairness: like the TTL, it belongs to the mutex.
func WithFair() Option { return func(m *Mutex) { m.createFair = true } }

// WithRetryNotify sets a function that Lock, TryLock and Unlock call, on
// the calling goroutine, when a transient failure makes them start
// retrying: err is the failure, until when they give up. It must not block.
// A CLI uses it to say why it seems to hang.
func WithRetryNotify(fn func(err error, until time.Time)) Option {
	return func(m *Mutex) { m.onRetry = fn }
}

// WithRetryTimeout bounds how long Lock, TryLock and Unlock retry transient
// failures (the API server unreachable, overloaded or failing) when their
// context has no deadline, and how long the Unlock at the end of With goes
// on trying; see DefaultRetryTimeout. With a deadline, they retry until it.
func WithRetryTimeout(d time.Duration) Option { return func(m *Mutex) { m.retryTimeout = d } }

// WithoutRenewal turns off the background renewal of a TTL mutex: the TTL
// then counts from the acquisition, and Done closes shortly before it runs
// out. This is how a process that exits while holding the lock (the CLI's
// lock command) uses it.
func WithoutRenewal() Option { return func(m *Mutex) { m.renew = false } }

// WithCleanupTimeout bounds the requests made after the caller's context
// ended, all of them together (see DefaultCleanupTimeout).
func WithCleanupTimeout(d time.Duration) Option { return func(m *Mutex) { m.cleanupTimeout = d } }

// WithWaitNotify sets a function that Lock calls, on its own goroutine, when
// it starts to wait for another holder and whenever the holder it waits for
// changes. It must not block.
func WithWaitNotify(fn func(Status)) Option { return func(m *Mutex) { m.onWait = fn } }

// Mutex is a handle on one mutex for one holder identity. Its methods may
// be called from any goroutine; Lock, TryLock and Unlock are serialized.
type Mutex struct {
	c           *Client
	namespace   string
	name        string
	holder      string
	createTTL   time.Duration
	requireTTL  bool
	createFair  bool
	createLimit int
	// requireLimit: WithRequiredLimit.
	requireLimit bool
	onSemWait    func(SemaphoreStatus)
	// slotNum is the slot's number, for a slot's handle.
	slotNum int
	// hintSeen is when the hint (last) was first seen, if a semaphore
	// handed it over from its own read: the TTL rules may count from then.
	hintSeen time.Time
	// slotOf, for the handle of a semaphore's slot, is the semaphore's
	// name: the Lease is a slot, not a mutex, and fairness is the
	// semaphore's business (see semaphore.go).
	slotOf         string
	renew          bool
	retryTimeout   time.Duration
	cleanupTimeout time.Duration
	onWait         func(Status)
	onRetry        func(err error, until time.Time)
	log            logr.Logger

	// op serializes Lock, TryLock and Unlock.
	op sync.Mutex

	// mu guards the fields below.
	mu sync.Mutex
	// cur is the current hold, nil when the handle does not hold the
	// mutex (a lost hold stays until Unlock or the next Lock).
	cur *hold
	// prev is the last hold that ended, for Err.
	prev *hold
	// last is the newest mutex record this handle wrote; the next Lock
	// tries it first and so needs no read when nobody else used the mutex.
	last *record
	// tookOver is the holder whose expired hold the current hold took
	// over; empty if the mutex was free.
	tookOver string

	// refused is the token of an acquisition this Lock call made and
	// refused because it was confirmed too late (see startHold), -1 if
	// none. Guarded by op.
	refused int32
	// joining, set by the queue protocol before it takes or claims a fair
	// mutex, is what the hold it starts must look after. Guarded by op.
	joining *queueHold
}

// hold is one acquisition.
type hold struct {
	token int32
	done  chan struct{}
	// err says why done closed; nil for Unlock. Guarded by Mutex.mu.
	err error

	// Owned by the keeper goroutine while it runs, by Unlock after.
	rec      *record
	deadline time.Time // local clock; zero without TTL
	// window is non-zero while the hold is an unconfirmed handoff.
	window  time.Duration
	cancel  context.CancelFunc
	stopped chan struct{}
	// queue is set on a hold of a fair mutex.
	queue *queueHold
	// start is when the hold began (local clock), for the metrics.
	start time.Time
}

// queueHold is what a hold of a fair mutex looks after besides the mutex:
// the view of the queue that Unlock hands off from, and, once, the entry
// through which it waited.
type queueHold struct {
	view *queueView
	// own is this holder's entry, deleted at the start of the hold; sess
	// its session, given back after that. Both nil when the mutex was
	// taken without queuing.
	own  *entry
	sess *ownSession
	// cleaned: own was deleted (or given up on). Owned by the keeper.
	cleaned bool
}

// NewMutex returns a handle on the mutex namespace/name. It validates the
// arguments and sends nothing. The namespace "" is the client's default
// namespace (see New and WithDefaultNamespace); a client without one
// refuses it with ErrInvalid.
func (c *Client) NewMutex(namespace, name string, opts ...Option) (*Mutex, error) {
	namespace, err := c.mutexNamespace(namespace)
	if err != nil {
		return nil, err
	}
	if err := validateRef(namespace, name); err != nil {
		return nil, err
	}
	m, err := c.newHandle(namespace, name, opts)
	if err != nil {
		return nil, err
	}
	if m.createLimit != 0 || m.onSemWait != nil {
		return nil, fmt.Errorf("mutex %s/%s: WithLimit and WithSemaphoreWaitNotify are for semaphores: %w", namespace, name, ErrInvalid)
	}
	return m, nil
}

// newHandle applies and validates opts: what a mutex's handle and a
// semaphore's share.
func (c *Client) newHandle(namespace, name string, opts []Option) (*Mutex, error) {
	m := &Mutex{c: c, namespace: namespace, name: name, renew: true, cleanupTimeout: DefaultCleanupTimeout, retryTimeout: DefaultRetryTimeout}
	for _, o := range opts {
		o(m)
	}
	if m.holder == "" {
		m.holder = defaultHolder()
	}
	if err := ValidateHolder(m.holder); err != nil {
		return nil, err
	}
	if m.createTTL != 0 {
		if err := ttl.Validate(m.createTTL); err != nil {
			return nil, invalid(fmt.Errorf("mutex %s/%s: %w", namespace, name, err))
		}
	}
	if m.cleanupTimeout <= 0 {
		return nil, fmt.Errorf("cleanup timeout %s is not positive: %w", m.cleanupTimeout, ErrInvalid)
	}
	if m.retryTimeout <= 0 {
		return nil, fmt.Errorf("retry timeout %s is not positive: %w", m.retryTimeout, ErrInvalid)
	}
	m.log = c.log.WithValues("namespace", namespace, "mutex", name, "holder", m.holder)
	return m, nil
}

// endMetrics reports the end of hold h.
func (m *Mutex) endMetrics(h *hold, end HoldEnd) {
	m.c.metrics.Holding(m.namespace, m.queueName(), -1)
	m.c.metrics.HoldEnded(m.namespace, m.queueName(), end, m.c.clock.Since(h.start))
}

// lossReasonOf is the clause of a *LostError, else the error's text.
func lossReasonOf(err error) string {
	var le *LostError
	if errors.As(err, &le) {
		return le.Reason
	}
	return err.Error()
}

// settings is a fresh handle with m's settings and none of its state: the
// handle of a semaphore's slot is made from the semaphore's template.
func (m *Mutex) settings() *Mutex {
	return &Mutex{
		c: m.c, namespace: m.namespace, name: m.name, holder: m.holder,
		createTTL: m.createTTL, requireTTL: m.requireTTL, createFair: m.createFair, createLimit: m.createLimit, requireLimit: m.requireLimit,
		renew: m.renew, retryTimeout: m.retryTimeout, onRetry: m.onRetry, cleanupTimeout: m.cleanupTimeout,
		onWait: m.onWait, onSemWait: m.onSemWait, slotOf: m.slotOf, log: m.log,
	}
}

// newRetrier paces the retries of one Lock, TryLock or Unlock call.
func (m *Mutex) newRetrier(what string) *retrier {
	r := newRetrier(m.c.clock, m.log, m.retryTimeout, what)
	r.notify = m.onRetry
	return r
}

// defaultHolder is the host name (the pod name in a pod) plus a random
// suffix, so that two handles never share an identity by accident.
func defaultHolder() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "konlease"
	}
	var b [4]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	if len(host) > MaxHolderLength-9 {
		host = host[:MaxHolderLength-9]
	}
	return host + "-" + hex.EncodeToString(b[:])
}

// Namespace returns the mutex's namespace.
func (m *Mutex) Namespace() string { return m.namespace }

// Name returns the mutex's name.
func (m *Mutex) Name() string { return m.name }

// Holder returns this handle's holder identity.
func (m *Mutex) Holder() string { return m.holder }

// closedChan is returned by Done when nothing is held.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Done returns a channel that is closed when the current hold ends: by
// Unlock, or as soon as this holder can no longer be sure it holds the lock
// (its renewals failed up to a safe margin before the TTL, or the Lease
// shows it was force-unlocked, taken over or deleted). It closes before any
// other client may take the mutex over. When the handle holds nothing the
// channel is already closed.
func (m *Mutex) Done() <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil {
		return closedChan
	}
	return m.cur.done
}

// Err says why the latest hold's Done channel closed: nil while it is held
// or after it was released by Unlock; an error wrapping ErrLost if it was
// lost.
func (m *Mutex) Err() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur != nil {
		return m.cur.err
	}
	if m.prev != nil {
		return m.prev.err
	}
	return nil
}

// Token returns the fencing token of the current hold, 0 when nothing is
// held. Tokens strictly increase over the life of the mutex: a resource
// that remembers the largest token it accepted and refuses smaller ones
// cannot be written by a holder that lost the lock without knowing.
func (m *Mutex) Token() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil || m.cur.err != nil {
		return 0
	}
	return int64(m.cur.token)
}

// Status returns the current hold's acquisition as this handle wrote it
// (holder, token, lockedAt, TTL, expiresAt as of the acquisition, which
// renewals extend, and TookOverFrom), and whether the handle holds the
// mutex. It makes no request.
func (m *Mutex) Status() (Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == nil || m.cur.err != nil || m.last == nil {
		return Status{}, false
	}
	st := m.last.status(false)
	st.TookOverFrom = m.tookOver
	return st, true
}

// Lock acquires the mutex, waiting as long as ctx allows; a context deadline
// is the lock timeout. It creates the mutex if it does not exist. If ctx
// ends first, the error matches ErrLocked (it is a *LockedError naming the
// holder) and wraps ctx's error, and no lock is left behind: the requests
// that make sure of it (releasing what an unanswered write may have taken,
// leaving a fair mutex's queue) share one cleanup timeout
// (WithCleanupTimeout), so Lock returns at most that long after ctx ends.
//
// Waiting costs one watch on the Lease: an Unlock wakes the waiter within
// one watch event, and the waiter takes the mutex with one write. A TTL
// mutex whose holder stopped renewing is taken over when the TTL has run
// out (see package ttl for how that is judged without trusting clocks).
//
// Transient failures (the API server unreachable, overloaded or failing)
// are retried with backoff until ctx ends, or, without a deadline, for the
// retry timeout (WithRetryTimeout); the error then names the last failure
// rather than ErrLocked.
func (m *Mutex) Lock(ctx context.Context) error { return m.acquire(ctx, true) }

// TryLock makes one decision: it acquires the mutex if it is free, and
// otherwise returns a *LockedError (errors.Is(err, ErrLocked)) that says who
// holds it and until when. Transient failures are retried as for Lock, so
// that a brief outage does not pass for a busy mutex or an error.
func (m *Mutex) TryLock(ctx context.Context) error { return m.acquire(ctx, false) }

func (m *Mutex) acquire(ctx context.Context, wait bool) (err error) {
	m.op.Lock()
	defer m.op.Unlock()
	if m.slotOf == "" { // a semaphore reports its own calls, not its slots'
		start := m.c.clock.Now()
		if wait {
			m.c.metrics.Waiting(m.namespace, m.name, 1)
			defer m.c.metrics.Waiting(m.namespace, m.name, -1)
		}
		defer func() { m.c.metrics.Acquire(m.namespace, m.name, acquireResult(err), m.c.clock.Since(start)) }()
	}

	m.mu.Lock()
	cur, hint := m.cur, m.last
	if cur != nil && cur.err == nil {
		m.mu.Unlock()
		return fmt.Errorf("mutex %s/%s: holder %q: %w", m.namespace, m.name, m.holder, ErrAlreadyHeld)
	}
	// A lost hold that was never unlocked: forget it, but remember its
	// token so that its own stale record may be taken over.
	var lost int32 = -1
	if cur != nil {
		lost = cur.token
		m.prev, m.cur = cur, nil
	}
	m.mu.Unlock()
	if cur != nil {
		cur.cancel()
		<-cur.stopped
		hint = cur.rec
	}
	if err := ctx.Err(); err != nil {
		return err
	}

	a := &acquirer{m: m, wait: wait, retry: m.newRetrier("acquiring the mutex")}
	defer a.stop()
	return m.race(ctx, a, hint, lost)
}

// startHold records a new hold, acquired by a write sent at sent (taking
// it over from prev, if not empty), and starts its keeper. It refuses (false) a TTL hold whose deadline has
// already passed: the confirmation came so late that the TTL may have run
// out meanwhile and another holder taken over, so reporting it acquired
// could put two holders in the critical section. The record is released
// again, conditionally, so that it never clears another holder's.
func (m *Mutex) startHold(ctx context.Context, r *record, at attempt) bool {
	token, sent, prev := at.token, at.sent, at.prev
	h := &hold{token: token, done: make(chan struct{}), rec: r, window: at.window, queue: m.joining}
	m.joining = nil
	switch {
	case at.window > 0:
		h.deadline = ttl.HolderDeadline(sent, at.window)
	case r.ttl > 0:
		h.deadline = ttl.HolderDeadline(sent, r.ttl)
	}
	if !h.deadline.IsZero() {
		if !m.c.clock.Now().Before(h.deadline) {
			m.log.Info("acquisition confirmed too late to be trusted; releasing it", "token", token,
				"sent", sent, "deadline", h.deadline)
			m.refused = token
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), m.cleanupTimeout)
			defer cancel()
			if _, err := m.c.update(cctx, r.release(m.c.serverNow())); err != nil && !apierrors.IsConflict(err) {
				m.log.Info("releasing a late acquisition failed; its TTL frees it", "token", token, "error", err.Error())
			}
			return false
		}
	}
	m.mu.Lock()
	if m.cur != nil {
		m.prev = m.cur
	}
	h.start = m.c.clock.Now()
	m.cur, m.last, m.tookOver = h, r, prev
	m.mu.Unlock()
	m.c.metrics.Holding(m.namespace, m.queueName(), 1)
	if prev != "" {
		m.c.event(r.lease, false, EventTakenOver, "TakeOver", "%q took it over from %q, whose TTL had run out (token %d)", m.holder, prev, token)
	} else {
		m.c.event(r.lease, false, EventAcquired, "Acquire", "%q acquired it (token %d)", m.holder, token)
	}
	if h.queue != nil && !m.renew {
		// Nobody stays behind to clean up (the CLI's lock exits at once):
		// an entry left behind would be handed the mutex again.
		m.cleanEntry(ctx, h.queue)
	}
	if prev != "" {
		m.log.V(1).Info("acquired mutex, taking it over from a holder whose TTL had run out", "token", token, "ttl", r.ttl, "previous", prev)
	} else {
		m.log.V(1).Info("acquired mutex", "token", token, "ttl", r.ttl)
	}
	m.startKeeper(h, sent)
	return true
}

// subject names what this handle's Lease is: the mutex, or for a
// semaphore's handle the semaphore (and slot).
func (m *Mutex) subject() string {
	switch {
	case m.slotOf == "":
		return "mutex " + m.namespace + "/" + m.name
	case m.name == m.slotOf:
		return semSubject(m.namespace, m.slotOf, -1)
	}
	return semSubject(m.namespace, m.slotOf, m.slotNum)
}

// semSubject names the semaphore namespace/name, and its slot unless slot
// is -1.
func semSubject(namespace, name string, slot int) string {
	if slot < 0 {
		return "semaphore " + namespace + "/" + name
	}
	return "semaphore " + namespace + "/" + name + " (slot " + strconv.Itoa(slot) + ")"
}

// apiError is the package's apiError for this handle's Lease.
func (m *Mutex) apiError(verb string, err error) error {
	return leaseError(m.subject(), verb, m.namespace, err)
}

// lose ends hold h with err unless it already ended.
func (m *Mutex) lose(h *hold, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-h.done:
		return
	default:
	}
	h.err = err
	close(h.done)
	m.log.Info("lost mutex", "token", h.token, "reason", err.Error())
	end := EndInvalid
	var le *LostError
	if errors.As(err, &le) {
		end = le.End
	}
	m.endMetrics(h, end)
	m.c.event(h.rec.lease, true, EventLost, "Lose", "%q lost it (token %d): %s", m.holder, h.token, lossReasonOf(err))
}

// end closes hold h and forgets it; last is the newest record read or
// written, the next Lock's hint (nil: no hint).
func (m *Mutex) end(h *hold, last *record) {
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-h.done:
	default:
		close(h.done)
		m.endMetrics(h, EndReleased)
		m.c.event(h.rec.lease, false, EventReleased, "Release", "%q released it (token %d)", m.holder, h.token)
	}
	if m.cur == h {
		m.cur = nil
	}
	m.prev = h
	m.last = last
}

// With runs fn while holding the mutex: it locks (waiting as ctx allows),
// calls fn with a context that is cancelled if the lock is lost, and always
// unlocks afterwards, with a fresh context, also when ctx has ended or fn
// panicked (the panic then continues). That Unlock retries transient
// failures for the retry timeout (DefaultRetryTimeout, 30s), so that an API
// server that is away for a few seconds as fn returns does not leave the
// mutex locked. If it still fails, the error says so and the hold is given
// up (Done closes; EndAbandoned): it is no longer renewed, so a TTL mutex
// is free once its TTL has run out, and one without TTL stays locked until
// force-unlocked. If the lock was lost while fn ran, the error wraps
// ErrLost even if fn succeeded: fn's work may have overlapped another
// holder's.
func (m *Mutex) With(ctx context.Context, fn func(ctx context.Context) error) error {
	if err := m.Lock(ctx); err != nil {
		return err
	}
	return runHeld(ctx, m, m.Unlock, m.abandonHold, max(m.cleanupTimeout, m.retryTimeout), m.log, fn)
}

// held is what runHeld needs of a hold: when it ends, and why.
type held interface {
	Done() <-chan struct{}
	Err() error
}

// runHeld is the body of With, for any hold h that was just acquired: it
// runs fn with a context cancelled when h is lost, then releases with
// unlock under a fresh context bounded by timeout, also after a panic (the
// panic then continues). A loss during fn is reported even if fn succeeded.
// A release that still fails when timeout is up gives the hold up with
// abandon: nobody is left to retry it.
func runHeld(ctx context.Context, h held, unlock func(context.Context) error, abandon func(error), timeout time.Duration, log logr.Logger, fn func(context.Context) error) (err error) {
	done := h.Done()
	fctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	go func() {
		select {
		case <-done:
			cancel(h.Err())
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		lostErr := h.Err()
		cancel(nil)
		// The section is over: a short outage must not leave it locked, so
		// the release goes on retrying for the retry timeout.
		uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer ucancel()
		uerr := unlock(uctx)
		if uerr != nil && lostErr == nil && !errors.Is(uerr, ErrNotHeld) {
			abandon(uerr)
		}
		if p := recover(); p != nil {
			if uerr != nil {
				log.Error(uerr, "release after panic failed")
			}
			panic(p)
		}
		if lostErr != nil {
			err = errors.Join(err, lostErr)
		} else if uerr != nil {
			err = errors.Join(err, uerr)
		}
	}()
	return fn(fctx)
}

// With runs fn under the mutex namespace/name, as Mutex.With does, with a
// handle made for this call from opts.
func With(ctx context.Context, c *Client, namespace, name string, fn func(ctx context.Context) error, opts ...Option) error {
	m, err := c.NewMutex(namespace, name, opts...)
	if err != nil {
		return err
	}
	return m.With(ctx, fn)
}
