package cmdutil

import (
	"context"
	"errors"
	"fmt"
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

// Acquire makes a handle on namespace/name with opts and locks it as w
// says, reporting on stderr whom it waits for. ctx should come from
// SignalContext: a signal ends the wait with a *SignalError, and the lock
// package guarantees that a cancelled Lock leaves no lock behind. Errors
// keep lock's sentinels in their chain (ErrLocked for "not acquired").
func Acquire(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w Wait, opts ...lock.Option) (*lock.Mutex, error) {
	var deadline time.Time
	lctx := ctx
	if !w.Forever && w.Timeout > 0 {
		var cancel context.CancelFunc
		lctx, cancel = context.WithTimeout(ctx, w.Timeout)
		defer cancel()
		deadline, _ = lctx.Deadline()
	}
	rep := NewWaitReporter(log, namespace, name, deadline)
	m, err := c.NewMutex(namespace, name, append(opts, lock.WithWaitNotify(rep.Notify), RetryNotify(log, namespace, name))...)
	if err != nil {
		return nil, err
	}
	rep.Start()
	if !w.Forever && w.Timeout == 0 {
		err = m.TryLock(lctx)
	} else {
		err = m.Lock(lctx)
	}
	rep.Stop()
	ref := Ref(namespace, name)
	if err == nil {
		se := Interrupted(ctx)
		if se == nil {
			return m, nil
		}
		// The signal raced with the acquisition: the user asked to stop, so
		// leave nothing locked, as a cancelled Lock would.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lock.DefaultCleanupTimeout)
		defer cancel()
		if uerr := m.Unlock(uctx); uerr != nil {
			return nil, &SignalError{Signal: se.Signal, Err: fmt.Errorf("mutex %s was acquired as the signal arrived, and unlocking it failed (unlock it with --holder %q): %w", ref, m.Holder(), uerr)}
		}
		return nil, &SignalError{Signal: se.Signal, Err: fmt.Errorf("while acquiring mutex %s; it was released again, nothing is locked", ref)}
	}
	if se := Interrupted(ctx); se != nil {
		what := fmt.Sprintf("while waiting for mutex %s", ref)
		var le *lock.LockedError
		if errors.As(err, &le) {
			what += fmt.Sprintf(" (locked by %q)", le.Holder)
		}
		return nil, &SignalError{Signal: se.Signal, Err: &MessageError{Msg: what + "; nothing was locked", Err: err}}
	}
	var le *lock.LockedError
	if errors.As(err, &le) {
		msg := "not acquired: " + lockedText(le)
		switch {
		case w.Timeout == 0:
			msg = "not acquired in a single attempt (--timeout 0): " + lockedText(le)
		case errors.Is(err, context.DeadlineExceeded):
			msg = fmt.Sprintf("not acquired within %s: %s", w.Timeout, lockedText(le))
		}
		return nil, &MessageError{Msg: msg, Err: err}
	}
	if errors.Is(err, lock.ErrAlreadyHeld) {
		return nil, &MessageError{Msg: fmt.Sprintf("not acquired, because this holder identity holds it already: %v; locking again would deadlock: unlock it first, or give each concurrent locker its own --holder", err), Err: err}
	}
	if errors.Is(err, lock.ErrTTLConflict) {
		return nil, &MessageError{Msg: fmt.Sprintf("not acquired: %v; lock it without --ttl to take it with its own TTL, or change its TTL while it is unlocked: koncli mutex create %s --ttl D --update", err, name), Err: err}
	}
	return nil, err
}

// RetryNotify says on stderr, once per run of failures, that koncli is
// retrying and until when: without it a lock or unlock during an outage
// would seem to hang.
func RetryNotify(log logr.Logger, namespace, name string) lock.Option {
	return lock.WithRetryNotify(func(err error, until time.Time) {
		log.Info(fmt.Sprintf("mutex %s: the API server did not answer or failed (%v); retrying until %s", Ref(namespace, name), err, FormatTime(until)))
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
