package ttl

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

// localStart is the fake local clock's reading at the start of every test.
// It is deliberately unrelated to the simulated server times.
var localStart = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// simServer is a simulated API server clock, expressed in terms of the fake
// local clock: at local time t its wall clock reads
// atBase + e + e*ppm/1e6, with e = t - base.
type simServer struct {
	base   time.Time     // a local clock reading
	atBase time.Time     // the server's clock at local time base
	ppm    time.Duration // how much faster than the local clock it runs
}

func (s simServer) at(local time.Time) time.Time {
	e := local.Sub(s.base)
	return s.atBase.Add(e + e*s.ppm/1_000_000)
}

// date is the Date header the server writes at local time t.
func (s simServer) date(t time.Time) time.Time {
	return s.at(t).Truncate(time.Second)
}

// request simulates one API call on clk: it is sent now, takes rtt, and the
// server stamps the Date at a random instant within the round trip. It
// feeds the sample to sc and returns the local time the server wrote it.
func (s simServer) request(rng *rand.Rand, clk *clocktesting.FakeClock, sc *ServerClock, rtt time.Duration) time.Time {
	sent := clk.Now()
	stamped := sent
	if rtt > 0 {
		stamped = sent.Add(time.Duration(rng.Int64N(int64(rtt) + 1)))
	}
	clk.Step(rtt)
	sc.Observe(s.date(stamped), sent, clk.Now())
	return stamped
}

// overlappingRequests simulates two concurrent API calls, the second sent
// after the first but answered before it, observed in order of arrival.
func (s simServer) overlappingRequests(rng *rand.Rand, clk *clocktesting.FakeClock, sc *ServerClock) {
	sentA := clk.Now()
	sentB := sentA.Add(time.Duration(rng.Int64N(int64(100 * time.Millisecond))))
	receivedB := sentB.Add(randomRTT(rng))
	receivedA := receivedB.Add(time.Duration(rng.Int64N(int64(2 * time.Second))))
	stampedA := sentA.Add(time.Duration(rng.Int64N(int64(receivedA.Sub(sentA)) + 1)))
	stampedB := sentB.Add(time.Duration(rng.Int64N(int64(receivedB.Sub(sentB)) + 1)))
	clk.SetTime(receivedB)
	sc.Observe(s.date(stampedB), sentB, receivedB)
	clk.SetTime(receivedA)
	sc.Observe(s.date(stampedA), sentA, receivedA)
}

// mustNow returns sc's bounds, failing the test if it has none.
func mustNow(t *testing.T, sc *ServerClock) (time.Time, time.Time) {
	t.Helper()
	earliest, latest, ok := sc.Now()
	if !ok {
		t.Fatal("Now() ok = false, want true")
	}
	return earliest, latest
}

func TestServerClockNothingObserved(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(localStart)
	sc := NewServerClock(clk)
	if e, l, ok := sc.Now(); ok || !e.IsZero() || !l.IsZero() {
		t.Errorf("Now() = %v, %v, %v; want zero, zero, false", e, l, ok)
	}
	if got := sc.Estimate(); !got.Equal(localStart) {
		t.Errorf("Estimate() = %v, want the local clock %v", got, localStart)
	}
	if got, ok := sc.LocalTimeWhenServerPasses(localStart); ok || !got.IsZero() {
		t.Errorf("LocalTimeWhenServerPasses() = %v, %v; want zero, false", got, ok)
	}
}

func TestServerClockIgnoresBadSamples(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(localStart)
	sc := NewServerClock(clk)
	date := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC)
	sc.Observe(time.Time{}, localStart, localStart.Add(time.Second))                 // zero date
	sc.Observe(date, localStart.Add(time.Second), localStart)                        // received before sent
	sc.Observe(date, localStart.Add(time.Nanosecond), localStart.Add(0*time.Second)) // by one nanosecond
	if e, l, ok := sc.Now(); ok {
		t.Errorf("after bad samples Now() = %v, %v, true; want ok = false", e, l)
	}
}

