package lock

import (
	"errors"
	"fmt"
	"time"
)

// Sentinel errors. Every error returned by this package that means one of
// these wraps it, so callers branch with errors.Is.
var (
	// ErrLocked means another holder holds the mutex. The error is a
	// *LockedError that says who holds it and until when.
	ErrLocked = errors.New("mutex is locked")
	// ErrNotHeld means the caller is not the holder of the mutex: Unlock by a
	// handle or identity that does not hold it. Nothing was changed.
	ErrNotHeld = errors.New("mutex is not held by this holder")
	// ErrAlreadyHeld means this holder identity already holds the mutex.
	// Locking it again would either deadlock or silently share it, so it is
	// refused at once.
	ErrAlreadyHeld = errors.New("mutex is already held by this holder")
	// ErrLost means a hold ended without the holder's Unlock: the lock was
	// force-unlocked or taken over, or its TTL ran out before a renewal
	// succeeded. Work done under it may have overlapped another holder's.
	ErrLost = errors.New("mutex lock was lost")
	// ErrNotMutex means the Lease exists but is not a konlease mutex (for
	// example a leader-election Lease), or its konlease annotations are
	// malformed. Such a Lease is never modified. The error is a
	// *NotMutexError that says why.
	ErrNotMutex = errors.New("lease is not a konlease mutex")
	// ErrNotSemaphore means the Lease exists but is not a konlease
	// semaphore (a mutex, say), or its annotations are malformed. Such a
	// Lease is never modified. The error is a *NotMutexError.
	ErrNotSemaphore = errors.New("lease is not a konlease semaphore")
	// ErrNotFound means the mutex does not exist. The error is a
	// *NotFoundError that names the mutex.
	ErrNotFound = errors.New("mutex not found")
	// ErrLimitConflict means CreateSemaphore, or an Acquire with
	// WithRequiredLimit, found the semaphore with another limit.
	ErrLimitConflict = errors.New("semaphore exists with a different limit")
	// ErrTTLConflict means Create found the mutex with another TTL.
	ErrTTLConflict = errors.New("mutex exists with a different TTL")
	// ErrInvalid means an argument (name, namespace, holder, TTL, option) is
	// invalid. Nothing was sent to the API server.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnsupported means the API server cannot do what was asked: fair
	// mode needs resourceVersions that compare as integers (Kubernetes
	// 1.35 and later guarantee it).
	ErrUnsupported = errors.New("not supported by this API server")
	// ErrFairnessConflict means Create found the mutex fair where it was
	// asked for a racing one, or the other way round.
	ErrFairnessConflict = errors.New("mutex exists with another fairness")
	// ErrTokenExhausted means the mutex's fencing token reached the largest
	// value a Lease can store (2^31-1 acquisitions); delete and recreate it.
	ErrTokenExhausted = errors.New("mutex fencing token exhausted")
)

// LockedError reports that a mutex is held by someone else. It matches
// ErrLocked with errors.Is. When a blocking Lock gave up because its context
// ended, it also wraps the context's error (context.DeadlineExceeded or
// context.Canceled).
type LockedError struct {
	Namespace string
	Name      string
	// Holder is the identity of the current holder.
	Holder string
	// LockedAt is when the holder acquired the mutex (API server clock, as
	// the holder estimated it).
	LockedAt time.Time
	// ExpiresAt is when the holder's TTL runs out unless renewed; zero for a
	// mutex without TTL.
	ExpiresAt time.Time
	// Token is the fencing token of the holder's acquisition.
	Token int64
	// Waiters, for a TryLock on a fair mutex, is how many live waiters are
	// queued for it: a fair mutex is not taken past them, even when it is
	// free (Holder is then empty).
	Waiters int

	cause error
}

