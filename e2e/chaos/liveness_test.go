package main

import (
	"testing"
	"time"
)

// TestCheckLiveness: the time from each fault's end to the next
// acquisition, on made-up histories; a wait beyond the target is a miss,
// and a window closed by the next fault before anything is known is cut.
func TestCheckLiveness(t *testing.T) {
	const s = int64(time.Second)
	fault := func(at, until int64) record { return record{Kind: "fault", Fault: "etcd-leader", At: at, Until: until} }
	acq := func(m string, end int64) record { return record{Kind: "wait", Mutex: m, Result: "acquired", End: end} }
	run := record{Kind: "run", At: 0, Until: 100 * s}
	for _, tc := range []struct {
		name                 string
		recs                 []record
		wantSamples, wantCut int
		wantMisses           int
		wantP50, wantMax     time.Duration
		wantAtLeast          bool
	}{
		{"acquired soon after", []record{run, fault(10*s, 12*s), acq("m", 13*s)}, 1, 0, 0, time.Second, time.Second, false},
		{"acquired only during the fault counts not", []record{run, fault(10*s, 12*s), acq("m", 11*s), acq("m", 14*s)}, 1, 0, 0, 2 * time.Second, 2 * time.Second, false},
		{"acquired beyond the target", []record{run, fault(10*s, 12*s), acq("m", 22*s)}, 1, 0, 1, 10 * time.Second, 10 * time.Second, false},
		{"the next fault came first, before the target", []record{run, fault(10*s, 12*s), fault(15*s, 16*s), acq("m", 17*s)}, 1, 1, 0, time.Second, time.Second, false},
		{"none until the next fault, after the target", []record{run, fault(10*s, 12*s), fault(30*s, 31*s), acq("m", 32*s)}, 2, 0, 1, time.Second, 18 * time.Second, true},
		{"a waiting acquisition that failed is none", []record{run, fault(10*s, 12*s), {Kind: "wait", Mutex: "m", Result: "timeout", End: 13 * s}, acq("m", 15*s)}, 1, 0, 0, 3 * time.Second, 3 * time.Second, false},
		{"another mutex's acquisition is none", []record{run, fault(10*s, 12*s), acq("other", 13*s), acq("m", 16*s)}, 1, 0, 0, 4 * time.Second, 4 * time.Second, false},
		{"p50 of three", []record{run, fault(10*s, 11*s), acq("m", 12*s), fault(20*s, 21*s), acq("m", 24*s), fault(30*s, 31*s), acq("m", 33*s)}, 3, 0, 0, 2 * time.Second, 3 * time.Second, false},
		{"nothing after the last fault, run ends soon", []record{run, fault(95*s, 97*s)}, 0, 1, 0, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := &verdict{counts: map[string]int{}}
			ls := checkLiveness(v, tc.recs, map[string]time.Duration{"m": 8 * time.Second}, map[string]string{"m": "racing"})
			if len(ls) != 1 {
				t.Fatalf("got %d figures, want 1", len(ls))
			}
			l := ls[0]
			p50, worst := l.stats()
			if len(l.samples) != tc.wantSamples || l.cut != tc.wantCut || l.misses != tc.wantMisses ||
				p50 != tc.wantP50 || worst.d != tc.wantMax || worst.atLeast != tc.wantAtLeast {
				t.Errorf("samples %d cut %d misses %d p50 %s max %s (at least: %v); want %d, %d, %d, %s, %s (%v)",
					len(l.samples), l.cut, l.misses, p50, worst.d, worst.atLeast,
					tc.wantSamples, tc.wantCut, tc.wantMisses, tc.wantP50, tc.wantMax, tc.wantAtLeast)
			}
			if v.counts[cLivenessMiss] != tc.wantMisses {
				t.Errorf("%s = %d, want %d", cLivenessMiss, v.counts[cLivenessMiss], tc.wantMisses)
			}
			if v.total() != 0 {
				t.Errorf("liveness misses counted as violations: total %d", v.total())
			}
		})
	}
}
