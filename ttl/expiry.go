package ttl

import "time"

// never is returned by TakeoverAt when no rule applies: a time so far ahead
// that it does not arrive.
var never = time.Date(9999, time.December, 31, 23, 59, 59, 0, time.UTC)

// Expiry is what a waiter knows about one version (resourceVersion) of a
// held record.
type Expiry struct {
	// TTL is the record's TTL. A TTL <= 0 means the record has none and
	// never expires.
	TTL time.Duration
	// FirstSeen is the local clock reading (the same clock the ServerClock
	// uses, monotonic where available) when this version was first
	// observed. Zero means unknown: rule (a) then does not apply.
	FirstSeen time.Time
	// LastWrite is the server time of this version's last write, as
	// stamped in metadata.managedFields (whole seconds, truncated); when
	// there are several entries, use the latest. Zero means unknown: rule
	// (b) then does not apply.
	LastWrite time.Time
}

// TakeoverAt returns the earliest local clock time at which a waiter may
// treat the record as expired: the earlier of
//
//	(a) FirstSeen + TTL, and
//	(b) the local time at which the earliest possible server time reaches
//	    LastWrite + 1s + TTL (see [ServerClock.LocalTimeWhenServerPasses]);
//	    only when LastWrite is non-zero and sc is non-nil and has observed
//	    something.
//
// If neither rule applies, or TTL <= 0, the result lies so far in the future
// that it is never reached. Rule (b) depends on sc's current bounds, so call
// TakeoverAt again after new samples: the result can move earlier.
func (e Expiry) TakeoverAt(sc *ServerClock) time.Time {
	if e.TTL <= 0 {
		return never
	}
	at, have := never, false
	if !e.FirstSeen.IsZero() {
		at, have = e.FirstSeen.Add(e.TTL), true
	}
	if !e.LastWrite.IsZero() && sc != nil {
		// The write happened at a server time in [LastWrite, LastWrite+1s).
		if b, ok := sc.LocalTimeWhenServerPasses(e.LastWrite.Add(time.Second + e.TTL)); ok && (!have || b.Before(at)) {
			at = b
		}
	}
	return at
}

// Expired reports whether a waiter may treat the record as expired at local
// clock time now: !now.Before(e.TakeoverAt(sc)).
func (e Expiry) Expired(now time.Time, sc *ServerClock) bool {
	return !now.Before(e.TakeoverAt(sc))
}
