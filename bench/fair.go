package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// The fair rows: the same measurements as for racing mode, on fair
// mutexes, plus what a queue is for (order) and costs (sessions).

// fairProcesses is how many clients the waiters of a fair row are spread
// over. Each client has its own session, as a process would; they share
// this process's CPU, which the API server does not see.
const fairProcesses = 4

// createFairMutex creates ns/name fair.
func createFairMutex(ctx context.Context, cfg *rest.Config, ns, name string) error {
	c, _, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	_, _, err = c.Create(ctx, ns, name, lock.CreateOptions{Fair: true})
	return err
}

// fairCycle measures uncontended Lock+Unlock on a fair mutex: requests and
// latency, against the racing mode's in the same run.
func fairCycle(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	if err := createFairMutex(ctx, cfg, ns, "fair-cycle"); err != nil {
		return err
	}
	c, cnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	m := mustMutex(c, ns, "fair-cycle", "bench")
	var lat []time.Duration
	var lockReq, unlockReq, watches int
	for i := range n + warmup {
		if i == warmup {
			cnt.take()
		}
		t0 := time.Now()
		if err := m.Lock(ctx); err != nil {
			return err
		}
		if i >= warmup {
			v, _ := cnt.take()
			lockReq += syncRequests(v)
			watches += v["WATCH"]
		}
		if err := m.Unlock(ctx); err != nil {
			return err
		}
		if i >= warmup {
			lat = append(lat, time.Since(t0))
			v, _ := cnt.take()
			unlockReq += syncRequests(v)
			watches += v["WATCH"]
		}
	}
	r.latency("fair.cycle", "fair: uncontended Lock+Unlock", lat, "")
	r.value("fair.req.lock", "fair: API requests per Lock", "req", float64(lockReq)/float64(n), "the queue's LIST, then the take")
	r.value("fair.req.unlock", "fair: API requests per Unlock", "req", float64(unlockReq)/float64(n), "")
	r.value("fair.req.watches", "fair: watches per hold", "req", float64(watches)/float64(n),
		"the keeper's loss watch and the queue view's two, in the background")
	return nil
}

