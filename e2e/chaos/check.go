package main

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/konlease/konlease/lock"
)

// verdict is the checker's result: counts by name, and one line per
// violation. A run passes when there is no violation.
type verdict struct {
	counts     map[string]int
	violations []string
}

func (v *verdict) inc(name string) { v.counts[name]++ }

func (v *verdict) violate(name, format string, args ...any) {
	v.counts[name]++
	v.violations = append(v.violations, name+": "+fmt.Sprintf(format, args...))
}

// Violation counters; each must be zero.
const (
	vOverlap      = "violation.overlap"
	vZombieUntold = "violation.paused-holder-never-told"
	vToken        = "violation.token-order"
	vStale        = "violation.fence-stale-accepted"
	vFinal        = "violation.fence-final-value"
	vWaitBounds   = "violation.wait-outside-timeout"
	vEnd          = "violation.end-state"
	vFIFO         = "violation.fifo-order"
	vLimit        = "violation.semaphore-limit"
)

var violationNames = []string{vOverlap, vZombieUntold, vToken, vStale, vFinal, vWaitBounds, vEnd, vFIFO, vLimit}

// waiterSlack is how long after a fault of the whole cluster it may still
// cost a fair waiter its session: the library's default waiter TTL, which
// the workers use.
const waiterSlack = lock.DefaultWaiterTTL

func ns(t int64) string { return time.Unix(0, t).UTC().Format("15:04:05.000000") }

// check judges merged histories. ttls maps each mutex to its TTL (0: none);
// fair says which are fair; limits maps each semaphore to its limit (its
// slots are judged as mutexes, named by the sections).
func check(recs []record, ttls map[string]time.Duration, fair map[string]bool, limits map[string]int) *verdict {
	v := &verdict{counts: map[string]int{}}
	for _, n := range violationNames {
		v.counts[n] = 0
	}
	cs := map[string][]record{}
	writes := map[string][]record{}
	var pauses, faults []record
	waits := map[string][]record{}
	ends := map[string]record{}
	for _, r := range recs {
		switch r.Kind {
		case "cs":
			cs[r.Mutex] = append(cs[r.Mutex], r)
		case "write":
			writes[r.Mutex] = append(writes[r.Mutex], r)
		case "wait":
			checkWait(v, r)
			waits[r.Mutex] = append(waits[r.Mutex], r)
		case "fault":
			v.inc("fault." + r.Fault)
			faults = append(faults, r)
			if r.Fault == "sigstop" {
				pauses = append(pauses, r)
			}
		case "end":
			ends[r.Mutex] = r
		}
	}
	mutexes := make([]string, 0, len(ttls))
	for m := range ttls {
		mutexes = append(mutexes, m)
	}
	sort.Strings(mutexes)
	for s, limit := range limits {
		var all []record
		for name, secs := range cs {
			if len(secs) > 0 && secs[0].Semaphore == s {
				all = append(all, secs...)
				checkSections(v, name, secs, pauses)
				checkFence(v, name, writes[name], ends[name])
				checkEnd(v, name, ends[name], time.Duration(ends[name].TTL))
			}
		}
		checkLimit(v, s, limit, all, pauses)
	}
	for _, m := range mutexes {
		checkSections(v, m, cs[m], pauses)
		checkFence(v, m, writes[m], ends[m])
		checkEnd(v, m, ends[m], ttls[m])
		if fair[m] {
			checkFIFO(v, m, waits[m], faults)
		}
	}
	return v
}

// checkFIFO: on a fair mutex, a wait that began after another was queued
// does not acquire before it, unless a fault touched the one queued first
// while it waited: its process was killed or paused (it was rightly passed
// over), or the whole cluster was (a dropped or stalled connection, an API
// server or etcd crash: its session may have expired). A fault of the
// whole cluster touches the waits of up to waiterSlack after it ended: a
// session whose renewals failed during it is declared lost when no renewal
// has succeeded for a while, by then perhaps after the fault, and its
// waiters queue anew, at the back (the worker records only the first
// queueing). Waits that no fault touched are judged; the count of judged
// pairs says how many.
func checkFIFO(v *verdict, m string, waits []record, faults []record) {
	touched := func(a record) bool {
		for _, f := range faults {
			if f.At > a.End {
				continue
			}
			switch f.Fault {
			case "kill", "sigstop":
				if f.Pid == a.Pid && f.Until >= a.Queued {
					return true
				}
			default:
				if f.Until+int64(waiterSlack) >= a.Queued {
					return true
				}
			}
		}
		return false
	}
	for _, a := range waits {
		if a.Result != "acquired" || a.Queued == 0 || touched(a) {
			continue
		}
		for _, b := range waits {
			if b.Result != "acquired" || b.Start <= a.Queued || b.End >= a.End {
				continue
			}
			v.violate(vFIFO, "%s: %s began to wait at %s, after %s was queued (%s), and acquired at %s, before it (%s)",
				m, b.Holder, ns(b.Start), a.Holder, ns(a.Queued), ns(b.End), ns(a.End))
		}
	}
	judged := 0
	for _, a := range waits {
		if a.Result == "acquired" && a.Queued != 0 && !touched(a) {
			judged++
		}
	}
	v.counts["fifo.judged-waits"] += judged
}

