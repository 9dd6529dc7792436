package ttl

import (
	"fmt"
	"math"
	"net/http"
	"sync"
	"time"

	"k8s.io/utils/clock"
)

const (
	// driftPPM is the largest rate difference, in parts per million, that
	// ServerClock allows between the local clock and the server's clock.
	driftPPM = 100
	// driftDivisor turns an age into its drift allowance: age/driftDivisor.
	driftDivisor = 1_000_000 / driftPPM
	// dateResolution is the resolution of an HTTP Date header; the header
	// is the server's clock truncated to it.
	dateResolution = time.Second

	maxDuration = time.Duration(math.MaxInt64)
)

// ServerClock estimates the API server's wall clock from the Date headers of
// its responses, without ever reading the local wall clock as a wall clock:
// only differences between readings of the injected clock are used, and each
// reading is taken relative to a base reading made at construction, so with
// the real clock these are monotonic durations and a step of the local wall
// clock does not disturb the estimate.
//
// The estimate is a pair of bounds on the server's time, each sound on its
// own: a response with Date D to a request sent at local time t0 and
// answered at t1 shows that at some instant in [t0, t1] the server's clock
// read a time in [D, D+1s). The bounds of all samples are intersected; an
// old bound is widened by 100 ppm of its age so that clocks running at
// slightly different rates cannot make it unsound. If a sample contradicts
// the bounds gathered so far (the server's clock was stepped) the estimate
// restarts from that sample alone.
//
// A ServerClock is safe for concurrent use.
type ServerClock struct {
	clock clock.PassiveClock
	base  time.Time // reading of clock at construction; local times are durations since it

	mu   sync.Mutex
	have bool // at least one sample was observed
	// The server's wall time at local elapsed time e is at least
	// lo + e - drift(e - loAt) and at most hi + e + drift(e - hiAt).
	// lo and hi carry no monotonic reading and are in UTC.
	lo   time.Time
	loAt time.Duration
	hi   time.Time
	hiAt time.Duration

	resets int // how often a contradicting sample restarted the estimate (for tests)
}

// NewServerClock returns a ServerClock that reads local time from c, or from
// the real clock if c is nil. It has observed nothing yet.
func NewServerClock(c clock.PassiveClock) *ServerClock {
	if c == nil {
		c = clock.RealClock{}
	}
	return &ServerClock{clock: c, base: c.Now()}
}

// Observe records one response. date is its parsed Date header (whole
// seconds; see [ParseDate]); sent and received are readings of the injected
// clock taken just before the request was sent and just after the response
// headers arrived. Samples with a zero date or with received before sent are
// ignored.
func (s *ServerClock) Observe(date, sent, received time.Time) {
	if date.IsZero() || received.Before(sent) {
		return
	}
	date = date.Round(0).UTC() // drop any monotonic reading: this is a server wall time
	s.mu.Lock()
	defer s.mu.Unlock()

	t0 := sent.Sub(s.base)
	t1 := received.Sub(s.base)
	lo := date.Add(-t1)
	loAt := t1
	hi := date.Add(dateResolution).Add(-t0)
	hiAt := t0

	if !s.have {
		s.lo, s.loAt, s.hi, s.hiAt, s.have = lo, loAt, hi, hiAt, true
		return
	}
	// Past the later of their reference times two lower bounds grow at the
	// same rate, so the one that is greater there stays greater: keep it.
	// (Before that point the other one might be tighter; dropping it loses
	// precision, never soundness, and that point is in the past.)
	if at := max(loAt, s.loAt); lower(lo, loAt, at).After(lower(s.lo, s.loAt, at)) {
		s.lo, s.loAt = lo, loAt
	}
	if at := max(hiAt, s.hiAt); upper(hi, hiAt, at).Before(upper(s.hi, s.hiAt, at)) {
		s.hi, s.hiAt = hi, hiAt
	}
	// Sound bounds always contain the server's true time, so an empty
	// intersection means the server's clock was stepped (or ran faster or
	// slower than allowed): start again from the newest sample.
	if at := max(s.loAt, s.hiAt, t1); lower(s.lo, s.loAt, at).After(upper(s.hi, s.hiAt, at)) {
		s.lo, s.loAt, s.hi, s.hiAt = lo, loAt, hi, hiAt
		s.resets++
	}
}

