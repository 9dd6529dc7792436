package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/konlease/konlease/lock"
)

// workerConfig is one worker process's share of the load: index ranges
// [lo, hi) of the held mutexes, of the parked waiters and of the handoff
// contenders. Waiter j waits on held mutex j % parkedOn; contender j takes
// turns on handoff mutex j % handoffMutexes.
type workerConfig struct {
	Name           string
	Kubeconfig     string
	Namespace      string
	TTL            time.Duration
	HoldFor        time.Duration
	Sample         time.Duration
	Held           span
	Waiters        span
	ParkedOn       int
	Contenders     span
	HandoffMutexes int
}

// span is a range [Lo, Hi) of indices.
type span struct{ Lo, Hi int }

func (s span) String() string { return fmt.Sprintf("%d:%d", s.Lo, s.Hi) }

func (s *span) Set(v string) error {
	_, err := fmt.Sscanf(v, "%d:%d", &s.Lo, &s.Hi)
	return err
}

func heldName(i int) string    { return fmt.Sprintf("held-%03d", i) }
func handoffName(i int) string { return fmt.Sprintf("hand-%02d", i) }

// event is one line a worker writes on its stdout for the orchestrator.
type event struct {
	Type   string `json:"type"`
	Worker string `json:"worker"`
	// T is the host's wall clock in Unix nanoseconds: all processes share
	// it, so it orders events across them.
	T int64 `json:"t"`
	// sample
	Heap       uint64 `json:"heap,omitempty"`
	Goroutines int    `json:"goroutines,omitempty"`
	// ready, paused
	Held   int `json:"held,omitempty"`
	Parked int `json:"parked,omitempty"`
	// hold: one critical section of a handoff contender
	Mutex     string `json:"mutex,omitempty"`
	Holder    string `json:"holder,omitempty"`
	Token     int64  `json:"token,omitempty"`
	LockStart int64  `json:"lockStart,omitempty"`
	Acquired  int64  `json:"acquired,omitempty"`
	Released  int64  `json:"released,omitempty"`
	// lost, acquired-while-held, error
	Err string `json:"err,omitempty"`
}

// emitter writes events as JSON lines; safe for concurrent use.
type emitter struct {
	mu   sync.Mutex
	enc  *json.Encoder
	name string
}

func (e *emitter) emit(ev event) {
	ev.Worker = e.name
	if ev.T == 0 {
		ev.T = time.Now().UnixNano()
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	_ = e.enc.Encode(ev) // stdout is the orchestrator's pipe: nothing to do if it is gone
}

// gate lets the handoff contenders run, or holds them between rounds.
type gate struct {
	mu     sync.Mutex
	cond   *sync.Cond
	open   bool
	active int // contenders inside a round
}

func newGate() *gate {
	g := &gate{}
	g.cond = sync.NewCond(&g.mu)
	return g
}

// enter waits until the gate is open or ctx ends; leave must follow a true.
func (g *gate) enter(ctx context.Context) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for !g.open && ctx.Err() == nil {
		g.cond.Wait()
	}
	if ctx.Err() != nil {
		return false
	}
	g.active++
	return true
}

func (g *gate) leave() {
	g.mu.Lock()
	g.active--
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gate) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
	g.cond.Broadcast()
}

// drained waits until no contender is inside a round.
func (g *gate) drained() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.active > 0 {
		g.cond.Wait()
	}
}

