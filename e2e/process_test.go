//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"

	"github.com/konlease/konlease/lock"
)

// The e2e test binary doubles as a worker process: TestMain runs
// workerMain instead of the tests when workerEnv is set. Workers talk to the
// same control plane through a kubeconfig file.
const (
	workerEnv = "KONLEASE_E2E_WORKER" // the mode: contend or hold
	// Worker parameters.
	workerKubeconfig = "KONLEASE_E2E_WORKER_KUBECONFIG"
	workerNamespace  = "KONLEASE_E2E_WORKER_NAMESPACE"
	workerMutex      = "KONLEASE_E2E_WORKER_MUTEX"
	workerDir        = "KONLEASE_E2E_WORKER_DIR"
	workerGoroutines = "KONLEASE_E2E_WORKER_GOROUTINES"
	workerRounds     = "KONLEASE_E2E_WORKER_ROUNDS"
	workerTTL        = "KONLEASE_E2E_WORKER_TTL"
	// workerWaiterTTL sets the client's waiter TTL (fair mutexes).
	workerWaiterTTL = "KONLEASE_E2E_WORKER_WAITER_TTL"
	workerHolder    = "KONLEASE_E2E_WORKER_HOLDER"
	workerLimit     = "KONLEASE_E2E_WORKER_LIMIT"
)

// workerMain runs one worker process and returns its exit code.
func workerMain() int {
	if err := runWorker(os.Getenv(workerEnv)); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		return 1
	}
	return 0
}