func TestServerClockSingleSample(t *testing.T) {
	d := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // the server is years ahead: irrelevant
	tests := []struct {
		name                   string
		after                  time.Duration // further local time after the response
		wantEarliest, wantLate time.Duration // relative to d
	}{
		// At receipt: server in [D, D+1s+rtt], the upper bound already
		// 200ms old, so widened by 200ms/10000 = 20µs.
		{"at receipt", 0, 0, time.Second + 200*time.Millisecond + 20*time.Microsecond},
		// 10000s later both bounds have widened by 1s (100 ppm).
		{"10000s later", 10000 * time.Second,
			10000*time.Second - time.Second,
			time.Second + 200*time.Millisecond + 10000*time.Second + time.Second + 20*time.Microsecond},
		// Drift is rounded up to the next nanosecond: 1ns later the lower
		// bound has advanced by 1ns and lost 1ns to drift.
		{"1ns later", 1, 0, time.Second + 200*time.Millisecond + 1 + 20*time.Microsecond + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(localStart)
			sc := NewServerClock(clk)
			clk.Step(10 * time.Second)
			sent := clk.Now()
			clk.Step(200 * time.Millisecond)
			sc.Observe(d, sent, clk.Now())
			clk.Step(tt.after)
			earliest, latest := mustNow(t, sc)
			if want := d.Add(tt.wantEarliest); !earliest.Equal(want) {
				t.Errorf("earliest = %v, want %v (diff %v)", earliest, want, earliest.Sub(want))
			}
			if want := d.Add(tt.wantLate); !latest.Equal(want) {
				t.Errorf("latest = %v, want %v (diff %v)", latest, want, latest.Sub(want))
			}
			if got, want := sc.Estimate(), earliest.Add(latest.Sub(earliest)/2); !got.Equal(want) {
				t.Errorf("Estimate() = %v, want midpoint %v", got, want)
			}
		})
	}
}

func TestServerClockIntersectionTightens(t *testing.T) {
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	// The server's clock reads localStart + 1h + 0.4s at localStart.
	srv := simServer{base: localStart, atBase: localStart.Add(time.Hour + 400*time.Millisecond)}

	// Sample 1: a slow round trip stamped at its start.
	sent := clk.Now()
	clk.Step(2 * time.Second)
	sc.Observe(srv.date(sent), sent, clk.Now())
	e1, l1 := mustNow(t, sc)
	w1 := l1.Sub(e1)
	if w1 < 3*time.Second || w1 > 3*time.Second+time.Millisecond {
		t.Fatalf("after one 2s round trip the width is %v, want about 1s+2s", w1)
	}

	// Sample 2: 0.3s later, a fast round trip whose Date shows the second
	// ticking over; it pins the server's clock much more tightly.
	clk.Step(300 * time.Millisecond)
	sent = clk.Now()
	clk.Step(10 * time.Millisecond)
	sc.Observe(srv.date(sent), sent, clk.Now())
	e2, l2 := mustNow(t, sc)
	if w2 := l2.Sub(e2); w2 >= w1 || w2 > time.Second+20*time.Millisecond {
		t.Errorf("after a fast sample the width is %v, want < %v and <= 1.02s", w2, w1)
	}
	if truth := srv.at(clk.Now()); truth.Before(e2) || truth.After(l2) {
		t.Errorf("true server time %v outside [%v, %v]", truth, e2, l2)
	}

	// Sample 3 is a slow one: it must not widen the bounds.
	sent = clk.Now()
	clk.Step(5 * time.Second)
	sc.Observe(srv.date(sent.Add(time.Second)), sent, clk.Now())
	e3, l3 := mustNow(t, sc)
	if w3 := l3.Sub(e3); w3 > l2.Sub(e2)+time.Millisecond {
		t.Errorf("a slow sample widened the bounds from %v to %v", l2.Sub(e2), w3)
	}

	// Samples just before and just after the server's second ticks over
	// pin the offset to within the round trips.
	clk2 := clocktesting.NewFakeClock(localStart)
	sc2 := NewServerClock(clk2)
	srv2 := simServer{base: localStart, atBase: time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC).Add(-500 * time.Millisecond)}
	clk2.Step(490 * time.Millisecond)
	for range 2 {
		sent := clk2.Now()
		clk2.Step(5 * time.Millisecond)
		sc2.Observe(srv2.date(sent), sent, clk2.Now())
		clk2.Step(10 * time.Millisecond)
	}
	e, l := mustNow(t, sc2)
	if w := l.Sub(e); w > 30*time.Millisecond {
		t.Errorf("samples either side of a tick gave width %v, want <= 30ms", w)
	}
	if truth := srv2.at(clk2.Now()); truth.Before(e) || truth.After(l) {
		t.Errorf("true server time %v outside [%v, %v]", truth, e, l)
	}
	if sc.resets != 0 || sc2.resets != 0 {
		t.Errorf("resets = %d, %d; want 0", sc.resets, sc2.resets)
	}
}