// checkLimit: at no moment are more sections of semaphore s inside than
// its limit, counting only holders that had not been told they lost their
// slot, and excusing one that was paused meanwhile and told when it ran
// again (as checkSections does for a mutex).
func checkLimit(v *verdict, s string, limit int, secs []record, pauses []record) {
	sort.Slice(secs, func(i, j int) bool { return secs[i].Enter < secs[j].Enter })
	for i, b := range secs {
		inside := []record{b}
		for _, a := range secs[:i] {
			if a.Exit <= b.Enter {
				continue
			}
			switch {
			case a.LostAt != 0 && a.LostAt <= b.Enter:
			case a.Lost && paused(pauses, a.Pid, a.Enter, b.Enter):
			default:
				inside = append(inside, a)
			}
		}
		v.counts["semaphore.most-inside"] = max(v.counts["semaphore.most-inside"], len(inside))
		if len(inside) > limit {
			var who []string
			for _, a := range inside {
				who = append(who, fmt.Sprintf("%s (token %d, %s-%s)", a.Holder, a.Token, ns(a.Enter), ns(a.Exit)))
			}
			v.violate(vLimit, "%s: %d inside at %s, limit %d: %s", s, len(inside), ns(b.Enter), limit, strings.Join(who, ", "))
		}
	}
}

func paused(pauses []record, pid int, from, to int64) bool {
	for _, p := range pauses {
		if p.Pid == pid && p.At <= to && (p.Until == 0 || p.Until >= from) {
			return true
		}
	}
	return false
}

// checkSections: no two sections of one mutex overlap unless the earlier
// holder had been told it lost the lock before the later one entered, or it
// was paused (SIGSTOP) meanwhile and learned of the loss when it ran again
// (the documented limit: a paused process notices only when it runs again;
// the fenced store must then refuse it). Tokens strictly increase in the
// order the sections were entered.
func checkSections(v *verdict, m string, secs []record, pauses []record) {
	sort.Slice(secs, func(i, j int) bool { return secs[i].Enter < secs[j].Enter })
	v.counts["cs"] += len(secs)
	v.counts["cs."+m] += len(secs)
	for i, a := range secs {
		if a.Lost {
			v.inc("cs.told-lost")
		}
		if i > 0 && a.Token <= secs[i-1].Token {
			p := secs[i-1]
			v.violate(vToken, "%s: section of %s (token %d, entered %s) follows %s (token %d, entered %s)",
				m, a.Holder, a.Token, ns(a.Enter), p.Holder, p.Token, ns(p.Enter))
		}
		for _, b := range secs[i+1:] {
			if b.Enter >= a.Exit {
				break
			}
			switch {
			case a.LostAt != 0 && a.LostAt <= b.Enter:
				v.inc("overlap.excused-told-before")
			case paused(pauses, a.Pid, a.Enter, b.Enter):
				if a.Lost {
					v.inc("overlap.paused-holder-told-after")
				} else {
					v.violate(vZombieUntold, "%s: %s (token %d, pid %d) was paused, overlapped %s (token %d) from %s and was never told it lost the lock",
						m, a.Holder, a.Token, a.Pid, b.Holder, b.Token, ns(b.Enter))
				}
			default:
				v.violate(vOverlap, "%s: %s (token %d, %s-%s, lostAt %d) overlaps %s (token %d, %s-%s)",
					m, a.Holder, a.Token, ns(a.Enter), ns(a.Exit), a.LostAt, b.Holder, b.Token, ns(b.Enter), ns(b.Exit))
			}
		}
	}
}