// runWorker runs w's share, driven by commands on stdin: handoff, load,
// pause, resume, stop.
func runWorker(w workerConfig) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", w.Kubeconfig)
	if err != nil {
		return err
	}
	// The library's decisions (renewal failures included) go to the
	// worker's log, which the orchestrator keeps when the run fails.
	logger := funcr.New(func(prefix, args string) {
		fmt.Fprintf(os.Stderr, "%s %s %s\n", time.Now().UTC().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: 1})
	c, err := lock.NewForConfig(cfg, lock.WithLogger(logger))
	if err != nil {
		return err
	}
	out := &emitter{enc: json.NewEncoder(os.Stdout), name: w.Name}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var wg sync.WaitGroup
	sampler := make(chan struct{})
	wg.Go(func() { sample(out, w.Sample, sampler) })

	g := newGate()
	contend, stopContend := context.WithCancel(ctx)
	defer stopContend()
	var cwg sync.WaitGroup
	for j := w.Contenders.Lo; j < w.Contenders.Hi; j++ {
		cwg.Go(func() { contender(contend, c, w, out, g, j) })
	}

	var holds []*lock.Mutex
	var releasing atomic.Bool
	var park sync.WaitGroup
	parkCtx, unpark := context.WithCancel(ctx)
	defer unpark()
	lines := bufio.NewScanner(os.Stdin)
	for lines.Scan() {
		switch cmd := lines.Text(); cmd {
		case "handoff", "resume":
			g.set(true)
		case "pause":
			g.set(false)
			g.drained()
			out.emit(event{Type: "paused"})
		case "load":
			var err error
			if holds, err = hold(ctx, c, w, out, &releasing); err != nil {
				return err
			}
			parked := parkWaiters(parkCtx, c, w, out, holds, &park)
			out.emit(event{Type: "ready", Held: len(holds), Parked: parked})
		case "stop":
			// Waiters go first: once the holders release, they would
			// (rightly) acquire.
			unpark()
			park.Wait()
			stopContend()
			g.set(false) // wakes contenders held at the gate, to see ctx end
			cwg.Wait()
			releasing.Store(true)
			release(holds, out)
			closeCtx, cancelClose := context.WithTimeout(context.Background(), 30*time.Second)
			err := c.Close(closeCtx)
			cancelClose()
			close(sampler)
			wg.Wait()
			// The last sample, with everything released: what is left
			// running belongs to idle connections and the runtime.
			runtime.GC()
			out.emit(event{Type: "stopped", Goroutines: runtime.NumGoroutine()})
			return err
		default:
			return fmt.Errorf("unknown command %q", cmd)
		}
	}
	return errors.New("stdin closed before stop")
}

// sample reports the live heap and the goroutine count every d until stop
// closes.
func sample(out *emitter, d time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		// A GC first, so that HeapAlloc is the live heap, not garbage
		// awaiting collection.
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		out.emit(event{Type: "sample", Heap: ms.HeapAlloc, Goroutines: runtime.NumGoroutine()})
		select {
		case <-t.C:
		case <-stop:
			return
		}
	}
}