func TestServerClockWidensWithAge(t *testing.T) {
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	d := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC)
	sent := clk.Now()
	sc.Observe(d, sent, sent) // a zero round trip: width exactly 1s
	prev := time.Second
	for _, age := range []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 30 * 24 * time.Hour} {
		clk.SetTime(localStart.Add(age))
		earliest, latest := mustNow(t, sc)
		want := time.Second + 2*ceilDiv(age, 10_000)
		if got := latest.Sub(earliest); got != want {
			t.Errorf("width after %v = %v, want %v (1s + 2 x 100ppm)", age, got, want)
		}
		if got := latest.Sub(earliest); got <= prev {
			t.Errorf("width after %v = %v, did not grow from %v", age, got, prev)
		}
		prev = latest.Sub(earliest)
	}
}

func TestServerClockResetsOnStep(t *testing.T) {
	tests := []struct {
		name string
		step time.Duration // of the server's clock, between the two samples
	}{
		{"forward 1h", time.Hour},
		{"backward 1h", -time.Hour},
		{"forward 5s", 5 * time.Second},
		{"backward 5s", -5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(localStart)
			sc := NewServerClock(clk)
			srv := simServer{base: localStart, atBase: localStart.Add(37400 * time.Millisecond)}
			for range 3 {
				sent := clk.Now()
				clk.Step(50 * time.Millisecond)
				sc.Observe(srv.date(sent), sent, clk.Now())
				clk.Step(time.Minute)
			}
			srv.atBase = srv.atBase.Add(tt.step)
			sent := clk.Now()
			clk.Step(50 * time.Millisecond)
			received := clk.Now()
			sc.Observe(srv.date(sent), sent, received)
			if sc.resets != 1 {
				t.Fatalf("resets = %d, want 1", sc.resets)
			}
			earliest, latest := mustNow(t, sc)
			// Exactly the newest sample's bounds at its receipt.
			wantE := srv.date(sent)
			wantL := srv.date(sent).Add(time.Second + 50*time.Millisecond + 5*time.Microsecond)
			if !earliest.Equal(wantE) || !latest.Equal(wantL) {
				t.Errorf("after reset Now() = [%v, %v], want [%v, %v]", earliest, latest, wantE, wantL)
			}
			if truth := srv.at(clk.Now()); truth.Before(earliest) || truth.After(latest) {
				t.Errorf("true server time %v outside [%v, %v]", truth, earliest, latest)
			}
		})
	}
}

// TestServerClockContainsTruth is the soundness property: whatever the
// offset between the clocks, whatever the round trips and the gaps between
// samples, and with the server's clock running up to 100 ppm faster or
// slower than the local one, the true server time always lies within Now's
// bounds, and no sample is ever taken for a clock step.
func TestServerClockContainsTruth(t *testing.T) {
	offsets := []struct {
		name   string
		offset time.Duration
	}{
		{"+1h", time.Hour},
		{"-1h", -time.Hour},
		{"+37.4s", 37400 * time.Millisecond},
		{"0", 0},
		{"-0.6s", -600 * time.Millisecond},
	}
	rates := []time.Duration{0, 100, -100, 37, -99}
	for i, o := range offsets {
		for j, ppm := range rates {
			t.Run(o.name+"/"+(ppm*time.Nanosecond).String()+"ppm", func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(j)))
				clk := clocktesting.NewFakeClock(localStart)
				sc := NewServerClock(clk)
				clk.Step(time.Duration(rng.Int64N(int64(time.Second)))) // sub-second phase
				srv := simServer{base: localStart, atBase: localStart.Add(o.offset), ppm: ppm}
				check := func(when string) {
					t.Helper()
					earliest, latest := mustNow(t, sc)
					if truth := srv.at(clk.Now()); truth.Before(earliest) || truth.After(latest) {
						t.Fatalf("%s: true server time %v outside [%v, %v] (below by %v, above by %v)",
							when, truth, earliest, latest, earliest.Sub(truth), truth.Sub(latest))
					}
				}
				for n := range 2000 {
					clk.Step(randomGap(rng))
					if rng.IntN(5) == 0 {
						srv.overlappingRequests(rng, clk, sc)
					} else {
						srv.request(rng, clk, sc, randomRTT(rng))
					}
					check(fmt.Sprintf("after sample %d", n))
					clk.Step(randomGap(rng))
					check("between samples")
				}
				if sc.resets != 0 {
					t.Errorf("resets = %d, want 0: a sound estimate never contradicts itself", sc.resets)
				}
			})
		}
	}
}

