package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"

	"github.com/konlease/konlease/lock"
)

// workerConfig is what a worker process is told on its command line.
type workerConfig struct {
	Name       string        // w0, w1, ...
	Kind       string        // with, lock, koncli, nolock (self-test only)
	Mutex      string        // the mutex it contends on
	TTL        time.Duration // 0: none
	Skew       time.Duration // wall-clock offset of the lock client's clock
	Timeout    time.Duration // how long each Lock may wait
	Namespace  string
	Kubeconfig string // through the proxy
	History    string // directory
	Koncli     string // koncli binary (kind koncli)
}

func (w workerConfig) args() []string {
	return []string{"-mode", "worker", "-worker", w.Name, "-kind", w.Kind, "-mutex", w.Mutex,
		"-ttl", w.TTL.String(), "-skew", w.Skew.String(), "-timeout", w.Timeout.String(),
		"-namespace", w.Namespace, "-kubeconfig", w.Kubeconfig, "-history-dir", w.History, "-koncli-bin", w.Koncli}
}

// skewedClock is the real clock with its wall time moved by offset, as on a
// machine whose clock is wrong. Durations (monotonic) are unaffected.
type skewedClock struct {
	clock.RealClock
	offset time.Duration
}

func (s skewedClock) Now() time.Time                  { return time.Now().Add(s.offset) }
func (s skewedClock) Since(t time.Time) time.Duration { return s.Now().Sub(t) }

// workerLogger logs the library's decisions (V(1)) to standard error, which
// the orchestrator sends to the worker's log file, with the same clock as
// the histories.
func workerLogger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		fmt.Fprintf(os.Stderr, "%d %s %s\n", now(), prefix, args)
	}, funcr.Options{Verbosity: 1})
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = -1, 0 // no client-side rate limit
	return cfg, nil
}

// runWorker contends for its mutex until SIGTERM.
func runWorker(w workerConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	h, err := openHistory(w.History, w.Name)
	if err != nil {
		return err
	}
	defer h.Close()
	cfg, err := restConfig(w.Kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	copts := []lock.ClientOption{lock.WithLogger(workerLogger())}
	if w.Skew != 0 {
		copts = append(copts, lock.WithClock(skewedClock{offset: w.Skew}))
	}
	c, err := lock.NewForConfig(cfg, copts...)
	if err != nil {
		return err
	}
	holder := fmt.Sprintf("%s-%d-0", w.Name, os.Getpid())
	// queued is when the current round was queued (fair mutexes).
	var queued atomic.Int64
	var opts []lock.Option
	opts = append(opts, lock.WithHolder(holder), lock.WithWaitNotify(func(lock.Status) { queued.CompareAndSwap(0, now()) }))
	if w.TTL > 0 {
		opts = append(opts, lock.WithTTL(w.TTL))
	}
	if w.Kind == "sem-with" {
		s, err := c.NewSemaphore(w.Namespace, w.Mutex, opts...)
		if err != nil {
			return err
		}
		for ctx.Err() == nil {
			roundSemaphore(ctx, w, h, cs, s)
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(rand.IntN(100)) * time.Millisecond):
			}
		}
		return nil
	}
	m, err := c.NewMutex(w.Namespace, w.Mutex, opts...)
	if err != nil {
		return err
	}
	for seq := 1; ctx.Err() == nil; seq++ {
		switch w.Kind {
		case "with":
			queued.Store(0)
			roundWith(ctx, w, h, cs, m, &queued)
		case "lock":
			queued.Store(0)
			roundLock(ctx, w, h, cs, m, &queued)
		case "koncli":
			roundKoncli(ctx, w, h, fmt.Sprintf("%s-%d-%d", w.Name, os.Getpid(), seq))
		case "nolock":
			// Self-test only: a critical section without the lock. The
			// checker must report the overlaps this causes.
			r := criticalSection(ctx, w, h, cs, holder, 0, ctx.Done())
			h.add(r)
		default:
			return fmt.Errorf("unknown worker kind %q", w.Kind)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(rand.IntN(100)) * time.Millisecond):
		}
	}
	return nil
}

