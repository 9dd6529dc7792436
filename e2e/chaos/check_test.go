package main

import (
	"testing"
	"time"
)

// The checker must be able to fail: each row breaks one invariant in an
// otherwise clean history and names the violation it must report.
func TestCheckCatchesViolations(t *testing.T) {
	const s = int64(time.Second)
	ttls := map[string]time.Duration{"m": 3 * time.Second}
	cs := func(holder string, token, enter, exit int64) record {
		return record{Kind: "cs", Mutex: "m", Holder: holder, Token: token, Enter: enter, Exit: exit, Pid: int(token)}
	}
	write := func(token, rv, stored int64, outcome, value string) record {
		return record{Kind: "write", Mutex: "m", Token: token, RV: rv, Stored: stored, Outcome: outcome, Value: value}
	}
	end := record{Kind: "end", Mutex: "m", Phase: "Unlocked", Value: "b", RV: 11}
	clean := []record{
		cs("a", 1, 1*s, 2*s), cs("b", 2, 3*s, 4*s),
		write(1, 10, 0, "accepted", "a"), write(2, 11, 1, "accepted", "b"),
		{Kind: "wait", Mutex: "m", Start: 0, End: 5 * s, Timeout: 5 * s, Result: "timeout"},
		end,
	}
	if v := check(clean, ttls, nil, nil); v.total() != 0 {
		t.Fatalf("clean history: got violations %v, want none", v.violations)
	}
	lost := cs("a", 1, 1*s, 4*s)
	lost.LostAt, lost.Lost = 2*s, true
	toldLate := cs("a", 1, 1*s, 4*s)
	toldLate.Lost = true
	for _, tc := range []struct {
		name string
		recs []record
		want string // "" for no violation
	}{
		{"overlap", []record{cs("a", 1, 1*s, 4*s), cs("b", 2, 3*s, 5*s)}, vOverlap},
		{"overlap after being told", []record{lost, cs("b", 2, 3*s, 5*s)}, ""},
		{"overlap told only afterwards", []record{toldLate, cs("b", 2, 3*s, 5*s)}, vOverlap},
		{"paused holder told afterwards", []record{toldLate, cs("b", 2, 3*s, 5*s), {Kind: "fault", Fault: "sigstop", Pid: 1, At: 2 * s, Until: 4 * s}}, ""},
		{"paused holder never told", []record{cs("a", 1, 1*s, 4*s), cs("b", 2, 3*s, 5*s), {Kind: "fault", Fault: "sigstop", Pid: 1, At: 2 * s, Until: 4 * s}}, vZombieUntold},
		{"token order", []record{cs("a", 2, 1*s, 2*s), cs("b", 2, 3*s, 4*s)}, vToken},
		{"stale write accepted", []record{write(1, 12, 2, "accepted", "c")}, vStale},
		{"write accepted out of token order", []record{write(1, 12, 1, "accepted", "c")}, vStale},
		{"lost acknowledged write", []record{write(2, 12, 2, "accepted", "c")}, vFinal},
		{"unknown write applied last", []record{write(2, 12, 2, "unknown", "b2")}, ""},
		{"timed out early", []record{{Kind: "wait", Start: 0, End: 1 * s, Timeout: 5 * s, Result: "timeout"}}, vWaitBounds},
		{"timed out late", []record{{Kind: "wait", Start: 0, End: 5*s + int64(waitOvershoot) + 1, Timeout: 5 * s, Result: "timeout"}}, vWaitBounds},
		{"timed out, then cleaned up", []record{{Kind: "wait", Start: 0, End: 5*s + int64(waitOvershoot), Timeout: 5 * s, Result: "timeout"}}, ""},
		{"still locked", []record{{Kind: "end", Mutex: "m", Phase: "Locked", Value: "b", RV: 11}}, vEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var recs []record
			for _, r := range clean {
				keep := true
				for _, x := range tc.recs {
					// A row's cs records replace the clean ones, its end
					// record the clean end.
					if (x.Kind == "cs" && r.Kind == "cs") || (x.Kind == "end" && r.Kind == "end") {
						keep = false
					}
				}
				if keep {
					recs = append(recs, r)
				}
			}
			recs = append(recs, tc.recs...)
			if tc.name == "unknown write applied last" {
				for i := range recs {
					if recs[i].Kind == "end" {
						recs[i].Value, recs[i].RV = "b2", 12
					}
				}
			}
			v := check(recs, ttls, nil, nil)
			if tc.want == "" {
				if v.total() != 0 {
					t.Errorf("got violations %v, want none", v.violations)
				}
				return
			}
			if got := v.counts[tc.want]; got == 0 {
				t.Errorf("got counts %v, violations %v; want %s", v.counts, v.violations, tc.want)
			}
		})
	}
}

