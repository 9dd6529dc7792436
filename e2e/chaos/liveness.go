package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/konlease/konlease/lock"
)

// livenessSlack is how much longer than its TTL a mutex may go without an
// acquisition after a fault has ended: a holder that the fault cut off
// keeps it until its TTL runs out, then waiters need a moment to see it.
const livenessSlack = 5 * time.Second

// liveness is the liveness figure of one mutex (or semaphore): for each
// fault, the time from the fault's end (the cluster whole again) to the
// next acquisition. A miss is a time over the target; it is reported, not
// counted as a violation (safety is what fails a run).
type liveness struct {
	mutex, kind string
	target      time.Duration
	samples     []liveSample
	// cut counts the faults after which the next fault (or the end of the
	// run) came before any acquisition, and before the target had passed:
	// nothing is known of them.
	cut    int
	misses int
}

type liveSample struct {
	d     time.Duration
	fault string
	// atLeast: no acquisition before the next fault, which came after the
	// target had passed; d is the time until then, a lower bound.
	atLeast bool
}

const cLivenessMiss = "liveness.target-misses"

// checkLiveness computes the liveness figure of each mutex in targets
// (its TTL plus livenessSlack), whose kind (racing, fair, semaphore) kinds
// gives, and counts the misses into v. An acquisition is a wait that
// acquired (for a semaphore, any slot); a fault's window runs from its end
// to the start of the next fault, or the end of the run.
func checkLiveness(v *verdict, recs []record, targets map[string]time.Duration, kinds map[string]string) []*liveness {
	var faults []record
	acquired := map[string][]int64{}
	// The run's end; without a run record, the last event.
	var runEnd, last int64
	for _, r := range recs {
		switch {
		case r.Kind == "fault":
			faults = append(faults, r)
		case r.Kind == "wait" && strings.HasPrefix(r.Result, "acquired"):
			acquired[r.Mutex] = append(acquired[r.Mutex], r.End)
		case r.Kind == "run":
			runEnd = r.Until
		}
		last = max(last, r.End, r.Until, r.At, r.Exit)
	}
	if runEnd == 0 {
		runEnd = last
	}
	sort.Slice(faults, func(i, j int) bool { return faults[i].At < faults[j].At })
	var out []*liveness
	for _, m := range slices.Sorted(maps.Keys(targets)) {
		l := &liveness{mutex: m, kind: kinds[m], target: targets[m]}
		acq := acquired[m]
		slices.Sort(acq)
		for k, f := range faults {
			windowEnd := runEnd
			if k+1 < len(faults) {
				windowEnd = faults[k+1].At
			}
			i, _ := slices.BinarySearch(acq, f.Until)
			switch {
			case i < len(acq) && acq[i] < windowEnd:
				l.samples = append(l.samples, liveSample{d: time.Duration(acq[i] - f.Until), fault: f.Fault})
			case time.Duration(windowEnd-f.Until) > l.target:
				l.samples = append(l.samples, liveSample{d: time.Duration(windowEnd - f.Until), fault: f.Fault, atLeast: true})
			default:
				l.cut++
				continue
			}
			if s := l.samples[len(l.samples)-1]; s.d > l.target {
				l.misses++
				v.counts[cLivenessMiss]++
			}
		}
		v.counts["liveness.samples"] += len(l.samples)
		out = append(out, l)
	}
	if _, ok := v.counts[cLivenessMiss]; !ok {
		v.counts[cLivenessMiss] = 0
	}
	return out
}

// livenessTargets are the run's mutexes and semaphores with their targets
// and kinds.
func livenessTargets() (map[string]time.Duration, map[string]string) {
	targets, kinds := map[string]time.Duration{}, map[string]string{}
	for m, ttl := range mutexTTLs {
		targets[m], kinds[m] = ttl+livenessSlack, "racing"
		if fairMutexes[m] {
			// A waiter killed at the head of the queue (or handed the
			// mutex) is passed over only once its session has expired, a
			// waiter TTL after its last renewal (package lock's doc), so
			// the longer of the two bounds the wait.
			targets[m], kinds[m] = max(ttl, lock.DefaultWaiterTTL)+livenessSlack, "fair"
		}
	}
	for s := range semaphoreLimits {
		targets[s], kinds[s] = semaphoreTTLs[s]+livenessSlack, "semaphore"
	}
	return targets, kinds
}

// p50 and worst of the samples; worst.atLeast says it is a lower bound.
func (l *liveness) stats() (p50 time.Duration, worst liveSample) {
	if len(l.samples) == 0 {
		return 0, liveSample{}
	}
	ds := make([]time.Duration, len(l.samples))
	for i, s := range l.samples {
		ds[i] = s.d
		if s.d > worst.d {
			worst = s
		}
	}
	slices.Sort(ds)
	return ds[(len(ds)-1)/2], worst
}

// reportLiveness prints the liveness table.
func reportLiveness(w io.Writer, ls []*liveness) {
	fmt.Fprintf(w, "liveness (fault end to the next acquisition; target TTL+%s, fair: the longer of TTL and waiter TTL, +%s):\n", livenessSlack, livenessSlack)
	fmt.Fprintf(w, "  %-8s %-10s %7s %4s %8s %9s %8s %7s  %s\n", "mutex", "kind", "samples", "cut", "p50", "max", "target", "misses", "worst after")
	for _, l := range ls {
		p50, worst := l.stats()
		mx := worst.d.Round(10 * time.Millisecond).String()
		if worst.atLeast {
			mx = ">=" + mx
		}
		fmt.Fprintf(w, "  %-8s %-10s %7d %4d %8s %9s %8s %7d  %s\n", l.mutex, l.kind, len(l.samples), l.cut,
			p50.Round(10*time.Millisecond), mx, l.target, l.misses, worst.fault)
	}
}
