package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/lock"
)

// counter counts one client's API requests by verb and 409 responses, the
// watch events it receives by type, and signals each watch that the server
// accepted.
type counter struct {
	mu        sync.Mutex
	verbs     map[string]int
	conflicts int
	events    map[string]int
	watches   chan struct{}
}

func counted(cfg *rest.Config) (*rest.Config, *counter) {
	c := &counter{verbs: map[string]int{}, events: map[string]int{}, watches: make(chan struct{}, 1024)}
	cfg = rest.CopyConfig(cfg)
	cfg.QPS = -1 // the benchmark measures the server, not a client-side token bucket
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return rtFunc(func(req *http.Request) (*http.Response, error) {
			verb := req.Method
			switch {
			case req.URL.Query().Get("watch") == "true":
				verb = "WATCH"
			case verb == http.MethodGet && strings.HasSuffix(req.URL.Path, "/leases"):
				verb = "LIST"
			}
			resp, err := rt.RoundTrip(req)
			c.mu.Lock()
			c.verbs[verb]++
			if err == nil && resp.StatusCode == http.StatusConflict {
				c.conflicts++
				what := "mutex"
				switch {
				case strings.Contains(req.URL.Path, "konlease-session-"):
					what = "session"
				case strings.Contains(req.URL.Path, ".w-"):
					what = "entry"
				}
				c.verbs["409 "+verb+" "+what]++
			}
			c.mu.Unlock()
			if verb == "WATCH" && err == nil && resp.StatusCode == http.StatusOK {
				resp.Body = &eventCounter{ReadCloser: resp.Body, c: c,
					proto: strings.Contains(resp.Header.Get("Content-Type"), "protobuf")}
				select {
				case c.watches <- struct{}{}:
				default:
				}
			}
			return resp, err
		})
	})
	return cfg, c
}

type rtFunc func(*http.Request) (*http.Response, error)

func (f rtFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// eventCounter counts the events of a watch stream by type. client-go
// negotiates protobuf for built-in types: the stream is then a sequence of
// frames, each a 4-byte big-endian length and a WatchEvent message whose
// field 1 is the type. A JSON stream has one object per event, each
// starting {"type":"...".
type eventCounter struct {
	io.ReadCloser
	c     *counter
	proto bool
	buf   []byte
}

func (e *eventCounter) Read(p []byte) (int, error) {
	n, err := e.ReadCloser.Read(p)
	e.buf = append(e.buf, p[:n]...)
	if e.proto {
		for len(e.buf) >= 4 {
			size := int(binary.BigEndian.Uint32(e.buf))
			if len(e.buf) < 4+size {
				break
			}
			msg := e.buf[4 : 4+size]
			if len(msg) >= 2 && msg[0] == 0x0a && int(msg[1]) < 0x80 && len(msg) >= 2+int(msg[1]) {
				e.count(string(msg[2 : 2+int(msg[1])]))
			}
			e.buf = e.buf[4+size:]
		}
		return n, err
	}
	const marker = `{"type":"`
	for {
		i := bytes.Index(e.buf, []byte(marker))
		if i < 0 {
			break
		}
		rest := e.buf[i+len(marker):]
		j := bytes.IndexByte(rest, '"')
		if j < 0 {
			break // the type is cut off: wait for the next read
		}
		e.count(string(rest[:j]))
		e.buf = rest[j:]
	}
	// Keep enough to see a marker cut in two.
	if k := len(e.buf) - len(marker) - 16; k > 0 {
		e.buf = e.buf[k:]
	}
	return n, err
}

func (e *eventCounter) count(typ string) {
	e.c.mu.Lock()
	e.c.events[typ]++
	e.c.mu.Unlock()
}

// takeEvents returns the watch events by type since the last takeEvents.
func (c *counter) takeEvents() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	ev := c.events
	c.events = map[string]int{}
	return ev
}

// take returns the requests by verb (GET, LIST, PUT, POST, DELETE, WATCH)
// and the conflicts since the last take.
func (c *counter) take() (verbs map[string]int, conflicts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	verbs, conflicts = c.verbs, c.conflicts
	c.verbs, c.conflicts = map[string]int{}, 0
	return verbs, conflicts
}

