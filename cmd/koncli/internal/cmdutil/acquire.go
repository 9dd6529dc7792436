package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/konlease/konlease/lock"
)

// Wait says how long lock and run wait for a mutex held by someone else.
type Wait struct {
	// Forever: no --timeout; wait until acquired or interrupted.
	Forever bool
	// Timeout, when not Forever: zero is a single attempt.
	Timeout time.Duration
}

// WaitFromFlag turns --timeout into a Wait: unset waits forever.
func WaitFromFlag(value string, changed bool) (Wait, error) {
	if !changed {
		return Wait{Forever: true}, nil
	}
	d, err := ParseTimeout("timeout", value)
	if err != nil {
		return Wait{}, err
	}
	return Wait{Timeout: d}, nil
}

// Hold is a mutex or a semaphore that lock, acquire or run holds.
type Hold interface {
	Namespace() string
	Name() string
	Holder() string
	Token() int64
	Done() <-chan struct{}
	Err() error
	Release(ctx context.Context) error
}

// MutexHold is a *lock.Mutex as a Hold.
type MutexHold struct{ *lock.Mutex }

// Release unlocks the mutex.
func (m MutexHold) Release(ctx context.Context) error { return m.Unlock(ctx) }

// Acquire makes a handle on namespace/name with opts and locks it as w
// says, reporting on stderr whom it waits for. ctx should come from
// SignalContext: a signal ends the wait with a *SignalError, and the lock
// package guarantees that a cancelled Lock leaves no lock behind. Errors
// keep lock's sentinels in their chain (ErrLocked for "not acquired").
func Acquire(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w Wait, opts ...lock.Option) (*lock.Mutex, error) {
	lctx, deadline, cancel := waitContext(ctx, w)
	defer cancel()
	rep := NewWaitReporter(log, namespace, name, deadline)
	m, err := c.NewMutex(namespace, name, append(opts, lock.WithWaitNotify(rep.Notify), RetryNotify(log, "mutex", namespace, name))...)
	if err != nil {
		return nil, err
	}
	take := m.Lock
	if !w.Forever && w.Timeout == 0 {
		take = m.TryLock
	}
	if err := acquireHold(ctx, lctx, "mutex", MutexHold{m}, w, take, rep); err != nil {
		return nil, err
	}
	return m, nil
}

// AcquireSemaphore is Acquire for a semaphore.
func AcquireSemaphore(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w Wait, opts ...lock.Option) (*lock.Semaphore, error) {
	lctx, deadline, cancel := waitContext(ctx, w)
	defer cancel()
	rep := NewSemaphoreWaitReporter(log, namespace, name, deadline)
	s, err := c.NewSemaphore(namespace, name, append(opts, lock.WithSemaphoreWaitNotify(rep.NotifySemaphore), RetryNotify(log, "semaphore", namespace, name))...)
	if err != nil {
		return nil, err
	}
	take := s.Acquire
	if !w.Forever && w.Timeout == 0 {
		take = s.TryAcquire
	}
	if err := acquireHold(ctx, lctx, "semaphore", s, w, take, rep); err != nil {
		return nil, err
	}
	return s, nil
}

// waitContext bounds a wait as w says; deadline is zero without one.
func waitContext(ctx context.Context, w Wait) (context.Context, time.Time, context.CancelFunc) {
	if w.Forever || w.Timeout == 0 {
		return ctx, time.Time{}, func() {}
	}
	lctx, cancel := context.WithTimeout(ctx, w.Timeout)
	deadline, _ := lctx.Deadline()
	return lctx, deadline, cancel
}

