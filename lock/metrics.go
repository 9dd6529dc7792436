package lock

import (
	"errors"
	"time"
)

// Metrics receives what the library measures. Names are those of mutexes
// and semaphores (a semaphore's slots count under the semaphore's name).
// The methods are called on the library's own goroutines, often while it
// holds locks of its own: they must be cheap and must not block. The
// default (no WithMetrics) records nothing. Package lockmetrics implements
// it for Prometheus.
type Metrics interface {
	// Acquire reports the end of one Lock, TryLock, Acquire or TryAcquire:
	// its result and how long the call took.
	Acquire(namespace, name string, result AcquireResult, took time.Duration)
	// HoldEnded reports the end of a hold, and how long it lasted.
	HoldEnded(namespace, name string, end HoldEnd, held time.Duration)
	// Renewal reports one renewal write (ok: it succeeded).
	Renewal(namespace, name string, ok bool)
	// Conflict reports a write to a mutex or slot refused with 409
	// Conflict: someone wrote it first.
	Conflict(namespace, name string)
	// Holding and Waiting report changes (+1, -1) in the number of this
	// process's holds, and of its calls that are waiting.
	Holding(namespace, name string, delta int)
	Waiting(namespace, name string, delta int)
}

// AcquireResult is how an acquisition ended.
type AcquireResult string

const (
	// AcquireAcquired: the call holds the mutex or a slot.
	AcquireAcquired AcquireResult = "acquired"
	// AcquireBusy: held by others and the call gave up (its context
	// ended, or it made one attempt).
	AcquireBusy AcquireResult = "busy"
	// AcquireError: any other failure.
	AcquireError AcquireResult = "error"
)

// HoldEnd is why a hold ended.
type HoldEnd string

const (
	// EndReleased: Unlock or Release.
	EndReleased HoldEnd = "released"
	// EndTTL: no renewal succeeded before the TTL could run out.
	EndTTL HoldEnd = "ttl"
	// EndTakenOver: another holder took the mutex or slot over.
	EndTakenOver HoldEnd = "taken-over"
	// EndForceUnlocked: an operator released it.
	EndForceUnlocked HoldEnd = "force-unlocked"
	// EndDeleted: its Lease was deleted.
	EndDeleted HoldEnd = "deleted"
	// EndInvalid: its Lease stopped being a valid mutex or slot, or the
	// hold could not be confirmed (an unconfirmed handoff ran out).
	EndInvalid HoldEnd = "invalid"
	// EndAbandoned: the release at the end of With (or the CLI's run)
	// failed for the whole retry timeout, so the hold was given up: it is
	// no longer renewed, and a TTL mutex or slot becomes free when its TTL
	// runs out.
	EndAbandoned HoldEnd = "abandoned"
)

// WithMetrics sets where the library's measurements go.
func WithMetrics(m Metrics) ClientOption { return func(c *Client) { c.metrics = m } }

// noMetrics records nothing.
type noMetrics struct{}

func (noMetrics) Acquire(string, string, AcquireResult, time.Duration) {}
func (noMetrics) HoldEnded(string, string, HoldEnd, time.Duration)     {}
func (noMetrics) Renewal(string, string, bool)                         {}
func (noMetrics) Conflict(string, string)                              {}
func (noMetrics) Holding(string, string, int)                          {}
func (noMetrics) Waiting(string, string, int)                          {}

// acquireResult classifies the error an acquisition ended with.
func acquireResult(err error) AcquireResult {
	switch {
	case err == nil:
		return AcquireAcquired
	case errors.Is(err, ErrLocked):
		return AcquireBusy
	}
	return AcquireError
}