// randomGap returns a time between samples: mostly short, sometimes hours.
func randomGap(rng *rand.Rand) time.Duration {
	switch rng.IntN(10) {
	case 0:
		return 0
	case 1:
		return time.Duration(rng.Int64N(int64(6 * time.Hour)))
	case 2, 3:
		return time.Duration(rng.Int64N(int64(10 * time.Minute)))
	default:
		return time.Duration(rng.Int64N(int64(3 * time.Second)))
	}
}

// randomRTT returns a round-trip time: usually a few ms, sometimes seconds.
func randomRTT(rng *rand.Rand) time.Duration {
	switch rng.IntN(8) {
	case 0:
		return 0
	case 1:
		return time.Duration(rng.Int64N(int64(5 * time.Second)))
	default:
		return time.Duration(rng.Int64N(int64(30 * time.Millisecond)))
	}
}

func TestDrift(t *testing.T) {
	tests := []struct{ age, want time.Duration }{
		{0, 0},
		{1, 1},
		{10_000, 1},
		{10_001, 2},
		{time.Second, 100 * time.Microsecond},
		{-time.Second, 100 * time.Microsecond},
		{24 * time.Hour, 8640 * time.Millisecond},
		{math.MaxInt64, math.MaxInt64/10_000 + 1},
		{math.MinInt64, math.MaxInt64 / 10_000},
	}
	for _, tt := range tests {
		if got := drift(tt.age); got != tt.want {
			t.Errorf("drift(%v) = %v, want %v", tt.age, got, tt.want)
		}
	}
}

// TestServerClockQueriedBeforeSample: readings taken by the caller may be
// later than the injected clock's reading in Now (another goroutine read
// the clock first; a fake clock was not advanced). The bounds stay sound
// for local times before a sample's own, widening with the distance.
func TestServerClockQueriedBeforeSample(t *testing.T) {
	tests := []struct {
		name  string
		ppm   time.Duration // server clock rate
		phase time.Duration // server time at the sample, past the whole second
	}{
		// The lower bound is tight: server fast, sample right on the second.
		{"lower bound", 100, 0},
		// The upper bound is tight: server slow, sample just before the next second.
		{"upper bound", -100, time.Second - 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clocktesting.NewFakeClock(localStart)
			sc := NewServerClock(clk)
			sent := localStart.Add(time.Hour) // a zero round trip, an hour ahead
			d := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
			// Choose the server's clock so that it reads d+phase at sent.
			srv := simServer{base: localStart, ppm: tt.ppm}
			srv.atBase = d.Add(tt.phase).Add(-time.Hour - time.Hour*tt.ppm/1_000_000)
			if got := srv.at(sent); !got.Equal(d.Add(tt.phase)) {
				t.Fatalf("simulation: server reads %v at the sample, want %v", got, d.Add(tt.phase))
			}
			sc.Observe(srv.date(sent), sent, sent)
			for _, at := range []time.Duration{0, 30 * time.Minute, time.Hour - time.Second, time.Hour} {
				clk.SetTime(localStart.Add(at))
				earliest, latest := mustNow(t, sc)
				if truth := srv.at(clk.Now()); truth.Before(earliest) || truth.After(latest) {
					t.Errorf("at start+%v: true server time %v outside [%v, %v]", at, truth, earliest, latest)
				}
			}
		})
	}
}

func TestLocalTimeWhenServerPasses(t *testing.T) {
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	d := time.Date(2026, 3, 1, 11, 0, 0, 0, time.UTC) // the server is an hour behind
	sent := clk.Now()
	sc.Observe(d, sent, sent) // earliest = d exactly, now
	tests := []struct {
		name   string
		target time.Duration // server time, relative to d
		want   time.Duration // local time, relative to now
	}{
		{"already passed", -time.Minute, -time.Minute},
		{"now", 0, 0},
		{"1ns", 1, 2}, // gap + ceil(gap/9999)
		{"99990s", 99990 * time.Second, 99990*time.Second + 10*time.Second}, // stretched by 1/(1-100ppm)
		{"30s", 30 * time.Second, 30*time.Second + 3000301},
		{"far", math.MaxInt64 - 1000, math.MaxInt64}, // saturates
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := sc.LocalTimeWhenServerPasses(d.Add(tt.target))
			if !ok {
				t.Fatal("ok = false, want true")
			}
			if want := localStart.Add(tt.want); !got.Equal(want) {
				t.Errorf("LocalTimeWhenServerPasses(d%+v) = %v, want now%+v = %v", tt.target, got, tt.want, want)
			}
		})
	}

	// The promise: from the returned instant on, earliest >= target.
	target := d.Add(12 * time.Hour)
	at, _ := sc.LocalTimeWhenServerPasses(target)
	clk.SetTime(at)
	if earliest, _ := mustNow(t, sc); earliest.Before(target) {
		t.Errorf("at the returned time earliest = %v, before target %v", earliest, target)
	}
	clk.SetTime(at.Add(-time.Millisecond))
	if earliest, _ := mustNow(t, sc); !earliest.Before(target) {
		t.Errorf("1ms before the returned time earliest = %v, already at target %v: result is not tight", earliest, target)
	}
}