func runWorker(mode string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(workerKubeconfig))
	if err != nil {
		return err
	}
	copts := []lock.ClientOption{lock.WithLogger(testLogger())}
	if d := os.Getenv(workerWaiterTTL); d != "" {
		wt, err := time.ParseDuration(d)
		if err != nil {
			return err
		}
		copts = append(copts, lock.WithWaiterTTL(wt))
	}
	c, err := lock.NewForConfig(cfg, copts...)
	if err != nil {
		return err
	}
	ns, name := os.Getenv(workerNamespace), os.Getenv(workerMutex)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	switch mode {
	case "hold":
		var opts []lock.Option
		if d := os.Getenv(workerTTL); d != "" {
			ttl, err := time.ParseDuration(d)
			if err != nil {
				return err
			}
			opts = append(opts, lock.WithTTL(ttl))
		}
		m, err := c.NewMutex(ns, name, append(opts, lock.WithHolder(fmt.Sprintf("hold-%d", os.Getpid())))...)
		if err != nil {
			return err
		}
		if err := m.Lock(ctx); err != nil {
			return err
		}
		fmt.Printf("LOCKED %d\n", m.Token())
		<-ctx.Done() // until killed
		return nil
	case "wait":
		// One waiter: says QUEUED once it waits, ACQUIRED with its token
		// once it holds the mutex, then unlocks and exits.
		var once sync.Once
		m, err := c.NewMutex(ns, name, lock.WithHolder(os.Getenv(workerHolder)),
			lock.WithWaitNotify(func(lock.Status) { once.Do(func() { fmt.Println("QUEUED") }) }))
		if err != nil {
			return err
		}
		if err := m.Lock(ctx); err != nil {
			return err
		}
		fmt.Printf("ACQUIRED %d\n", m.Token())
		return m.Unlock(context.WithoutCancel(ctx))
	case "sem-contend":
		// Goroutines take the semaphore in turns; each section puts a file
		// in the shared directory and counts the files there: the count is
		// at least the number inside at that moment, whatever the library
		// believes.
		goroutines, _ := strconv.Atoi(os.Getenv(workerGoroutines))
		rounds, _ := strconv.Atoi(os.Getenv(workerRounds))
		limit, _ := strconv.Atoi(os.Getenv(workerLimit))
		dir := os.Getenv(workerDir)
		inside := filepath.Join(dir, "inside")
		if err := os.MkdirAll(inside, 0o755); err != nil {
			return err
		}
		mostf, err := os.OpenFile(filepath.Join(dir, "most"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer mostf.Close()
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				holder := fmt.Sprintf("p%d-g%d", os.Getpid(), g)
				s, err := c.NewSemaphore(ns, name, lock.WithHolder(holder))
				if err != nil {
					errs <- err
					return
				}
				for range rounds {
					err := s.With(ctx, func(context.Context) error {
						me := filepath.Join(inside, holder)
						if err := os.WriteFile(me, nil, 0o644); err != nil {
							return err
						}
						es, err := os.ReadDir(inside)
						if err != nil {
							return err
						}
						if _, err := fmt.Fprintf(mostf, "%d\n", len(es)); err != nil {
							return err
						}
						if len(es) > limit {
							return fmt.Errorf("OVER THE LIMIT: %d inside, limit %d", len(es), limit)
						}
						<-time.After(10 * time.Millisecond) // overlap with the others inside
						return os.Remove(me)
					})
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return errors.Join(all...)
	case "contend":
		goroutines, _ := strconv.Atoi(os.Getenv(workerGoroutines))
		rounds, _ := strconv.Atoi(os.Getenv(workerRounds))
		dir := os.Getenv(workerDir)
		logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return err
		}
		defer logf.Close()
		var wg sync.WaitGroup
		errs := make(chan error, goroutines)
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				holder := fmt.Sprintf("p%d-g%d", os.Getpid(), g)
				m, err := c.NewMutex(ns, name, lock.WithHolder(holder))
				if err != nil {
					errs <- err
					return
				}
				for range rounds {
					if err := m.With(ctx, func(context.Context) error {
						return criticalSection(dir, logf, holder, m.Token())
					}); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		var all []error
		for err := range errs {
			all = append(all, err)
		}
		return errors.Join(all...)
	default:
		return fmt.Errorf("unknown worker mode %q", mode)
	}
}

// criticalSection detects overlap across processes: a file that only one
// holder may have created, and an append-only log of tokens in the order the
// sections ran.
func criticalSection(dir string, logf *os.File, holder string, token int64) error {
	inside := filepath.Join(dir, "inside")
	f, err := os.OpenFile(inside, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		who, _ := os.ReadFile(inside)
		return fmt.Errorf("OVERLAP: %s entered while %s was inside: %w", holder, who, err)
	}
	_, werr := f.WriteString(holder)
	cerr := f.Close()
	// One write call: appends from several processes never interleave.
	_, lerr := fmt.Fprintf(logf, "%d %s\n", token, holder)
	return errors.Join(werr, cerr, lerr, os.Remove(inside))
}

// workerTimeout bounds every worker process, so that a worker stuck on a
// lost wakeup fails its test instead of hanging the suite.
const workerTimeout = 2 * time.Minute

// worker starts a worker process of mode with env, as admin.
func worker(t *testing.T, mode, ns, name string, env_ map[string]string) *exec.Cmd {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), workerTimeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(),
		workerEnv+"="+mode,
		workerKubeconfig+"="+env.AdminKubeconfig(),
		workerNamespace+"="+ns,
		workerMutex+"="+name,
	)
	for k, v := range env_ {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// TestMutualExclusionProcesses: three processes of six goroutines each
// contend for one mutex; no two critical sections overlap and the tokens
// grow in the order the sections ran.
func TestMutualExclusionProcesses(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	dir := t.TempDir()
	const procs, goroutines, rounds = 3, 6, 12
	var cmds []*exec.Cmd
	for range procs {
		cmd := worker(t, "contend", ns, "shared", map[string]string{
			workerDir: dir, workerGoroutines: strconv.Itoa(goroutines), workerRounds: strconv.Itoa(rounds),
		})
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if got, want := len(lines), procs*goroutines*rounds; got != want {
		t.Fatalf("critical sections logged: got %d, want %d", got, want)
	}
	prev := int64(0)
	for i, line := range lines {
		tok, err := strconv.ParseInt(strings.Fields(line)[0], 10, 64)
		if err != nil {
			t.Fatalf("log line %d %q: %v", i, line, err)
		}
		if tok <= prev {
			t.Fatalf("log line %d: token %d is not larger than %d before it", i, tok, prev)
		}
		prev = tok
	}
}

// startHolder starts a worker that locks the mutex and reports its token.
func startHolder(t *testing.T, ns, name string, ttl time.Duration) *exec.Cmd {
	t.Helper()
	vars := map[string]string{}
	if ttl > 0 {
		vars[workerTTL] = ttl.String()
	}
	cmd := worker(t, "hold", ns, name, vars)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LOCKED ") {
		t.Fatalf("holder process: got %q, %v; want LOCKED", line, err)
	}
	return cmd
}

// TestCrashedHolder: a holder killed with SIGKILL frees a TTL mutex within
// the TTL plus the margin, and keeps a mutex without TTL locked.
func TestCrashedHolder(t *testing.T) {
	t.Parallel()
	t.Run("with TTL", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		const ttl = 2 * time.Second
		cmd := startHolder(t, ns, "m", ttl)
		// Start waiting while the holder is alive and renewing.
		waiting := make(chan struct{})
		w2 := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("waiter"),
			lock.WithWaitNotify(func(lock.Status) { close(waiting) }))
		locked := make(chan error, 1)
		go func() { locked <- w2.Lock(t.Context()) }()
		<-waiting
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		killed := time.Now()
		if err := <-locked; err != nil {
			t.Fatalf("waiter Lock after the holder was killed: %v", err)
		}
		if took := time.Since(killed); took > ttl+takeoverMargin {
			t.Errorf("takeover after a crash took %s, want within %s", took, ttl+takeoverMargin)
		}
		if w2.Token() != 2 {
			t.Errorf("token after takeover: got %d, want 2", w2.Token())
		}
	})
	t.Run("without TTL", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		cmd := startHolder(t, ns, "m", 0)
		if err := cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		waiter := newMutex(t, newClient(t, env.Config()), ns, "m", lock.WithHolder("waiter"))
		ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
		defer cancel()
		err := waiter.Lock(ctx)
		var le *lock.LockedError
		if !errors.As(err, &le) || !strings.HasPrefix(le.Holder, "hold-") {
			t.Errorf("Lock on a mutex whose holder crashed without TTL: got %v, want LockedError naming the dead holder", err)
		}
	})
}
