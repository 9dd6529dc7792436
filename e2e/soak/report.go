package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
)

// scrape reads the API server's cumulative lease requests by verb
// (apiserver_request_total, summed over codes and scopes) and its open
// lease watches (apiserver_longrunning_requests).
func scrape(ctx context.Context, admin kubernetes.Interface) (map[string]float64, float64, error) {
	body, err := admin.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("GET /metrics: %w", err)
	}
	byVerb := map[string]float64{}
	var watches float64
	lines := bufio.NewScanner(bytes.NewReader(body))
	lines.Buffer(make([]byte, 1<<16), 1<<20)
	for lines.Scan() {
		line := lines.Text()
		total := strings.HasPrefix(line, "apiserver_request_total{")
		long := strings.HasPrefix(line, "apiserver_longrunning_requests{")
		if (!total && !long) || !strings.Contains(line, `resource="leases"`) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		if long {
			if label(line, "verb") == "WATCH" {
				watches += v
			}
			continue
		}
		byVerb[label(line, "verb")] += v
	}
	return byVerb, watches, nil
}

// label returns the value of label name in a Prometheus text line.
func label(line, name string) string {
	_, rest, ok := strings.Cut(line, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

// procSample is a process's CPU time and resident memory at a moment.
type procSample struct {
	t   time.Time
	cpu time.Duration
	rss uint64 // bytes
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100

func readProc(pid int) (procSample, error) {
	s := procSample{t: time.Now()}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are fields 14 and 15, i.e. [11] and [12] here.
	f := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	if len(f) < 13 {
		return s, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	s.cpu = time.Duration(ut+st) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range strings.Lines(string(status)) {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			s.rss = kb << 10
		}
	}
	return s, nil
}

// report is the outcome of a run.
type report struct {
	o       *orchestrator
	marks   map[string]mark
	lines   []string
	failed  []string
	targets []string
}

func (r *report) failf(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}
func (r *report) linef(format string, args ...any) {
	r.lines = append(r.lines, fmt.Sprintf(format, args...))
}

// target reports a performance target, met or not; it never fails the run.
func (r *report) target(met bool, format string, args ...any) {
	verdict := "met"
	if !met {
		verdict = "MISSED"
	}
	r.targets = append(r.targets, fmt.Sprintf("%-6s %s", verdict, fmt.Sprintf(format, args...)))
}

func (r *report) failures() int { return len(r.failed) }

func (r *report) print(w io.Writer) {
	for _, l := range r.lines {
		fmt.Fprintln(w, l)
	}
	fmt.Fprintln(w, "targets (reported, not enforced):")
	for _, l := range r.targets {
		fmt.Fprintln(w, "  "+l)
	}
	for _, l := range r.failed {
		fmt.Fprintln(w, "FAILURE: "+l)
	}
}

func (o *orchestrator) report() *report {
	r := &report{o: o, marks: map[string]mark{}}
	for _, m := range o.marks {
		r.marks[m.name] = m
	}
	evs := o.col.all()
	r.linef("soak: %d workers, %d held mutexes (TTL %s), %d waiters parked on %d, %d handoff mutexes x %d contenders, ran %s",
		o.workers, o.held, o.ttl, o.waiters, o.parkedOn, o.handoff, o.contenders,
		r.marks["end"].t.Sub(r.marks["start"].t).Round(time.Second))
	r.requests(evs)
	r.apiserver()
	r.handoffs(evs)
	r.workers(evs)
	r.safety(evs)
	return r
}

// window is the change of the counters between two marks.
func (r *report) window(from, to string) (map[string]float64, time.Duration) {
	a, b := r.marks[from], r.marks[to]
	d := map[string]float64{}
	for verb, v := range b.requests {
		if dv := v - a.requests[verb]; dv != 0 {
			d[verb] = dv
		}
	}
	return d, b.t.Sub(a.t)
}

func perSecond(d map[string]float64, over time.Duration) string {
	verbs := make([]string, 0, len(d))
	for v := range d {
		verbs = append(verbs, v)
	}
	sort.Strings(verbs)
	var parts []string
	var total float64
	for _, v := range verbs {
		parts = append(parts, fmt.Sprintf("%s %.1f", v, d[v]/over.Seconds()))
		total += d[v]
	}
	return fmt.Sprintf("total %.1f/s: %s", total/over.Seconds(), strings.Join(parts, ", "))
}

func (r *report) requests(evs []event) {
	o := r.o
	// The idle figures hold only if the load was all there in the quiet
	// window: count the held mutexes lost before it ended.
	lostHeld := 0
	for _, ev := range evs {
		if ev.Type == "lost" && strings.HasPrefix(ev.Mutex, "held-") && ev.T < r.marks["quiet-end"].t.UnixNano() {
			lostHeld++
		}
	}
	for _, w := range []struct{ name, from, to string }{
		{"baseline (handoff only)", "start", "baseline-end"},
		{"ramp (locking, parking)", "baseline-end", "loaded"},
		{"quiet (held + parked only)", "quiet-start", "quiet-end"},
		{"loaded (all)", "loaded-start", "end"},
	} {
		d, over := r.window(w.from, w.to)
		r.linef("lease requests/s, %s over %s: %s", w.name, over.Round(time.Second), perSecond(d, over))
	}
	r.linef("open lease watches when loaded: %.0f (held %d + waiters %d + handoff contenders %d)",
		r.marks["quiet-start"].watches, o.held, o.waiters, o.handoff*o.contenders)
	d, over := r.window("quiet-start", "quiet-end")
	ttls := over.Seconds() / o.ttl.Seconds()
	// The API server's verbs are HTTP's: a renewal is a PUT.
	writes := d["PUT"] + d["POST"] + d["PATCH"] + d["DELETE"]
	perTTL := writes / float64(o.held) / ttls
	if lostHeld > 0 {
		r.target(false, "idle cost and parked waiters: not measured, %d held mutexes were lost before the quiet window ended", lostHeld)
		return
	}
	r.target(perTTL <= 3, "idle cost: %.2f writes per TTL per held mutex (target <= 3)", perTTL)
	other := 0.0
	for verb, v := range d {
		if verb != "PUT" {
			other += v
		}
	}
	perWaiter := other / float64(o.waiters)
	r.target(other == 0, "parked waiters: %.0f requests other than renewals in %s, %.4f per waiter (target 0)",
		other, over.Round(time.Second), perWaiter)
}

func (r *report) apiserver() {
	for _, w := range []struct{ name, from, to string }{
		{"baseline", "start", "baseline-end"},
		{"quiet", "quiet-start", "quiet-end"},
		{"loaded", "loaded-start", "end"},
	} {
		a, b := r.marks[w.from].proc, r.marks[w.to].proc
		cores := (b.cpu - a.cpu).Seconds() / b.t.Sub(a.t).Seconds()
		r.linef("kube-apiserver CPU, %s: %.2f cores; RSS at its end %d MiB", w.name, cores, b.rss>>20)
	}
	r.o.apiSamplesMu.Lock()
	var peak uint64
	for _, s := range r.o.apiSamples {
		peak = max(peak, s.rss)
	}
	r.o.apiSamplesMu.Unlock()
	r.linef("kube-apiserver RSS: %d MiB at start, %d MiB when loaded, %d MiB at end, %d MiB peak",
		r.marks["start"].proc.rss>>20, r.marks["loaded"].proc.rss>>20, r.marks["end"].proc.rss>>20, peak>>20)
	r.o.apiSamplesMu.Lock()
	loads := slices.Clone(r.o.loads)
	r.o.apiSamplesMu.Unlock()
	if len(loads) > 0 {
		var sum float64
		for _, l := range loads {
			sum += l
		}
		// The host is shared: its load says how much CPU the run had.
		r.linef("host load average (1 min) during the run: mean %.1f, max %.1f, on %d CPUs",
			sum/float64(len(loads)), slices.Max(loads), runtime.NumCPU())
	}
}

// handoffs reports the handoff latency (from the release of one holder to
// the acquisition of another that was already waiting) in the baseline and
// under load, and checks the handoff mutexes' sections for overlaps.
func (r *report) handoffs(evs []event) {
	byMutex := map[string][]event{}
	for _, ev := range evs {
		if ev.Type == "hold" {
			byMutex[ev.Mutex] = append(byMutex[ev.Mutex], ev)
		}
	}
	in := func(t int64, from, to string) bool {
		return t >= r.marks[from].t.UnixNano() && t < r.marks[to].t.UnixNano()
	}
	var base, loaded []time.Duration
	for name, hs := range byMutex {
		slices.SortFunc(hs, func(a, b event) int { return int(a.Token - b.Token) })
		for i := 1; i < len(hs); i++ {
			prev, cur := hs[i-1], hs[i]
			if cur.Token == prev.Token {
				r.failf("%s: token %d granted twice (%s and %s)", name, cur.Token, prev.Holder, cur.Holder)
				continue
			}
			if cur.Acquired < prev.Released {
				r.failf("%s: the section of token %d (%s) began %s before that of token %d (%s) ended",
					name, cur.Token, cur.Holder, time.Duration(prev.Released-cur.Acquired), prev.Token, prev.Holder)
			}
			if cur.Holder == prev.Holder || cur.LockStart > prev.Released {
				continue // not a handoff to a waiter
			}
			lat := time.Duration(cur.Acquired - prev.Released)
			switch {
			case in(cur.Acquired, "start", "baseline-end"):
				base = append(base, lat)
			case in(cur.Acquired, "loaded-start", "end"):
				loaded = append(loaded, lat)
			}
		}
	}
	bp50, bp99 := quantile(base, 0.5), quantile(base, 0.99)
	lp50, lp99 := quantile(loaded, 0.5), quantile(loaded, 0.99)
	r.linef("handoff latency unloaded: p50 %s, p99 %s (%d handoffs)", ms(bp50), ms(bp99), len(base))
	r.linef("handoff latency loaded:   p50 %s, p99 %s (%d handoffs)", ms(lp50), ms(lp99), len(loaded))
	if len(base) == 0 || len(loaded) == 0 {
		r.failf("no handoffs measured (baseline %d, loaded %d)", len(base), len(loaded))
		return
	}
	ratio50, ratio99 := float64(lp50)/float64(bp50), float64(lp99)/float64(bp99)
	r.target(ratio99 <= 3, "handoff p99 loaded/unloaded %.2fx (p50 %.2fx; target <= 3x)", ratio99, ratio50)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(int(q*float64(len(s))), len(s)-1)]
}

// workers summarises each worker's heap and goroutines: the first third of
// the loaded phase (warm) against its last third. Goroutines must not
// grow; the heap is reported.
func (r *report) workers(evs []event) {
	from, to := r.marks["loaded-start"].t.UnixNano(), r.marks["end"].t.UnixNano()
	third := (to - from) / 3
	type series struct {
		warmHeap, endHeap, warmG, endG []float64
		all                            []event // in the loaded phase
	}
	byWorker := map[string]*series{}
	final := map[string]int{}
	var names []string
	for _, ev := range evs {
		if ev.Type == "stopped" {
			final[ev.Worker] = ev.Goroutines
		}
		if ev.Type != "sample" {
			continue
		}
		s := byWorker[ev.Worker]
		if s == nil {
			s = &series{}
			byWorker[ev.Worker] = s
			names = append(names, ev.Worker)
		}
		if ev.T >= from && ev.T <= to {
			s.all = append(s.all, ev)
		}
		switch {
		case ev.T >= from && ev.T < from+third:
			s.warmHeap, s.warmG = append(s.warmHeap, float64(ev.Heap)), append(s.warmG, float64(ev.Goroutines))
		case ev.T >= to-third && ev.T <= to:
			s.endHeap, s.endG = append(s.endHeap, float64(ev.Heap)), append(s.endG, float64(ev.Goroutines))
		}
	}
	sort.Strings(names)
	worst := 0.0
	for _, name := range names {
		s := byWorker[name]
		if len(s.warmG) == 0 || len(s.endG) == 0 {
			r.failf("%s: too few samples (warm %d, end %d)", name, len(s.warmG), len(s.endG))
			continue
		}
		wh, eh, wg, eg := median(s.warmHeap), median(s.endHeap), median(s.warmG), median(s.endG)
		r.linef("worker %s: heap %.1f MiB warm -> %.1f MiB end (%.2fx); goroutines %.0f warm -> %.0f end; %d after stop",
			name, wh/(1<<20), eh/(1<<20), eh/wh, wg, eg, final[name])
		r.linef("  %s series (minute: MiB heap / goroutines): %s", name, seriesLine(s.all, from))
		worst = max(worst, eh/wh)
		// In-flight handoff rounds make the count move a little; a leak
		// grows with time, beyond that.
		if eg > wg+max(10, wg*0.02) {
			r.failf("%s: goroutines grew from %.0f to %.0f", name, wg, eg)
		}
	}
	r.target(worst <= 1.2, "heap end/warm at most %.2fx over the workers (target: within noise, <= 1.2x)", worst)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// safety fails the run on any hold lost or duplicated and any error.
func (r *report) safety(evs []event) {
	counts := map[string]int{}
	// A waiter may take a held mutex over once its holder has lost it (and
	// been told, which is a failure of its own); before that, two held it.
	lostAt := map[string]int64{}
	for _, ev := range evs {
		if ev.Type == "lost" {
			if t, ok := lostAt[ev.Mutex]; !ok || ev.T < t {
				lostAt[ev.Mutex] = ev.T
			}
		}
	}
	for _, ev := range evs {
		switch ev.Type {
		case "lost":
			r.failf("%s lost %s at %s: %s", ev.Worker, ev.Mutex,
				time.Duration(ev.T-r.marks["start"].t.UnixNano()).Round(time.Second), ev.Err)
		case "acquired-while-held":
			if t, ok := lostAt[ev.Mutex]; ok && t <= ev.T {
				r.failf("%s: waiter %s took %s over (token %d) after its holder lost it", ev.Worker, ev.Holder, ev.Mutex, ev.Token)
			} else {
				r.failf("%s: waiter %s acquired %s (token %d) while its holder still held it: held twice", ev.Worker, ev.Holder, ev.Mutex, ev.Token)
			}
		case "error":
			r.failf("%s: %s %s", ev.Worker, ev.Mutex, ev.Err)
		case "ready":
			counts["held"] += ev.Held
			counts["parked"] += ev.Parked
		}
	}
	if counts["held"] != r.o.held || counts["parked"] != r.o.waiters {
		r.failf("held %d of %d, parked %d of %d", counts["held"], r.o.held, counts["parked"], r.o.waiters)
	}
}

// seriesLine shows about eight samples spread over the loaded phase.
func seriesLine(samples []event, from int64) string {
	if len(samples) == 0 {
		return "none"
	}
	step := max(len(samples)/8, 1)
	var parts []string
	for i := 0; i < len(samples); i += step {
		ev := samples[i]
		parts = append(parts, fmt.Sprintf("%.1f: %.1f/%d", time.Duration(ev.T-from).Minutes(), float64(ev.Heap)/(1<<20), ev.Goroutines))
	}
	return strings.Join(parts, ", ")
}

// loadAverage reads the host's 1-minute load average.
func loadAverage() (float64, error) {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(raw))
	if len(f) == 0 {
		return 0, fmt.Errorf("malformed /proc/loadavg")
	}
	return strconv.ParseFloat(f[0], 64)
}