// checkFence: in the order the store applied them (resourceVersion), the
// accepted writes' tokens never decrease, each was at least the token the
// store held, and the final value is the last accepted write's, or that of a
// later write whose answer was lost (it may have applied).
func checkFence(v *verdict, m string, ws []record, end record) {
	var accepted []record
	unknown := map[string]bool{}
	for _, w := range ws {
		v.inc("write." + w.Outcome)
		switch w.Outcome {
		case "accepted":
			accepted = append(accepted, w)
			if w.Token < w.Stored {
				v.violate(vStale, "%s: write %q with token %d accepted over stored token %d", m, w.Value, w.Token, w.Stored)
			}
		case "rejected":
			if w.Token >= w.Stored {
				v.violate(vStale, "%s: write %q with token %d rejected though the store held %d", m, w.Value, w.Token, w.Stored)
			}
		case "unknown":
			unknown[w.Value] = true
		}
	}
	sort.Slice(accepted, func(i, j int) bool { return accepted[i].RV < accepted[j].RV })
	for i := 1; i < len(accepted); i++ {
		a, b := accepted[i-1], accepted[i]
		if b.Token < a.Token {
			v.violate(vStale, "%s: write %q (token %d, rv %d) accepted after %q (token %d, rv %d)",
				m, b.Value, b.Token, b.RV, a.Value, a.Token, a.RV)
		}
	}
	if end.Kind == "" {
		v.violate(vFinal, "%s: no final reading of the store", m)
		return
	}
	if len(accepted) == 0 {
		if end.Value != "" && !unknown[end.Value] {
			v.violate(vFinal, "%s: store holds %q but no write was accepted", m, end.Value)
		}
		return
	}
	last := accepted[len(accepted)-1]
	switch {
	case end.RV == last.RV && end.Value == last.Value:
	case end.RV > last.RV && unknown[end.Value]:
		v.inc("write.unknown-applied-last")
	default:
		v.violate(vFinal, "%s: store holds %q (rv %d), want the last accepted write %q (rv %d)", m, end.Value, end.RV, last.Value, last.RV)
	}
}

// waitOvershoot is how long after its timeout a wait may end: the cleanup
// that Lock promises to finish within the cleanup timeout once its context
// ends (leaving the queue, settling an unanswered write), which the
// workers leave at its default, and scheduling on a loaded machine.
const waitOvershoot = lock.DefaultCleanupTimeout + 2*time.Second

// checkWait: an attempt acquired, or timed out no earlier than asked and
// no later than its cleanup allows. Errors (API server down) are counted,
// not judged.
func checkWait(v *verdict, r record) {
	v.inc("wait." + r.Result)
	if r.Result != "timeout" {
		return
	}
	took := time.Duration(r.End - r.Start)
	timeout := time.Duration(r.Timeout)
	if took < timeout-10*time.Millisecond || took > timeout+waitOvershoot {
		v.violate(vWaitBounds, "%s: %s gave up after %s, asked to wait %s", r.Mutex, r.Holder, took, timeout)
	}
}

// checkEnd: after all workers stopped (gracefully), a TTL mutex is not
// locked beyond its TTL plus a margin (the orchestrator read it then), and
// a mutex without TTL was unlocked by its last holder.
func checkEnd(v *verdict, m string, end record, ttl time.Duration) {
	if end.Kind == "" {
		v.violate(vEnd, "%s: no final reading", m)
		return
	}
	if end.Phase == "Locked" {
		v.violate(vEnd, "%s: still locked by %s at the end (ttl %s)", m, end.Holder, ttl)
	}
}

func (v *verdict) total() int {
	n := 0
	for _, name := range violationNames {
		n += v.counts[name]
	}
	return n
}

// report prints the counts, grouped by prefix, and the violations.
func (v *verdict) report(w io.Writer) {
	names := make([]string, 0, len(v.counts))
	for n := range v.counts {
		names = append(names, n)
	}
	sort.Strings(names)
	group := ""
	for _, n := range names {
		g, _, _ := strings.Cut(n, ".")
		if g != group {
			fmt.Fprintf(w, "%s:\n", g)
			group = g
		}
		fmt.Fprintf(w, "  %-40s %d\n", n, v.counts[n])
	}
	const maxShown = 50
	for i, s := range v.violations {
		if i == maxShown {
			fmt.Fprintf(w, "... and %d more\n", len(v.violations)-maxShown)
			break
		}
		fmt.Fprintln(w, "VIOLATION", s)
	}
}