// Now returns bounds such that the server's current wall time lies in
// [earliest, latest]; ok is false if nothing has been observed yet.
func (s *ServerClock) Now() (earliest, latest time.Time, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.have {
		return time.Time{}, time.Time{}, false
	}
	e := s.clock.Now().Sub(s.base)
	return lower(s.lo, s.loAt, e), upper(s.hi, s.hiAt, e), true
}

// Estimate returns the midpoint of Now's bounds, or the injected clock's
// current time if nothing has been observed yet. It is meant for
// human-facing timestamps only, never for decisions.
func (s *ServerClock) Estimate() time.Time {
	earliest, latest, ok := s.Now()
	if !ok {
		return s.clock.Now()
	}
	return earliest.Add(latest.Sub(earliest) / 2)
}

// LocalTimeWhenServerPasses returns the local clock time at which the
// earliest possible server time will have reached serverTime: roughly local
// now + (serverTime - earliest), stretched by the drift allowance because the
// lower bound advances at only 1-100ppm of the local clock's rate. From the
// returned instant on the server's clock reads at least serverTime. If
// earliest has already passed serverTime the result lies in the past. ok is
// false if nothing has been observed yet.
//
// The result is a reading of the injected clock and keeps its monotonic
// reading, if any, so compare it only with other readings of that clock.
func (s *ServerClock) LocalTimeWhenServerPasses(serverTime time.Time) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.have {
		return time.Time{}, false
	}
	now := s.clock.Now()
	earliest := lower(s.lo, s.loAt, now.Sub(s.base))
	gap := serverTime.Sub(earliest)
	if gap <= 0 {
		return now.Add(gap), true
	}
	// The lower bound grows by at least (1-ρ) per unit of local time, so
	// waiting gap/(1-ρ) = gap + gap/(1/ρ - 1) suffices.
	return now.Add(addSat(gap, ceilDiv(gap, driftDivisor-1))), true
}

// lower returns the lower bound (lo, at) evaluated at local elapsed time e.
func lower(lo time.Time, at, e time.Duration) time.Time {
	return lo.Add(e).Add(-drift(e - at))
}

// upper returns the upper bound (hi, at) evaluated at local elapsed time e.
func upper(hi time.Time, at, e time.Duration) time.Time {
	return hi.Add(e).Add(drift(e - at))
}

// drift returns the allowance for a bound of the given age (either sign):
// driftPPM parts per million of |age|, rounded up.
func drift(age time.Duration) time.Duration {
	if age < 0 {
		age = -age
		if age < 0 { // math.MinInt64
			return maxDuration / driftDivisor
		}
	}
	return ceilDiv(age, driftDivisor)
}

// ceilDiv returns ceil(d/n) for d >= 0, n > 0.
func ceilDiv(d time.Duration, n time.Duration) time.Duration {
	q := d / n
	if d%n != 0 {
		q++
	}
	return q
}

// addSat returns a+b for non-negative a and b, saturating at the largest
// Duration.
func addSat(a, b time.Duration) time.Duration {
	if a > maxDuration-b {
		return maxDuration
	}
	return a + b
}

// ParseDate parses an HTTP Date header value as [http.ParseTime] does,
// accepting all three HTTP date formats (IMF-fixdate, RFC 850, ANSI C
// asctime). It also rejects what would make the value unsafe as a lower
// bound on the server's clock: a zone other than GMT/UTC (http.ParseTime
// would read e.g. "PST" as a zero offset) and fractional seconds. The
// result is in UTC.
func ParseDate(header string) (time.Time, error) {
	t, err := http.ParseTime(header)
	if err != nil {
		return time.Time{}, fmt.Errorf("ttl: invalid HTTP date %q: %w", header, err)
	}
	if name, offset := t.Zone(); offset != 0 || (name != "GMT" && name != "UTC") {
		return time.Time{}, fmt.Errorf("ttl: invalid HTTP date %q: zone %q is not GMT", header, name)
	}
	if t.Nanosecond() != 0 {
		return time.Time{}, fmt.Errorf("ttl: invalid HTTP date %q: fractional seconds", header)
	}
	return t.UTC(), nil
}