// criticalSection writes the fenced store, holds for a while, and writes
// again unless stop closed meanwhile. It returns the section's record with
// LostAt set to when stop closed, if it closed during the section; the
// caller decides whether that means the lock was lost. A goroutine notes
// the moment stop closes, so that a section blocked in a write (a stalled
// request) still records when its process was told.
func criticalSection(ctx context.Context, w workerConfig, h *history, cs kubernetes.Interface, holder string, token int64, stop <-chan struct{}) record {
	r := record{Kind: "cs", Mutex: w.Mutex, Worker: w.Name, Holder: holder, Token: token, Enter: now()}
	var told atomic.Int64
	ended := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case <-stop:
			told.Store(now())
		case <-ended:
		}
	}()
	// The writes are not cancelled with the section: a holder that has not
	// noticed its loss writes on, and the store must refuse it.
	wctx := context.WithoutCancel(ctx)
	fencedWrite(wctx, cs, h, w.Namespace, w.Mutex, holder, token, fmt.Sprintf("%s/%d/a", holder, token))
	select {
	case <-time.After(time.Duration(50+rand.IntN(250)) * time.Millisecond):
		if told.Load() == 0 {
			fencedWrite(wctx, cs, h, w.Namespace, w.Mutex, holder, token, fmt.Sprintf("%s/%d/b", holder, token))
		}
	case <-stop:
	}
	r.Exit = now()
	close(ended)
	<-watched
	r.LostAt = told.Load()
	return r
}

func waitResult(err error) (string, string) {
	switch {
	case err == nil:
		return "acquired", ""
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout", err.Error()
	case errors.Is(err, context.Canceled):
		return "cancelled", err.Error()
	default:
		return "error", err.Error()
	}
}

func roundWith(ctx context.Context, w workerConfig, h *history, cs kubernetes.Interface, m *lock.Mutex, queued *atomic.Int64) {
	wr := record{Kind: "wait", Mutex: w.Mutex, Worker: w.Name, Holder: m.Holder(), Start: now(), Timeout: int64(w.Timeout)}
	lctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	var r *record
	err := m.With(lctx, func(fctx context.Context) error {
		wr.End = now()
		wr.Queued = queued.Load()
		cr := criticalSection(fctx, w, h, cs, m.Holder(), m.Token(), fctx.Done())
		r = &cr
		return nil
	})
	if r != nil {
		wr.Result = "acquired"
		if errors.Is(err, lock.ErrLost) {
			r.Lost = true
		} else {
			r.LostAt = 0 // cut by the deadline or SIGTERM, not by a loss
		}
		h.add(*r)
	} else {
		wr.End = now()
		wr.Queued = queued.Load()
		wr.Result, wr.Error = waitResult(err)
		releaseStale(ctx, m, err)
	}
	h.add(wr)
}

// roundSemaphore takes a slot of a semaphore with With, and runs a section
// on that slot's fenced store.
func roundSemaphore(ctx context.Context, w workerConfig, h *history, cs kubernetes.Interface, s *lock.Semaphore) {
	wr := record{Kind: "wait", Mutex: w.Mutex, Worker: w.Name, Holder: s.Holder(), Start: now(), Timeout: int64(w.Timeout)}
	lctx, cancel := context.WithTimeout(ctx, w.Timeout)
	defer cancel()
	var r *record
	err := s.With(lctx, func(fctx context.Context) error {
		wr.End = now()
		slot := w
		slot.Mutex = fmt.Sprintf("%s.s-%d", w.Mutex, s.Slot())
		cr := criticalSection(fctx, slot, h, cs, s.Holder(), s.Token(), fctx.Done())
		cr.Semaphore = w.Mutex
		r = &cr
		return nil
	})
	if r != nil {
		wr.Result = "acquired"
		if errors.Is(err, lock.ErrLost) {
			r.Lost = true
		} else {
			r.LostAt = 0
		}
		h.add(*r)
	} else {
		wr.End = now()
		wr.Result, wr.Error = waitResult(err)
		if errors.Is(err, lock.ErrAlreadyHeld) {
			uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			_ = s.Release(uctx)
			ucancel()
		}
	}
	h.add(wr)
}