func (e *LockedError) Error() string {
	var msg string
	if e.Holder == "" {
		msg = fmt.Sprintf("mutex %s/%s is fair and %d waiters are queued for it", e.Namespace, e.Name, e.Waiters)
	} else {
		msg = fmt.Sprintf("mutex %s/%s is locked by %q", e.Namespace, e.Name, e.Holder)
		if !e.ExpiresAt.IsZero() {
			msg += fmt.Sprintf(" until %s unless renewed", e.ExpiresAt.UTC().Format(time.RFC3339))
		}
		if e.Waiters > 0 {
			msg += fmt.Sprintf(", and %d waiters are queued for it", e.Waiters)
		}
	}
	if e.cause != nil {
		msg += ": " + e.cause.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Unwrap returns the context error that ended a blocking Lock, if any.
func (e *LockedError) Unwrap() error { return e.cause }

// LostError reports that a hold ended without its holder's Unlock. It
// matches ErrLost with errors.Is, and wraps the error that revealed the
// loss, if any (a Lease that is no longer a mutex, say).
type LostError struct {
	Namespace string
	Name      string
	// Reason says how it was lost, as a clause: "it was force-unlocked".
	Reason string
	// End says it in one word (EndTTL, EndTakenOver, ...).
	End HoldEnd

	cause error
}

func (e *LostError) Error() string {
	return fmt.Sprintf("lost mutex %s/%s: %s", e.Namespace, e.Name, e.Reason)
}

// Is makes errors.Is(err, ErrLost) true.
func (e *LostError) Is(target error) bool { return target == ErrLost }

// Unwrap returns the error that revealed the loss, if any.
func (e *LostError) Unwrap() error { return e.cause }

// NotHeldError reports an Unlock by a holder that does not hold the mutex.
// It matches ErrNotHeld with errors.Is, and ErrNotFound too when the mutex
// does not exist.
type NotHeldError struct {
	Namespace string
	Name      string
	// Holder is the identity that tried to unlock.
	Holder string
	// Current is the actual holder; empty when the mutex is unlocked or
	// does not exist.
	Current string
	// Exists is false when the mutex does not exist.
	Exists bool
	// Reacquired: Current is this very identity, but through a newer
	// acquisition (token) than the hold being released.
	Reacquired bool
	// CurrentToken is the fencing token of the current or last acquisition.
	CurrentToken int64
	// Kind is "semaphore" for a semaphore; empty for a mutex.
	Kind string
}

func (e *NotHeldError) Error() string {
	return fmt.Sprintf("%s %s/%s: holder %q does not hold it (%s), nothing changed", kindOr(e.Kind, "mutex"), e.Namespace, e.Name, e.Holder, e.why())
}

// why says what the mutex's state is instead.
func (e *NotHeldError) why() string {
	switch {
	case !e.Exists:
		return "it does not exist"
	case e.Current == "" && e.Kind == "semaphore":
		return "it holds none of its slots"
	case e.Current == "":
		return "it is unlocked"
	case e.Reacquired:
		return fmt.Sprintf("it was acquired again (token %d)", e.CurrentToken)
	}
	return fmt.Sprintf("it is held by %q", e.Current)
}

// Is makes errors.Is(err, ErrNotHeld) true, and errors.Is(err, ErrNotFound)
// for a mutex that does not exist.
func (e *NotHeldError) Is(target error) bool {
	return target == ErrNotHeld || (target == ErrNotFound && !e.Exists)
}

// NotMutexError reports a Lease that this package refuses to touch.
type NotMutexError struct {
	Namespace string
	Name      string
	// Reason says what is missing or malformed.
	Reason string
	// Kind is what the Lease was expected to be: empty for a mutex,
	// "semaphore" or "semaphore slot".
	Kind string
}

func (e *NotMutexError) Error() string {
	kind := e.Kind
	if kind == "" {
		kind = "mutex"
	}
	return fmt.Sprintf("lease %s/%s is not a konlease %s: %s; konlease never modifies it", e.Namespace, e.Name, kind, e.Reason)
}

// Is makes errors.Is(err, ErrNotMutex) true for a Lease that is not a
// mutex, and errors.Is(err, ErrNotSemaphore) for one that is not a
// semaphore (or one of its slots).
func (e *NotMutexError) Is(target error) bool {
	if e.Kind == "" {
		return target == ErrNotMutex
	}
	return target == ErrNotSemaphore
}

// NotFoundError reports that the mutex namespace/name does not exist. It
// matches ErrNotFound with errors.Is. Its message names the mutex once:
// "mutex ns/x not found".
type NotFoundError struct {
	Namespace string
	Name      string
	// Kind is "semaphore" for a semaphore; empty for a mutex.
	Kind string
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s %s/%s not found", kindOr(e.Kind, "mutex"), e.Namespace, e.Name)
}

// kindOr is kind, or def when it is empty.
func kindOr(kind, def string) string {
	if kind == "" {
		return def
	}
	return kind
}

// Is makes errors.Is(err, ErrNotFound) true.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// invalidError marks an error from another package (such as ttl) as an
// invalid argument too, keeping its own message and chain.
type invalidError struct{ err error }

func invalid(err error) error { return &invalidError{err: err} }

func (e *invalidError) Error() string        { return e.err.Error() }
func (e *invalidError) Unwrap() error        { return e.err }
func (e *invalidError) Is(target error) bool { return target == ErrInvalid }
