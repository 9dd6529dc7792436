package ttl

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"
)

// tightClock returns a fake local clock and a ServerClock that has seen one
// zero-round-trip sample saying the server reads serverNow (whole seconds)
// at localStart, so that its earliest bound is exactly serverNow right now.
func tightClock(serverNow time.Time) (*clocktesting.FakeClock, *ServerClock) {
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	sc.Observe(serverNow, localStart, localStart)
	return clk, sc
}

func TestExpiryTakeoverAt(t *testing.T) {
	const ttl = 30 * time.Second
	serverNow := time.Date(2026, 3, 1, 13, 0, 0, 0, time.UTC) // an hour ahead of local
	_, observed := tightClock(serverNow)
	empty := NewServerClock(clocktesting.NewFakeClock(localStart))

	tests := []struct {
		name string
		e    Expiry
		sc   *ServerClock
		want time.Time
	}{
		{"rule a alone, no server clock",
			Expiry{TTL: ttl, FirstSeen: localStart, LastWrite: serverNow}, nil, localStart.Add(ttl)},
		{"rule a alone, server clock has no samples",
			Expiry{TTL: ttl, FirstSeen: localStart, LastWrite: serverNow}, empty, localStart.Add(ttl)},
		{"rule a alone, last write unknown",
			Expiry{TTL: ttl, FirstSeen: localStart}, observed, localStart.Add(ttl)},
		{"rule a wins for a fresh write",
			// rule b: now + 31s + ceil(31s/9999) is later than now + 30s.
			Expiry{TTL: ttl, FirstSeen: localStart, LastWrite: serverNow}, observed, localStart.Add(ttl)},
		{"rule b wins for an old write seen late",
			// W + 1s + TTL = serverNow - 9m29s, passed 9m29s ago.
			Expiry{TTL: ttl, FirstSeen: localStart, LastWrite: serverNow.Add(-10 * time.Minute)}, observed,
			localStart.Add(-10*time.Minute + time.Second + ttl)},
		{"rule b wins for a write 5s old",
			// W + 1s + TTL = serverNow + 26s; stretched by 26s/9999 rounded up.
			Expiry{TTL: ttl, FirstSeen: localStart, LastWrite: serverNow.Add(-5 * time.Second)}, observed,
			localStart.Add(26*time.Second + 2600261)},
		{"rule b alone, first sighting unknown",
			Expiry{TTL: ttl, LastWrite: serverNow}, observed, localStart.Add(31*time.Second + 3100311)},
		{"no rule applies: nothing known", Expiry{TTL: ttl}, observed, never},
		{"no rule applies: no samples", Expiry{TTL: ttl, LastWrite: serverNow}, empty, never},
		{"no rule applies: no server clock", Expiry{TTL: ttl, LastWrite: serverNow}, nil, never},
		{"no TTL", Expiry{FirstSeen: localStart, LastWrite: serverNow.Add(-time.Hour)}, observed, never},
		{"negative TTL", Expiry{TTL: -ttl, FirstSeen: localStart}, nil, never},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.e.TakeoverAt(tt.sc)
			if !got.Equal(tt.want) {
				t.Errorf("TakeoverAt() = %v, want %v (diff %v)", got, tt.want, got.Sub(tt.want))
			}
			if !tt.e.Expired(got, tt.sc) {
				t.Errorf("Expired(TakeoverAt()) = false, want true")
			}
			if tt.e.Expired(got.Add(-time.Nanosecond), tt.sc) {
				t.Errorf("Expired(TakeoverAt() - 1ns) = true, want false")
			}
		})
	}
}

func TestExpiryExpired(t *testing.T) {
	const ttl = 10 * time.Second
	e := Expiry{TTL: ttl, FirstSeen: localStart}
	tests := []struct {
		now  time.Time
		want bool
	}{
		{localStart, false},
		{localStart.Add(ttl - time.Nanosecond), false},
		{localStart.Add(ttl), true},
		{localStart.Add(time.Hour), true},
	}
	for _, tt := range tests {
		t.Run(tt.now.Sub(localStart).String(), func(t *testing.T) {
			if got := e.Expired(tt.now, nil); got != tt.want {
				t.Errorf("Expired(start+%v) = %v, want %v", tt.now.Sub(localStart), got, tt.want)
			}
		})
	}
	if far := localStart.AddDate(1000, 0, 0); (Expiry{TTL: ttl}).Expired(far, nil) {
		t.Errorf("a record with nothing known expired at %v", far)
	}
}