// acquireHold runs take under lctx while rep reports, and turns what
// happened into what lock, acquire and run say: a signal that raced with
// the acquisition releases again; not acquired, already held and a TTL
// that disagrees get messages of their own. noun is "mutex" or
// "semaphore".
func acquireHold(ctx, lctx context.Context, noun string, h Hold, w Wait, take func(context.Context) error, rep *WaitReporter) error {
	rep.Start()
	err := take(lctx)
	rep.Stop()
	ref := Ref(h.Namespace(), h.Name())
	if err == nil {
		se := Interrupted(ctx)
		if se == nil {
			return nil
		}
		// The signal raced with the acquisition: the user asked to stop, so
		// leave nothing held, as a cancelled wait would.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lock.DefaultCleanupTimeout)
		defer cancel()
		if uerr := h.Release(uctx); uerr != nil {
			return &SignalError{Signal: se.Signal, Err: fmt.Errorf("%s %s was acquired as the signal arrived, and releasing it failed (release it with --holder %q): %w", noun, ref, h.Holder(), uerr)}
		}
		return &SignalError{Signal: se.Signal, Err: fmt.Errorf("while acquiring %s %s; it was released again, nothing is %s", noun, ref, heldWord(noun))}
	}
	if se := Interrupted(ctx); se != nil {
		what := fmt.Sprintf("while waiting for %s %s", noun, ref)
		var le *lock.LockedError
		if errors.As(err, &le) {
			what += fmt.Sprintf(" (locked by %q)", le.Holder)
		}
		return &SignalError{Signal: se.Signal, Err: &MessageError{Msg: what + "; nothing was " + heldWord(noun), Err: err}}
	}
	var text string
	var le *lock.LockedError
	var full *lock.SemaphoreFullError
	switch {
	case errors.As(err, &le):
		text = lockedText(le)
	case errors.As(err, &full):
		text = fullText(full)
	}
	if text != "" {
		msg := "not acquired: " + text
		switch {
		case w.Timeout == 0 && !w.Forever:
			msg = "not acquired in a single attempt (--timeout 0): " + text
		case errors.Is(err, context.DeadlineExceeded):
			msg = fmt.Sprintf("not acquired within %s: %s", w.Timeout, text)
		}
		return &MessageError{Msg: msg, Err: err}
	}
	if errors.Is(err, lock.ErrAlreadyHeld) {
		return &MessageError{Msg: fmt.Sprintf("not acquired, because this holder identity holds it already: %v; acquiring again would deadlock: release it first, or give each concurrent holder its own --holder", err), Err: err}
	}
	if errors.Is(err, lock.ErrTTLConflict) {
		return &MessageError{Msg: fmt.Sprintf("not acquired: %v; acquire it without --ttl to take it with its own TTL, or change its TTL while nobody holds it: koncli %s create %s --ttl D --update", err, noun, h.Name()), Err: err}
	}
	return err
}

// heldWord is how the messages say "held" of noun: a mutex is locked.
func heldWord(noun string) string {
	if noun == "mutex" {
		return "locked"
	}
	return "held"
}

// fullText describes a full semaphore without the context error it wraps.
func fullText(e *lock.SemaphoreFullError) string {
	s := e.Status
	var holders []string
	for _, h := range s.Holders {
		holders = append(holders, fmt.Sprintf("%q (slot %d)", h.Holder, h.Slot))
	}
	msg := fmt.Sprintf("semaphore %s is full: %d of %d slots held", Ref(s.Namespace, s.Name), len(s.Holders), s.Limit)
	if len(holders) > 0 {
		msg += " by " + strings.Join(holders, ", ")
	}
	if len(s.Waiters) > 0 {
		msg += fmt.Sprintf("; %d waiters are queued", len(s.Waiters))
	}
	return msg
}

// RetryNotify says on stderr, once per run of failures, that koncli is
// retrying and until when: without it a lock or unlock during an outage
// would seem to hang. noun is "mutex" or "semaphore".
func RetryNotify(log logr.Logger, noun, namespace, name string) lock.Option {
	return lock.WithRetryNotify(func(err error, until time.Time) {
		log.Info(fmt.Sprintf("%s %s: the API server did not answer or failed (%v); retrying until %s", noun, Ref(namespace, name), err, FormatTime(until)))
	})
}

// DefaultConflictExitCode is the exit status of lock and run when the mutex
// is held by someone else, unless --conflict-exit-code says otherwise.
const DefaultConflictExitCode = 3

// ParseConflictExitCode checks --conflict-exit-code: an exit status, 0 to
// 255.
func ParseConflictExitCode(code int) error {
	if code < 0 || code > 255 {
		return Usagef("invalid --conflict-exit-code %d: an exit status is 0 to 255", code)
	}
	return nil
}

// lockedText describes a LockedError without the context error it wraps.
func lockedText(le *lock.LockedError) string {
	if le.Holder == "" {
		return fmt.Sprintf("mutex %s is fair and %d waiters are queued for it", Ref(le.Namespace, le.Name), le.Waiters)
	}
	msg := fmt.Sprintf("mutex %s is locked by %q", Ref(le.Namespace, le.Name), le.Holder)
	if !le.LockedAt.IsZero() {
		msg += " since " + FormatTime(le.LockedAt)
	}
	if le.Token > 0 {
		msg += fmt.Sprintf(" (token %d)", le.Token)
	}
	if !le.ExpiresAt.IsZero() {
		msg += ", until " + FormatTime(le.ExpiresAt) + " unless renewed"
	}
	if le.Waiters > 0 {
		msg += fmt.Sprintf("; it is fair and %d waiters are queued for it", le.Waiters)
	}
	return msg
}