// TestCheckFIFO: a wait that began after another was queued and acquired
// before it is an inversion, unless a fault touched the first one.
func TestCheckFIFO(t *testing.T) {
	const s = int64(time.Second)
	a := record{Kind: "wait", Mutex: "fair", Holder: "a", Pid: 1, Start: 1 * s, Queued: 2 * s, End: 9 * s, Result: "acquired"}
	later := record{Kind: "wait", Mutex: "fair", Holder: "b", Pid: 2, Start: 3 * s, End: 5 * s, Result: "acquired"}
	concurrent := record{Kind: "wait", Mutex: "fair", Holder: "c", Pid: 3, Start: 1500 * int64(time.Millisecond), End: 5 * s, Result: "acquired"}
	for _, tc := range []struct {
		name string
		recs []record
		want int
	}{
		{"in order", []record{a, {Kind: "wait", Mutex: "fair", Holder: "b", Pid: 2, Start: 3 * s, End: 10 * s, Result: "acquired"}}, 0},
		{"inverted", []record{a, later}, 1},
		{"began before the other was queued", []record{a, concurrent}, 0},
		{"the first one's process was paused", []record{a, later, {Kind: "fault", Fault: "sigstop", Pid: 1, At: 4 * s, Until: 6 * s}}, 0},
		{"another process was paused", []record{a, later, {Kind: "fault", Fault: "sigstop", Pid: 7, At: 4 * s, Until: 6 * s}}, 1},
		{"the API server crashed meanwhile", []record{a, later, {Kind: "fault", Fault: "apiserver", At: 4 * s, Until: 6 * s}}, 0},
		{"a fault long before the first one queued", []record{a, later, {Kind: "fault", Fault: "drop", At: -20 * s, Until: -19 * s}}, 1},
		{"the API server crashed shortly before the first one queued (its session may be lost after)", []record{a, later, {Kind: "fault", Fault: "apiserver", At: -2 * s, Until: s}}, 0},
		{"the first one's process was killed before it queued", []record{a, later, {Kind: "fault", Fault: "kill", Pid: 1, At: s / 2, Until: s}}, 1},
	} {
		v := &verdict{counts: map[string]int{}}
		var waits, faults []record
		for _, r := range tc.recs {
			if r.Kind == "fault" {
				faults = append(faults, r)
			} else {
				waits = append(waits, r)
			}
		}
		checkFIFO(v, "fair", waits, faults)
		if got := v.counts[vFIFO]; got != tc.want {
			t.Errorf("%s: %d FIFO violations, want %d: %v", tc.name, got, tc.want, v.violations)
		}
	}
}

// TestCheckLimit: three sections of a semaphore with limit 2 inside at
// once is a violation, unless the extra holder had been told.
func TestCheckLimit(t *testing.T) {
	const s = int64(time.Second)
	sec := func(holder string, enter, exit, lostAt int64) record {
		return record{Kind: "cs", Mutex: "sem.s-0", Semaphore: "sem", Holder: holder, Enter: enter, Exit: exit, LostAt: lostAt, Lost: lostAt != 0}
	}
	for _, tc := range []struct {
		name string
		secs []record
		want int
	}{
		{"two at once", []record{sec("a", 1*s, 5*s, 0), sec("b", 2*s, 6*s, 0), sec("c", 5*s, 7*s, 0)}, 0},
		{"three at once", []record{sec("a", 1*s, 5*s, 0), sec("b", 2*s, 6*s, 0), sec("c", 3*s, 7*s, 0)}, 1},
		{"the third's predecessor was told", []record{sec("a", 1*s, 5*s, 2*s), sec("b", 2*s, 6*s, 0), sec("c", 3*s, 7*s, 0)}, 0},
	} {
		v := &verdict{counts: map[string]int{}}
		checkLimit(v, "sem", 2, tc.secs, nil)
		if got := v.counts[vLimit]; got != tc.want {
			t.Errorf("%s: %d limit violations, want %d: %v", tc.name, got, tc.want, v.violations)
		}
	}
}