// fairHandoff measures Unlock → Lock returning in a queued waiter, and the
// requests on that path.
func fairHandoff(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	if err := createFairMutex(ctx, cfg, ns, "fair-handoff"); err != nil {
		return err
	}
	hc, hcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	wc, wcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	holder := mustMutex(hc, ns, "fair-handoff", "holder")
	var lat []time.Duration
	var critical, writes int
	for i := range n + warmup {
		if err := holder.Lock(ctx); err != nil {
			return err
		}
		queued := make(chan struct{})
		var once sync.Once
		waiter := mustMutex(wc, ns, "fair-handoff", "waiter", lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
		got := make(chan error, 1)
		var t1 time.Time
		go func() {
			err := waiter.Lock(ctx)
			t1 = time.Now()
			got <- err
		}()
		<-queued
		// Settle: the waiter, at the head, opens its watches of the
		// mutex and the queue; measure the handoff, not their setup.
		<-time.After(200 * time.Millisecond)
		hcnt.take()
		wcnt.take()
		t0 := time.Now()
		if err := holder.Unlock(ctx); err != nil {
			return err
		}
		if err := <-got; err != nil {
			return err
		}
		if i >= warmup {
			lat = append(lat, t1.Sub(t0))
			hv, _ := hcnt.take()
			wv, _ := wcnt.take()
			critical += syncRequests(hv) + syncRequests(wv)
		}
		if err := waiter.Unlock(ctx); err != nil {
			return err
		}
		if i >= warmup {
			wv, _ := wcnt.take()
			writes += wv["PUT"] + wv["POST"] + wv["DELETE"]
		}
	}
	r.latency("fair.handoff", "fair: handoff (Unlock → queued waiter's Lock returns)", lat, "")
	r.value("fair.req.handoff", "fair: API requests on the handoff's path", "req", float64(critical)/float64(n),
		"from the holder's Unlock to the waiter's Lock returning: the handoff write alone")
	r.value("fair.req.claim", "fair: writes of the new holder after it returned", "req", float64(writes)/float64(n),
		"its confirmation, the deletion of its entry, and its own Unlock")
	return nil
}

// fairContention runs workers spread over fairProcesses clients that lock
// a fair mutex, hold it for hold, and unlock, for d.
func fairContention(ctx context.Context, r *Results, cfg *rest.Config, ns string, workers int, hold, d time.Duration) error {
	name := fmt.Sprintf("fair-%d-%dms", workers, hold.Milliseconds())
	if err := createFairMutex(ctx, cfg, ns, name); err != nil {
		return err
	}
	// Each client logs where its waiters queued; acquisitions are then
	// checked against that order.
	type place struct {
		holder string
		pos    int64
	}
	var mu sync.Mutex
	positions := map[string][]int64{} // holder → positions, in queuing order
	clients := make([]*lock.Client, fairProcesses)
	counters := make([]*counter, fairProcesses)
	for i := range clients {
		ccfg, cnt := counted(cfg)
		log := funcr.New(func(_, args string) {
			if !strings.Contains(args, `"msg"="queued"`) {
				return
			}
			h, p := kv(args, "holder"), kv(args, "position")
			pos, err := strconv.ParseInt(p, 10, 64)
			if err != nil {
				return
			}
			mu.Lock()
			positions[h] = append(positions[h], pos)
			mu.Unlock()
		}, funcr.Options{Verbosity: 1})
		c, err := lock.NewForConfig(ccfg, lock.WithLogger(logr.Logger(log)))
		if err != nil {
			return err
		}
		clients[i], counters[i] = c, cnt
	}
	type acq struct {
		token  int64
		holder string
		queued bool // Lock waited (it logged a place)
		at     time.Time
		wait   time.Duration
		pos    int64 // its place in the queue; 0 if it did not queue
	}
	var acqs []acq
	var waits []time.Duration
	start := make(chan struct{})
	deadline := time.Now().Add(d + 2*time.Second) // a second to build handles, a second of warm-up
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			holder := fmt.Sprint("w", w)
			m := mustMutex(clients[w%fairProcesses], ns, name, holder)
			<-start
			for time.Now().Before(deadline) {
				mu.Lock()
				before := len(positions[holder])
				mu.Unlock()
				t0 := time.Now()
				if err := m.Lock(ctx); err != nil {
					errs <- err
					return
				}
				at := time.Now()
				mu.Lock()
				acqs = append(acqs, acq{token: m.Token(), holder: holder, queued: len(positions[holder]) > before, at: at})
				waits = append(waits, at.Sub(t0))
				mu.Unlock()
				if hold > 0 {
					<-time.After(hold)
				}
				if err := m.Unlock(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	<-time.After(time.Second) // let every worker build its handle first
	close(start)
	// Measure the steady state: the first second is a stampede of N
	// workers on a free mutex with an empty queue, which race as in
	// racing mode, once.
	<-time.After(time.Second)
	warm := time.Now()
	for _, c := range counters {
		c.take()
		c.takeEvents()
	}
	wg.Wait()
	mu.Lock()
	// Each queued acquisition takes its holder's next place: match them
	// over the whole run, then keep the steady state.
	for i := range acqs {
		acqs[i].wait = waits[i]
	}
	slices.SortFunc(acqs, func(a, b acq) int { return int(a.token - b.token) })
	next := map[string]int{}
	for i, a := range acqs {
		if !a.queued {
			continue
		}
		ps := positions[a.holder]
		if k := next[a.holder]; k < len(ps) {
			acqs[i].pos = ps[k]
		}
		next[a.holder]++
	}
	var steady []acq
	waits = nil
	for _, a := range acqs {
		if a.at.After(warm) {
			steady = append(steady, a)
			waits = append(waits, a.wait)
		}
	}
	acqs = steady
	mu.Unlock()
	close(errs)
	for err := range errs {
		return err
	}
	verbs, events := map[string]int{}, map[string]int{}
	conflicts := 0
	for _, c := range counters {
		v, k := c.take()
		conflicts += k
		for key, n := range v {
			verbs[key] += n
		}
		for key, n := range c.takeEvents() {
			events[key] += n
		}
	}
	for _, c := range clients {
		_ = c.Close(context.WithoutCancel(ctx))
	}
	// Order inversions: an acquisition ahead of a waiter that queued
	// earlier.
	var placed []place
	for _, a := range acqs {
		if a.pos > 0 {
			placed = append(placed, place{holder: a.holder, pos: a.pos})
		}
	}
	inversions := 0
	for i := 1; i < len(placed); i++ {
		if placed[i].pos < placed[i-1].pos {
			inversions++
		}
	}
	var cycles []time.Duration
	for i := 1; i < len(acqs); i++ {
		cycles = append(cycles, acqs[i].at.Sub(acqs[i-1].at))
	}
	key := fmt.Sprintf("fair.contention.%d.%dms", workers, hold.Milliseconds())
	title := fmt.Sprintf("fair: %d waiters over %d clients, hold %s", workers, fairProcesses, hold)
	n := float64(len(acqs))
	r.value(key+".rate", title+", acquisitions/s", "acq/s", n/time.Since(warm).Seconds(), "after a second of warm-up")
	r.value(key+".conflicts", title+", 409 conflicts per acquisition", "409/acq", float64(conflicts)/n, byVerb(verbs, "409 PUT mutex", "409 PUT session", "409 DELETE entry", "409 DELETE session"))
	r.value(key+".inversions", title+", order inversions", "count", float64(inversions),
		fmt.Sprintf("among %d acquisitions that queued", len(placed)))
	cyc := r.latency(key+".cycle", title+", time between acquisitions", cycles, "")
	wf := r.latency(key+".wait", title+", wait per acquisition", waits, "")
	wf.Note = fmt.Sprintf("p99 is %.2f× N × the cycle's p50 (target ≤ 1.5)", wf.P99/(float64(workers)*cyc.P50))
	writes := verbs["PUT"] + verbs["POST"] + verbs["DELETE"]
	r.value(key+".writes", title+", API writes per acquisition", "req/acq", float64(writes)/n, byVerb(verbs, "PUT", "POST", "DELETE"))
	r.value(key+".reads", title+", API reads per acquisition", "req/acq", float64(verbs["GET"]+verbs["LIST"])/n, byVerb(verbs, "GET", "LIST", "WATCH"))
	total := 0
	for _, k := range events {
		total += k
	}
	r.value(key+".events", title+", watch events delivered per release", "ev/acq", float64(total)/n, byVerb(events, slices.Sorted(maps.Keys(events))...))
	return nil
}

// byVerb lists counts per acquisition-independent key, for a note.
func byVerb(counts map[string]int, keys ...string) string {
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return strings.Join(parts, ", ")
}

// kv is the value of key in a funcr line ("key"="value" or "key"=123).
func kv(line, key string) string {
	i := strings.Index(line, `"`+key+`"=`)
	if i < 0 {
		return ""
	}
	v := line[i+len(key)+3:]
	if strings.HasPrefix(v, `"`) {
		v = v[1:]
		if j := strings.IndexByte(v, '"'); j >= 0 {
			return v[:j]
		}
		return v
	}
	if j := strings.IndexAny(v, " }"); j >= 0 {
		return v[:j]
	}
	return v
}

// fairIdle measures the writes per minute of one queued waiter: its
// session's renewals.
func fairIdle(ctx context.Context, r *Results, cfg *rest.Config, ns string, window time.Duration) error {
	if err := createFairMutex(ctx, cfg, ns, "fair-idle"); err != nil {
		return err
	}
	hc, _, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	holder := mustMutex(hc, ns, "fair-idle", "holder")
	if err := holder.Lock(ctx); err != nil {
		return err
	}
	defer holder.Unlock(context.WithoutCancel(ctx))
	wc, wcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	defer wc.Close(context.WithoutCancel(ctx))
	queued := make(chan struct{})
	var once sync.Once
	m := mustMutex(wc, ns, "fair-idle", "waiter", lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = m.Lock(wctx); close(done) }()
	<-queued
	<-time.After(time.Second) // its watches are open
	wcnt.take()
	<-time.After(window)
	v, _ := wcnt.take()
	cancel()
	<-done
	perMin := func(k int) float64 { return float64(k) / window.Minutes() }
	r.value("fair.idle.waiter", "fair: idle queued waiter, writes/min", "req/min", perMin(v["PUT"]+v["POST"]+v["DELETE"]),
		fmt.Sprintf("its process's session renewals (waiter TTL %s); reads/min %.1f", lock.DefaultWaiterTTL, perMin(v["GET"]+v["LIST"])))
	return nil
}

// fairDeadHead measures how long a waiter killed with SIGKILL at the head
// of the queue delays the next one, with the default waiter TTL.
func fairDeadHead(ctx context.Context, r *Results, env *harness.Env, cfg *rest.Config, ns string, n int) error {
	var lat []time.Duration
	for i := range n {
		name := fmt.Sprintf("fair-dead-%d", i)
		if err := createFairMutex(ctx, cfg, ns, name); err != nil {
			return err
		}
		hc, _, err := newLockClient(cfg)
		if err != nil {
			return err
		}
		holder := mustMutex(hc, ns, name, "holder")
		if err := holder.Lock(ctx); err != nil {
			return err
		}
		doomed := exec.CommandContext(ctx, os.Args[0])
		doomed.Env = append(os.Environ(), roleEnv+"=fair-waiter", roleKubecfg+"="+env.AdminKubeconfig(),
			roleNamespace+"="+ns, roleName+"="+name)
		doomed.Stderr = os.Stderr
		doomed.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := doomed.StdoutPipe()
		if err != nil {
			return err
		}
		if err := doomed.Start(); err != nil {
			return err
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "READY\n" {
			_ = doomed.Process.Kill()
			return fmt.Errorf("fair waiter: got %q, %v", line, err)
		}
		wc, _, err := newLockClient(cfg)
		if err != nil {
			return err
		}
		queued := make(chan struct{})
		var once sync.Once
		next := mustMutex(wc, ns, name, "next", lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
		got := make(chan time.Time, 1)
		go func() {
			if next.Lock(ctx) == nil {
				got <- time.Now()
			}
		}()
		<-queued
		t0 := time.Now()
		if err := doomed.Process.Kill(); err != nil {
			return err
		}
		_ = doomed.Wait()
		if err := holder.Unlock(ctx); err != nil {
			return err
		}
		lat = append(lat, (<-got).Sub(t0))
		_ = next.Unlock(context.WithoutCancel(ctx))
		_ = wc.Close(context.WithoutCancel(ctx))
	}
	r.latency("fair.deadhead", "fair: SIGKILLed waiter at the head delays the next", lat,
		fmt.Sprintf("kill → next waiter acquires, waiter TTL %s", lock.DefaultWaiterTTL))
	return nil
}

// fairWaiterRole queues on the fair mutex of a dead-head measurement; main
// then prints READY and the process waits until it is killed.
func fairWaiterRole(ctx context.Context, c *lock.Client, ns, name string) error {
	queued := make(chan struct{})
	var once sync.Once
	m := mustMutex(c, ns, name, "doomed", lock.WithWaitNotify(func(lock.Status) { once.Do(func() { close(queued) }) }))
	failed := make(chan error, 1)
	go func() { failed <- m.Lock(ctx) }()
	select {
	case <-queued:
		return nil
	case err := <-failed:
		return fmt.Errorf("fair waiter: Lock returned %v before it queued", err)
	}
}

// fairTargets checks the fair mutex issue's targets against the figures.
func fairTargets(r *Results) []string {
	get := func(k string) *Figure { return r.byKey[k] }
	var out []string
	verdict := func(ok bool, format string, args ...any) {
		mark := "MISSED"
		if ok {
			mark = "met   "
		}
		out = append(out, fmt.Sprintf("%s  %s", mark, fmt.Sprintf(format, args...)))
	}
	for _, hold := range []int64{0, 10} {
		row := func(n int, what string) *Figure { return get(fmt.Sprintf("fair.contention.%d.%dms.%s", n, hold, what)) }
		var ns []int
		for _, n := range []int{2, 8, 32, 128} {
			if row(n, "rate") != nil {
				ns = append(ns, n)
			}
		}
		if len(ns) == 0 {
			continue
		}
		worst, inv, p99ok := 0.0, 0.0, true
		var p99s []string
		for _, n := range ns {
			worst = max(worst, row(n, "conflicts").Value)
			inv += row(n, "inversions").Value
			ratio := row(n, "wait").P99 / (float64(n) * row(n, "cycle").P50)
			p99ok = p99ok && ratio <= 1.5
			p99s = append(p99s, fmt.Sprintf("%.2f at %d", ratio, n))
		}
		verdict(worst <= 0.1, "fair, hold %dms: 409 conflicts per acquisition at most 0.1 at every N: worst %.3f", hold, worst)
		base := row(ns[0], "rate").Value
		for _, n := range ns[1:] {
			if n >= 32 {
				verdict(row(n, "rate").Value >= 0.8*base, "fair, hold %dms: acquisitions/s at N=%d at least 0.8× N=%d: %.2f×", hold, n, ns[0], row(n, "rate").Value/base)
			}
		}
		verdict(inv == 0, "fair, hold %dms: no order inversions: %.0f", hold, inv)
		verdict(p99ok, "fair, hold %dms: wait p99 at most 1.5 × N × the cycle's p50: %s", hold, strings.Join(p99s, ", "))
		for _, what := range []string{"writes", "events"} {
			var vals []string
			grows := false
			for _, n := range ns {
				v := row(n, what).Value
				grows = grows || v > 1.5*row(ns[0], what).Value
				vals = append(vals, fmt.Sprintf("%.2f at %d", v, n))
			}
			verdict(!grows, "fair, hold %dms: %s per acquisition flat in N (never above 1.5× the value at N=%d): %s", hold, what, ns[0], strings.Join(vals, ", "))
		}
	}
	if h, f := get("fair.handoff"), get("floor.watch"); h != nil && f != nil {
		e := get("etcd.handoff")
		note := ""
		if e != nil {
			note = fmt.Sprintf(" (%.2f× etcd's mutex)", h.P50/e.P50)
		}
		verdict(h.P50 <= 1.2*f.P50, "fair handoff p50 at most 1.2× the floor update sent → watch event: %.2f×%s", h.P50/f.P50, note)
	}
	if fl, fu, fw := get("fair.req.lock"), get("fair.req.unlock"), get("fair.req.watches"); fl != nil {
		rl, ru := get("konlease.req.lock"), get("konlease.req.unlock")
		verdict(fl.Value+fu.Value <= rl.Value+ru.Value+1, "fair uncontended Lock+Unlock at most one request more than racing: %.2f against %.2f (plus %.2f background watches)",
			fl.Value+fu.Value, rl.Value+ru.Value, fw.Value)
	}
	return out
}