// sync counts the requests of verbs other than WATCH: the ones an
// operation waits for. Watches are opened asynchronously by a holder's
// keeper and are counted apart. (Keys "409 VERB" count refusals among
// those already counted.)
func syncRequests(verbs map[string]int) int {
	n := 0
	for v, k := range verbs {
		if v != "WATCH" && !strings.HasPrefix(v, "409 ") {
			n += k
		}
	}
	return n
}

// drainWatches forgets watch signals seen so far.
func (c *counter) drainWatches() {
	for {
		select {
		case <-c.watches:
		default:
			return
		}
	}
}

func newLockClient(cfg *rest.Config) (*lock.Client, *counter, error) {
	ccfg, cnt := counted(cfg)
	c, err := lock.NewForConfig(ccfg)
	return c, cnt, err
}

func mustMutex(c *lock.Client, ns, name, holder string, opts ...lock.Option) *lock.Mutex {
	m, err := c.NewMutex(ns, name, append(opts, lock.WithHolder(holder))...)
	if err != nil {
		panic(err) // arguments are constants of this program
	}
	return m
}

// floors measures what no Lease-based lock can beat: one conditional Lease
// update, and the delay from sending an update to its watch event.
func floors(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	ccfg, _ := counted(cfg)
	cs, err := kubernetes.NewForConfig(ccfg)
	if err != nil {
		return err
	}
	leases := cs.CoordinationV1().Leases(ns)
	l, err := leases.Create(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "floor"}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	var rtt []time.Duration
	for i := range n + warmup {
		l.Spec.HolderIdentity = ptr.To(fmt.Sprint("h", i))
		t0 := time.Now()
		if l, err = leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if i >= warmup {
			rtt = append(rtt, time.Since(t0))
		}
	}
	r.latency("floor.update", "floor: Lease update round trip", rtt, "one conditional Update")

	w, err := leases.Watch(ctx, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", "floor").String(), ResourceVersion: l.ResourceVersion})
	if err != nil {
		return err
	}
	defer w.Stop()
	var lat []time.Duration
	for i := range n + warmup {
		l.Spec.HolderIdentity = ptr.To(fmt.Sprint("w", i))
		t0 := time.Now()
		if l, err = leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
			return err
		}
		for ev := range w.ResultChan() {
			if ev.Type == watch.Modified && ev.Object.(*coordinationv1.Lease).ResourceVersion == l.ResourceVersion {
				break
			}
		}
		if i >= warmup {
			lat = append(lat, time.Since(t0))
		}
	}
	r.latency("floor.watch", "floor: update sent → watch event", lat, "")
	return nil
}

const warmup = 5

// cycle measures uncontended Lock+Unlock on one handle, and the requests
// each makes after the first Lock.
func cycle(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	c, cnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	m := mustMutex(c, ns, "cycle", "bench")
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
			// Unlock stops the keeper, so its watch has been counted by now.
			v, _ := cnt.take()
			unlockReq += syncRequests(v)
			watches += v["WATCH"]
		}
	}
	r.latency("konlease.cycle", "konlease: uncontended Lock+Unlock", lat, "")
	r.value("konlease.req.lock", "konlease: API requests per Lock", "req", float64(lockReq)/float64(n),
		"after the first Lock on a handle; synchronous requests only")
	r.value("konlease.req.unlock", "konlease: API requests per Unlock", "req", float64(unlockReq)/float64(n), "")
	r.value("konlease.req.keeperwatch", "konlease: watches per hold (loss detection)", "req", float64(watches)/float64(n),
		"opened in the background by the holder's keeper; Lock does not wait for it")
	return nil
}

