// Package ttl holds the arithmetic behind konlease's optional mutex TTL:
// parsing and formatting TTL values, the renew and give-up schedule of a
// holder, an estimate of the API server's clock, and the rules by which a
// waiter decides that a held record has expired. It does no I/O; every
// reading of the clock comes from an injected [k8s.io/utils/clock.PassiveClock].
//
// # The TTL
//
// A TTL is a Go duration between [Min] (1s) and [Max] (one year). It is
// stored in an annotation in its canonical form ([Format]) and, rounded up
// to whole seconds, in the Lease's spec.leaseDurationSeconds
// ([LeaseDurationSeconds]). The annotation key belongs to the lock package.
//
// # The safety rule
//
// No decision ever compares one machine's wall clock with another's. A
// holder only measures elapsed time on its own clock; a waiter only measures
// elapsed time on its own clock, or compares the server's clock with the
// server's clock.
//
// The holder renews every [RenewInterval] (TTL/3). Let sent be the local
// time at which it sent its last successful write. It considers the mutex
// lost at [HolderDeadline] = sent + TTL - [HolderMargin] (TTL/10), measured
// on its own monotonic clock.
//
// A waiter may take over when either of two rules says so ([Expiry]):
//
// (a) Observed time. The waiter first observed this version of the record
// at its local time FirstSeen. The write that produced the version happened
// before the holder's request got its answer and after the holder sent it,
// so after sent; and the waiter saw the result after the write. So at
// FirstSeen at least zero time had passed since sent, and at FirstSeen+TTL
// at least TTL has. The holder gave up when TTL-TTL/10 had passed on its
// clock. The two clocks only need to agree on how long a second is.
//
// (b) Server time. The API server stamps the write with its own clock in
// metadata.managedFields, in whole seconds, truncated: the true write time S
// lies in [W, W+1s). The waiter bounds the server's current time from below
// with a [ServerClock], built from the Date headers of API responses. Once
// that lower bound exceeds W + 1s + TTL, the server's clock has advanced by
// more than TTL since the write, which is more than the holder waits before
// giving up. This lets a waiter that starts long after the last write (a
// stale lock left by a crashed holder) take over at once instead of waiting
// a whole TTL.
//
// Both rules are sound on their own, so taking the earlier of the two is
// sound. The margin of TTL/10 absorbs rate differences between the clocks
// and the scheduling delays of the holder.
//
// # What the rules assume
//
// Stated plainly, these are the conditions under which the rules are
// correct; if they do not hold, two holders can overlap.
//
//   - Clocks run at nearly the same rate: any two of them (holder, waiter,
//     API server) differ by at most 100 ppm (about 9 seconds a day). Their
//     wall-clock readings may differ by any amount. The ServerClock widens
//     its bounds by 100 ppm of their age to allow for this.
//   - The local clocks used for decisions are monotonic. With the real
//     clock, readings carry Go's monotonic clock and all arithmetic is
//     done on differences of readings, so stepping the local wall clock
//     (NTP, an administrator) does not matter. A process that is suspended
//     (a VM paused, a laptop asleep) while its monotonic clock stops is not
//     covered: the holder may believe less time has passed than really did.
//   - The API server's clock is not stepped while a lease is held. A
//     forward step of size δ lets rule (b) fire up to δ early. A backward
//     step can do the same until the waiter sees a Date header from after
//     the step; a step larger than the estimate's uncertainty is then
//     detected (the bounds contradict each other) and the estimate starts
//     again from the newest sample. Steps smaller than the holder's margin
//     are absorbed by it.
//   - All API server replicas' clocks agree (to well under the holder's
//     margin): the Date header may come from one replica and the
//     managedFields stamp from another.
//   - The managedFields time of the holder's entry changes on every write
//     of the holder, which is so when each write changes a field value
//     (such as spec.renewTime). Using the latest entry is always safe: a
//     later stamp only delays rule (b).
//
// Rule (a) needs only the first two assumptions; rule (b) needs all of
// them.
package ttl