// TestExpiryRuleBFreshWaiter: a waiter that starts long after a crashed
// holder's last write takes over at once, although it has only just seen
// the record and rule (a) alone would make it wait a whole TTL.
func TestExpiryRuleBFreshWaiter(t *testing.T) {
	const ttl = time.Hour
	srv := simServer{base: localStart, atBase: localStart.Add(-time.Hour)} // server an hour behind
	clk := clocktesting.NewFakeClock(localStart)
	sc := NewServerClock(clk)
	lastWrite := srv.date(localStart).Add(-3 * time.Hour) // crashed 3h ago

	// The waiter's first GET of the Lease: its response carries a Date.
	sent := clk.Now()
	clk.Step(20 * time.Millisecond)
	sc.Observe(srv.date(sent.Add(10*time.Millisecond)), sent, clk.Now())
	e := Expiry{TTL: ttl, FirstSeen: clk.Now(), LastWrite: lastWrite}

	if !e.Expired(clk.Now(), sc) {
		t.Errorf("Expired(now) = false, want true: the last write was 3h ago with a 1h TTL (TakeoverAt %v, now %v)",
			e.TakeoverAt(sc), clk.Now())
	}
	if got, ruleA := e.TakeoverAt(sc), e.FirstSeen.Add(ttl); !got.Before(ruleA) {
		t.Errorf("TakeoverAt() = %v, want before rule (a)'s %v", got, ruleA)
	}
	// Without a server clock it must wait the full TTL.
	if e.Expired(clk.Now(), nil) {
		t.Error("Expired(now, nil) = true, want false")
	}
}

// expiryScenario simulates one holder write and one waiter.
type expiryScenario struct {
	ttl      time.Duration
	srv      simServer
	sent     time.Time // local time the holder sent its write
	written  time.Time // local time the server performed it
	trueS    time.Time // server time of the write
	w        time.Time // its managedFields stamp (truncated)
	seen     time.Time // local time the waiter first saw the version
	holderBy time.Time // local time by which the holder has given up
}

// newExpiryScenario runs a fake world with random clock offset (one of the
// given ones, or random in ±1h), server and holder clock rates within ±ppm
// of the waiter's (each at most ppm/2, so any two differ by at most ppm),
// random round trips and delays. The waiter's clock is the reference.
func newExpiryScenario(rng *rand.Rand, clk *clocktesting.FakeClock, sc *ServerClock, ppm int64) expiryScenario {
	offsets := []time.Duration{time.Hour, -time.Hour, 37400 * time.Millisecond}
	offset := time.Duration(rng.Int64N(int64(2*time.Hour))) - time.Hour
	if k := rng.IntN(6); k < len(offsets) {
		offset = offsets[k]
	}
	var srvPPM, holderPPM time.Duration
	if ppm > 0 {
		srvPPM = time.Duration(rng.Int64N(ppm+1) - ppm/2)
		holderPPM = time.Duration(rng.Int64N(ppm+1) - ppm/2)
	}
	s := expiryScenario{
		srv: simServer{base: localStart, atBase: localStart.Add(offset), ppm: srvPPM},
	}
	switch rng.IntN(3) {
	case 0:
		s.ttl = Min + time.Duration(rng.Int64N(int64(10*time.Second)))
	case 1:
		s.ttl = Min + time.Duration(rng.Int64N(int64(10*time.Minute)))
	default:
		s.ttl = Min + time.Duration(rng.Int64N(int64(6*time.Hour)))
	}
	clk.Step(time.Duration(rng.Int64N(int64(time.Second))))

	// Some samples before the write (possibly none).
	for range rng.IntN(4) {
		clk.Step(randomGap(rng))
		s.srv.request(rng, clk, sc, randomRTT(rng))
	}

	// The holder's write: sent now, performed within its round trip.
	clk.Step(randomGap(rng))
	s.sent = clk.Now()
	rtt := randomRTT(rng)
	s.written = s.sent.Add(time.Duration(rng.Int64N(int64(rtt) + 1)))
	clk.Step(rtt)
	s.trueS = s.srv.at(s.written)
	s.w = s.trueS.Truncate(time.Second)
	// The holder gives up after TTL - margin on its own clock.
	onHolder := s.ttl - HolderMargin(s.ttl)
	s.holderBy = s.sent.Add(onHolder - onHolder*holderPPM/1_000_000)

	// The waiter sees it: at once, within a few TTLs, or hours later,
	// possibly with samples in between; the GET itself is a sample.
	delay := time.Duration(0)
	switch rng.IntN(3) {
	case 1:
		delay = time.Duration(rng.Int64N(int64(3 * s.ttl)))
	case 2:
		delay = time.Duration(rng.Int64N(int64(12 * time.Hour)))
	}
	clk.Step(delay)
	for range rng.IntN(3) {
		s.srv.request(rng, clk, sc, randomRTT(rng))
	}
	if s.srv.request(rng, clk, sc, randomRTT(rng)); clk.Now().Before(s.written) {
		panic("simulation bug: seen before written")
	}
	s.seen = clk.Now()
	return s
}