// handoff measures Unlock by the holder → Lock returning in a waiter that
// was already blocked (watching), and the requests the handoff costs.
func handoff(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	hc, hcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	wc, wcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	holder := mustMutex(hc, ns, "handoff", "holder")
	waiter := mustMutex(wc, ns, "handoff", "waiter")
	var lat []time.Duration
	var reqs int
	for i := range n + warmup {
		if err := holder.Lock(ctx); err != nil {
			return err
		}
		wcnt.drainWatches()
		got := make(chan error, 1)
		var t1 time.Time
		go func() {
			err := waiter.Lock(ctx)
			t1 = time.Now()
			got <- err
		}()
		// The waiter is blocked once the server accepted its watch.
		select {
		case <-wcnt.watches:
		case <-ctx.Done():
			return ctx.Err()
		}
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
			reqs += syncRequests(hv) + syncRequests(wv)
		}
		if err := waiter.Unlock(ctx); err != nil {
			return err
		}
	}
	r.latency("konlease.handoff", "konlease: handoff (Unlock → waiter's Lock returns)", lat, "")
	r.value("konlease.req.handoff", "konlease: API requests per handoff", "req", float64(reqs)/float64(n),
		"holder's Unlock plus the waiter's take-over, not counting the new holder's keeper watch")
	return nil
}

// tryLockHeld measures TryLock on a mutex someone else holds.
func tryLockHeld(ctx context.Context, r *Results, cfg *rest.Config, ns string, n int) error {
	hc, _, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	holder := mustMutex(hc, ns, "trylock", "holder")
	if err := holder.Lock(ctx); err != nil {
		return err
	}
	defer holder.Unlock(context.WithoutCancel(ctx))
	c, _, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	m := mustMutex(c, ns, "trylock", "other")
	var lat []time.Duration
	for i := range n + warmup {
		t0 := time.Now()
		if err := m.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
			return fmt.Errorf("TryLock on a held mutex: %w", err)
		}
		if i >= warmup {
			lat = append(lat, time.Since(t0))
		}
	}
	r.latency("konlease.trylock", "konlease: TryLock on a held mutex", lat, "")
	return nil
}

// contention runs workers that lock and unlock one mutex as fast as they
// can for d, each with its own client (as separate pods would).
func contention(ctx context.Context, r *Results, cfg *rest.Config, ns string, workers int, d time.Duration) error {
	name := fmt.Sprintf("contended-%d", workers)
	type result struct {
		waits     []time.Duration
		conflicts int
		err       error
	}
	results := make(chan result, workers)
	start := make(chan struct{})
	deadline := time.Now().Add(d + time.Second)
	for w := range workers {
		go func() {
			c, cnt, err := newLockClient(cfg)
			if err != nil {
				results <- result{err: err}
				return
			}
			m := mustMutex(c, ns, name, fmt.Sprint("w", w))
			var res result
			<-start
			for time.Now().Before(deadline) {
				t0 := time.Now()
				if res.err = m.Lock(ctx); res.err != nil {
					break
				}
				res.waits = append(res.waits, time.Since(t0))
				if res.err = m.Unlock(ctx); res.err != nil {
					break
				}
			}
			_, res.conflicts = cnt.take()
			results <- res
		}()
	}
	// Let every worker build its client first.
	<-time.After(time.Second)
	close(start)
	var waits []time.Duration
	conflicts := 0
	for range workers {
		res := <-results
		if res.err != nil {
			return res.err
		}
		waits = append(waits, res.waits...)
		conflicts += res.conflicts
	}
	key := fmt.Sprintf("konlease.contention.%d", workers)
	acq := float64(len(waits))
	r.value(key+".rate", fmt.Sprintf("konlease: %d workers, acquisitions/s", workers), "acq/s", acq/d.Seconds(), "")
	r.value(key+".conflicts", fmt.Sprintf("konlease: %d workers, 409 conflicts per acquisition", workers), "409/acq", float64(conflicts)/acq, "")
	f := r.latency(key+".wait", fmt.Sprintf("konlease: %d workers, wait per acquisition", workers), waits, "")
	// The longest wait is the fairness figure: there is no queue.
	f.Note = fmt.Sprintf("longest wait %s (fairness: waiters race, there is no queue)", fmtMs(f.Max))
	return nil
}