// hold locks this worker's held mutexes, a few at a time, and watches each
// for loss, which the orchestrator counts as a failure.
func hold(ctx context.Context, c *lock.Client, w workerConfig, out *emitter, releasing *atomic.Bool) ([]*lock.Mutex, error) {
	holds := make([]*lock.Mutex, w.Held.Hi-w.Held.Lo)
	errs := make([]error, len(holds))
	var wg sync.WaitGroup
	slots := make(chan struct{}, 8)
	for k := range holds {
		name := heldName(w.Held.Lo + k)
		m, err := c.NewMutex(w.Namespace, name, lock.WithTTL(w.TTL), lock.WithHolder("holder-"+name))
		if err != nil {
			return nil, err
		}
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			lctx, cancel := context.WithTimeout(ctx, time.Minute)
			defer cancel()
			if err := m.Lock(lctx); err != nil {
				errs[k] = fmt.Errorf("lock %s: %w", name, err)
				return
			}
			holds[k] = m
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, m := range holds {
		go func() {
			<-m.Done()
			// Done also closes on our own Unlock at stop, which is no loss.
			if releasing.Load() {
				return
			}
			out.emit(event{Type: "lost", Mutex: m.Name(), Err: fmt.Sprint(m.Err())})
		}()
	}
	return holds, nil
}

// parkWaiters starts this worker's waiters on held mutexes and returns once
// each is parked (its Lock waits for the holder). A waiter that acquires
// while the holder still holds would be a duplicated hold.
func parkWaiters(ctx context.Context, c *lock.Client, w workerConfig, out *emitter, holds []*lock.Mutex, wg *sync.WaitGroup) int {
	var parked atomic.Int64
	all := make(chan struct{})
	n := int64(w.Waiters.Hi - w.Waiters.Lo)
	if n == 0 {
		close(all)
	}
	for j := w.Waiters.Lo; j < w.Waiters.Hi; j++ {
		name := heldName(j % w.ParkedOn)
		var once sync.Once
		m, err := c.NewMutex(w.Namespace, name, lock.WithTTL(w.TTL), lock.WithHolder(fmt.Sprintf("waiter-%04d", j)),
			lock.WithWaitNotify(func(lock.Status) {
				once.Do(func() {
					if parked.Add(1) == n {
						close(all)
					}
				})
			}))
		if err != nil {
			out.emit(event{Type: "error", Err: err.Error()})
			continue
		}
		wg.Go(func() {
			err := m.Lock(ctx)
			if err == nil {
				out.emit(event{Type: "acquired-while-held", Mutex: name, Holder: m.Holder(), Token: m.Token()})
				uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_ = m.Unlock(uctx)
				cancel()
			} else if ctx.Err() == nil {
				out.emit(event{Type: "error", Mutex: name, Err: "waiter: " + err.Error()})
			}
		})
	}
	select {
	case <-all:
	case <-time.After(2 * time.Minute):
		out.emit(event{Type: "error", Err: fmt.Sprintf("only %d of %d waiters parked within 2m", parked.Load(), n)})
	}
	return int(parked.Load())
}

// contender takes turns on its handoff mutex: lock, a short critical
// section, unlock, and again, reporting each section.
func contender(ctx context.Context, c *lock.Client, w workerConfig, out *emitter, g *gate, j int) {
	name := handoffName(j % w.HandoffMutexes)
	m, err := c.NewMutex(w.Namespace, name, lock.WithTTL(w.TTL), lock.WithHolder(fmt.Sprintf("contender-%03d", j)))
	if err != nil {
		out.emit(event{Type: "error", Err: err.Error()})
		return
	}
	for g.enter(ctx) {
		round(ctx, m, w, out)
		g.leave()
	}
}

func round(ctx context.Context, m *lock.Mutex, w workerConfig, out *emitter) {
	start := time.Now().UnixNano()
	lctx, cancel := context.WithTimeout(ctx, time.Minute)
	err := m.Lock(lctx)
	cancel()
	if err != nil {
		if ctx.Err() == nil {
			out.emit(event{Type: "error", Mutex: m.Name(), Err: "handoff lock: " + err.Error()})
		}
		return
	}
	acquired := time.Now().UnixNano()
	token := m.Token()
	// The critical section's work: a load generator's think time, not a
	// synchronisation.
	select {
	case <-time.After(w.HoldFor):
	case <-m.Done():
	}
	released := time.Now().UnixNano()
	lost := m.Err()
	uctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	uerr := m.Unlock(uctx)
	cancel()
	out.emit(event{Type: "hold", Mutex: m.Name(), Holder: m.Holder(), Token: token, LockStart: start, Acquired: acquired, Released: released})
	if lost != nil {
		out.emit(event{Type: "lost", Mutex: m.Name(), Err: lost.Error()})
	} else if uerr != nil {
		out.emit(event{Type: "error", Mutex: m.Name(), Err: "handoff unlock: " + uerr.Error()})
	}
}

// release unlocks the held mutexes at the end.
func release(holds []*lock.Mutex, out *emitter) {
	for _, m := range holds {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if err := m.Unlock(ctx); err != nil {
			out.emit(event{Type: "error", Mutex: m.Name(), Err: "release: " + err.Error()})
		}
		cancel()
	}
}