// TestExpiryNeverEarly is the soundness property of Expiry. For a holder
// whose write happened at server time S (stamped W, S in [W, W+1s)):
//
//   - with clocks at equal rates, TakeoverAt never precedes the local
//     instant at which the true server time reaches S + TTL (both rules);
//   - with the server's clock up to 100 ppm off, rule (b) alone never lets
//     a waiter decide "expired" before the true server time has reached
//     S + TTL;
//   - with every clock up to 100 ppm off each other, no takeover ever
//     happens before the holder has given up at its HolderDeadline.
//
// The waiter keeps observing Date samples and asks again and again, as the
// lock package does.
func TestExpiryNeverEarly(t *testing.T) {
	variants := []struct {
		name  string
		ppm   int64
		ruleA bool // use FirstSeen
		check func(s expiryScenario, takeover, now time.Time) error
	}{
		{"server time, equal rates, both rules", 0, true,
			func(s expiryScenario, takeover, _ time.Time) error {
				if got, min := s.srv.at(takeover), s.trueS.Add(s.ttl); got.Before(min) {
					return fmt.Errorf("server time at takeover %v is %v before S+TTL %v", got, min.Sub(got), min)
				}
				return nil
			}},
		{"server time, 100ppm, rule b", 100, false,
			func(s expiryScenario, takeover, now time.Time) error {
				// A takeover time in the past is acted on now.
				if got, min := s.srv.at(later(takeover, now)), s.trueS.Add(s.ttl); got.Before(min) {
					return fmt.Errorf("server time at takeover %v is %v before S+TTL %v", got, min.Sub(got), min)
				}
				return nil
			}},
		{"holder deadline, 100ppm, both rules", 100, true,
			func(s expiryScenario, takeover, now time.Time) error {
				if at := later(takeover, now); !at.After(s.holderBy) {
					return fmt.Errorf("takeover at %v, %v before the holder gives up at %v", at, s.holderBy.Sub(at), s.holderBy)
				}
				return nil
			}},
	}
	const scenarios = 3000
	for vi, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(42, uint64(vi)))
			var byRuleB, checked int
			for n := range scenarios {
				clk := clocktesting.NewFakeClock(localStart)
				sc := NewServerClock(clk)
				s := newExpiryScenario(rng, clk, sc, v.ppm)
				e := Expiry{TTL: s.ttl, LastWrite: s.w}
				if v.ruleA {
					e.FirstSeen = s.seen
				}
				for q := range 6 {
					now := clk.Now()
					takeover := e.TakeoverAt(sc)
					if takeover.Equal(never) {
						break // rule (b) only, and nothing observed
					}
					checked++
					if q == 0 && (!v.ruleA || takeover.Before(s.seen.Add(s.ttl))) {
						byRuleB++
					}
					if err := v.check(s, takeover, now); err != nil {
						t.Fatalf("scenario %d query %d (ttl %v, offset %v, server %+dppm, seen %v after the write): %v",
							n, q, s.ttl, s.srv.atBase.Sub(localStart), s.srv.ppm, s.seen.Sub(s.written), err)
					}
					// Time passes; sometimes another response arrives.
					clk.Step(randomGap(rng))
					if rng.IntN(2) == 0 {
						s.srv.request(rng, clk, sc, randomRTT(rng))
					}
				}
			}
			// Make sure the property was not checked vacuously.
			if checked < scenarios || byRuleB < scenarios/10 {
				t.Errorf("only %d checks, %d decided by rule (b): the simulation does not exercise the rules", checked, byRuleB)
			}
			t.Logf("%d checks, %d first answers from rule (b)", checked, byRuleB)
		})
	}
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