// idle measures requests per minute of a holder that renews a TTL mutex
// and of a waiter blocked on it, over window.
func idle(ctx context.Context, r *Results, cfg *rest.Config, ns string, ttlD, window time.Duration) error {
	hc, hcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	wc, wcnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	holder := mustMutex(hc, ns, "idle", "holder", lock.WithTTL(ttlD))
	if err := holder.Lock(ctx); err != nil {
		return err
	}
	defer holder.Unlock(context.WithoutCancel(ctx))
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waiter := mustMutex(wc, ns, "idle", "waiter")
	go func() { _ = waiter.Lock(wctx) }()
	select {
	case <-wcnt.watches:
	case <-ctx.Done():
		return ctx.Err()
	}
	// The holder's keeper watch is established by now too.
	hcnt.take()
	wcnt.take()
	<-time.After(window)
	hv, _ := hcnt.take()
	wv, _ := wcnt.take()
	hq, wq := hv["PUT"]+hv["GET"]+hv["WATCH"], wv["PUT"]+wv["GET"]+wv["WATCH"]
	perMin := func(q int) float64 { return float64(q) / window.Minutes() }
	r.value("konlease.idle.holder", fmt.Sprintf("konlease: idle holder, TTL %s, requests/min", ttlD), "req/min", perMin(hq),
		fmt.Sprintf("%.2f per TTL", float64(hq)/(float64(window)/float64(ttlD))))
	r.value("konlease.idle.waiter", "konlease: idle waiter, requests/min beyond its watch", "req/min", perMin(wq), "")
	return nil
}

// list measures List over n mutexes in one namespace.
func list(ctx context.Context, r *Results, cfg *rest.Config, ns string, n, samples int) error {
	c, _, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				if _, _, err := c.Create(ctx, ns, fmt.Sprintf("m-%04d", i), lock.CreateOptions{}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	var lat []time.Duration
	for range samples {
		t0 := time.Now()
		l, err := c.List(ctx, ns)
		if err != nil {
			return err
		}
		if len(l) != n {
			return fmt.Errorf("list returned %d mutexes, want %d", len(l), n)
		}
		lat = append(lat, time.Since(t0))
	}
	r.latency("konlease.list", fmt.Sprintf("konlease: List of %d mutexes", n), lat, "")
	return nil
}

// memory measures heap per handle that is blocked in Lock and per handle
// that holds a mutex (both keep one watch open), with k handles each.
func memory(ctx context.Context, r *Results, cfg *rest.Config, ns string, k int) error {
	c, cnt, err := newLockClient(cfg)
	if err != nil {
		return err
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapInuse
	}
	holder := mustMutex(c, ns, "mem-waited", "holder")
	if err := holder.Lock(ctx); err != nil {
		return err
	}
	<-cnt.watches // the holder's keeper watch
	before := heap()
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range k {
		m := mustMutex(c, ns, "mem-waited", fmt.Sprint("waiter-", i))
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Lock(wctx) }()
	}
	for range k {
		<-cnt.watches
	}
	waiting := heap()
	cancel()
	wg.Wait()
	if err := holder.Unlock(ctx); err != nil {
		return err
	}

	cnt.drainWatches()
	before2 := heap()
	var held []*lock.Mutex
	for i := range k {
		m := mustMutex(c, ns, fmt.Sprint("mem-held-", i), "holder")
		if err := m.Lock(ctx); err != nil {
			return err
		}
		held = append(held, m)
	}
	for range k {
		<-cnt.watches
	}
	holding := heap()
	for _, m := range held {
		if err := m.Unlock(ctx); err != nil {
			return err
		}
	}
	per := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return float64(b-a) / float64(k)
	}
	r.value("konlease.mem.waiting", "konlease: heap per waiting handle", "bytes", per(before, waiting), fmt.Sprintf("%d handles, one watch each", k))
	r.value("konlease.mem.holding", "konlease: heap per holding handle", "bytes", per(before2, holding), fmt.Sprintf("%d handles, one keeper watch each", k))
	return nil
}