// releaseStale releases a hold that an earlier round failed to unlock (the
// API server was down for longer than the cleanup timeout): the Lease still
// names this holder, so every Lock fails with ErrAlreadyHeld, and a mutex
// without TTL would stay locked for good.
func releaseStale(ctx context.Context, m *lock.Mutex, err error) {
	if !errors.Is(err, lock.ErrAlreadyHeld) {
		return
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = m.Unlock(uctx)
}

func roundLock(ctx context.Context, w workerConfig, h *history, cs kubernetes.Interface, m *lock.Mutex, queued *atomic.Int64) {
	wr := record{Kind: "wait", Mutex: w.Mutex, Worker: w.Name, Holder: m.Holder(), Start: now(), Timeout: int64(w.Timeout)}
	lctx, cancel := context.WithTimeout(ctx, w.Timeout)
	err := m.Lock(lctx)
	cancel()
	wr.End = now()
	wr.Queued = queued.Load()
	wr.Result, wr.Error = waitResult(err)
	h.add(wr)
	if err != nil {
		releaseStale(ctx, m, err)
		return
	}
	r := criticalSection(ctx, w, h, cs, m.Holder(), m.Token(), m.Done())
	if r.LostAt != 0 && !errors.Is(m.Err(), lock.ErrLost) {
		r.LostAt = 0
	}
	uctx, ucancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	uerr := m.Unlock(uctx)
	ucancel()
	if errors.Is(m.Err(), lock.ErrLost) || errors.Is(uerr, lock.ErrNotHeld) {
		r.Lost = true
	}
	h.add(r)
}

// roundKoncli runs one `koncli mutex run` whose command is this binary in
// mode cs. The command prints its section's record; koncli's exit status 4
// says the lock was lost while it ran (koncli then sent it SIGTERM, which
// cut the section).
func roundKoncli(ctx context.Context, w workerConfig, h *history, holder string) {
	wr := record{Kind: "wait", Mutex: w.Mutex, Worker: w.Name, Holder: holder, Start: now(), Timeout: int64(w.Timeout)}
	self, err := os.Executable()
	if err != nil {
		panic(err)
	}
	args := []string{"--kubeconfig", w.Kubeconfig, "mutex", "run", w.Mutex, "--holder", holder,
		"--timeout", w.Timeout.String(), "--grace-period", "5s"}
	if w.TTL > 0 {
		args = append(args, "--ttl", w.TTL.String())
	}
	args = append(args, "--", self, "-mode", "cs")
	args = append(args, w.args()[2:]...) // the worker's flags without its -mode
	cmd := exec.CommandContext(ctx, w.Koncli, args...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 20 * time.Second
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err = cmd.Run()
	code := cmd.ProcessState.ExitCode()
	wr.End = now()
	var r record
	ran := json.Unmarshal(bytes.TrimSpace(out.Bytes()), &r) == nil && r.Kind == "cs"
	switch {
	case ran:
		wr.Result = "acquired"
		wr.End = r.Enter
		if code == 4 {
			r.Lost = true
		} else {
			r.LostAt = 0
		}
		h.add(r)
		if code != 0 && code != 4 {
			// koncli could not unlock (the API server was down): release
			// what the Lease may still hold under this run's identity.
			unlockAs(ctx, w, holder)
		}
	case code == 4:
		// Acquired, but lost before the command started (it was not run).
		wr.Result = "acquired-lost-before-run"
	case code == 3:
		wr.Result = "timeout"
	case code == 143 && ctx.Err() != nil:
		wr.Result = "cancelled"
	default:
		wr.Result, wr.Error = "error", fmt.Sprintf("koncli exit %d: %v", code, err)
	}
	h.add(wr)
}

// unlockAs releases the mutex if the Lease still names holder.
func unlockAs(ctx context.Context, w workerConfig, holder string) {
	cfg, err := restConfig(w.Kubeconfig)
	if err != nil {
		return
	}
	c, err := lock.NewForConfig(cfg)
	if err != nil {
		return
	}
	m, err := c.NewMutex(w.Namespace, w.Mutex, lock.WithHolder(holder))
	if err != nil {
		return
	}
	for range 10 {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		err := m.Unlock(uctx)
		cancel()
		if err == nil || errors.Is(err, lock.ErrNotHeld) {
			return
		}
		time.Sleep(time.Second)
	}
}

// runCS is the command koncli runs: one critical section with the token
// koncli hands it; SIGTERM (sent by koncli when the lock is lost) cuts it.
func runCS(w workerConfig) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	token, err := strconv.ParseInt(os.Getenv("KONLEASE_TOKEN"), 10, 64)
	if err != nil {
		return fmt.Errorf("KONLEASE_TOKEN: %w", err)
	}
	h, err := openHistory(w.History, w.Name+"-cs")
	if err != nil {
		return err
	}
	defer h.Close()
	cfg, err := restConfig(w.Kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	r := criticalSection(ctx, w, h, cs, os.Getenv("KONLEASE_HOLDER"), token, ctx.Done())
	b, _ := json.Marshal(r)
	_, err = fmt.Printf("%s\n", b)
	return err
}