// TestServerClockConcurrent exercises the mutex under -race.
func TestServerClockConcurrent(t *testing.T) {
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	srv := simServer{base: localStart, atBase: localStart.Add(-time.Hour)}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				now := clk.Now()
				switch (g + i) % 4 {
				case 0:
					sc.Observe(srv.date(now), now, now.Add(time.Millisecond))
				case 1:
					sc.Now()
				case 2:
					sc.Estimate()
				case 3:
					sc.LocalTimeWhenServerPasses(now)
				}
			}
		})
	}
	wg.Go(func() {
		for range 200 {
			clk.Step(time.Millisecond)
		}
	})
	wg.Wait()
	if _, _, ok := sc.Now(); !ok {
		t.Error("Now() ok = false after concurrent samples")
	}
}

func TestNewServerClockNil(t *testing.T) {
	// A nil clock means the real clock. Construction reads it once for the
	// base; nothing here depends on the reading.
	sc := NewServerClock(nil)
	if _, ok := sc.clock.(clock.RealClock); !ok {
		t.Errorf("NewServerClock(nil) uses %T, want clock.RealClock", sc.clock)
	}
}

func TestParseDate(t *testing.T) {
	want := time.Date(1994, time.November, 6, 8, 49, 37, 0, time.UTC)
	valid := []string{
		"Sun, 06 Nov 1994 08:49:37 GMT",  // IMF-fixdate
		"Sunday, 06-Nov-94 08:49:37 GMT", // RFC 850
		"Sun Nov  6 08:49:37 1994",       // asctime
		"Sunday, 06-Nov-94 08:49:37 UTC",
	}
	for _, in := range valid {
		t.Run(in, func(t *testing.T) {
			got, err := ParseDate(in)
			if err != nil {
				t.Fatalf("ParseDate(%q) error = %v, want nil", in, err)
			}
			if !got.Equal(want) || got.Location() != time.UTC {
				t.Errorf("ParseDate(%q) = %v (%v), want %v (UTC)", in, got, got.Location(), want)
			}
		})
	}
	invalid := []struct{ in, fragment string }{
		{"", "invalid HTTP date"},
		{"yesterday", `invalid HTTP date "yesterday"`},
		{"Sun, 06 Nov 1994 08:49:37 PST", "invalid HTTP date"}, // IMF-fixdate is GMT only
		{"Sunday, 06-Nov-94 08:49:37 PST", `zone "PST" is not GMT`},
		{"Sunday, 06-Nov-94 08:49:37 GMT+3", "is not GMT"},
		{"Sun, 06 Nov 1994 08:49:37.5 GMT", "fractional seconds"},
		{"Sun, 06 Nov 1994 08:49:37 GMT ", "invalid HTTP date"},
		{"Sun, 06 Nov 1994 25:49:37 GMT", "invalid HTTP date"},
	}
	for _, tt := range invalid {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDate(tt.in)
			if err == nil {
				t.Fatalf("ParseDate(%q) = %v, nil; want error", tt.in, got)
			}
			if !strings.Contains(err.Error(), tt.fragment) {
				t.Errorf("ParseDate(%q) error = %q, want it to contain %q", tt.in, err, tt.fragment)
			}
			if !got.IsZero() {
				t.Errorf("ParseDate(%q) returned %v with an error, want zero", tt.in, got)
			}
		})
	}
	// What the Go HTTP server writes parses back to the same instant.
	if got, err := ParseDate(want.Format(http.TimeFormat)); err != nil || !got.Equal(want) {
		t.Errorf("ParseDate(http.TimeFormat) = %v, %v; want %v", got, err, want)
	}
}
