// Command demo shows konlease at work on a throwaway local control plane
// (etcd and kube-apiserver, as the e2e tests run them): several workers, each
// a separate `koncli mutex run` process, contend for one mutex; one of them
// is killed while it holds the lock, and the others take over once the
// mutex's TTL has run out. At the end it draws who held the mutex when,
// checks that no two critical sections overlapped and that the fencing
// tokens rose with every acquisition, and shows `koncli mutex list`.
//
//	make demo        # builds bin/koncli and the control plane, then runs this
//
// The control plane is stopped and removed on every way out, Ctrl-C
// included; its processes also die with this one if it is killed.
//
// The program is also the workers' critical section: koncli runs it as
// `demo section ...` (see section.go).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/konlease/konlease/e2e/harness"
)

const mutexName = "demo"

// config is what the flags set.
type config struct {
	koncli     string
	kubeconfig string
	namespace  string
	workers    int
	rounds     int
	work       time.Duration
	ttl        time.Duration
	killNth    int
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == sectionCommand {
		os.Exit(section(os.Args[2:]))
	}
	var cfg config
	flag.StringVar(&cfg.koncli, "koncli", "", "koncli binary (default: bin/koncli of this repository)")
	flag.StringVar(&cfg.kubeconfig, "kubeconfig", "", "run on this existing cluster instead of starting a local control plane")
	flag.StringVar(&cfg.namespace, "n", "default", "namespace of the demo mutex")
	flag.IntVar(&cfg.workers, "workers", 5, "number of worker processes")
	flag.IntVar(&cfg.rounds, "rounds", 2, "critical sections per worker")
	flag.DurationVar(&cfg.work, "work", 500*time.Millisecond, "length of a critical section")
	flag.DurationVar(&cfg.ttl, "ttl", 3*time.Second, "TTL of the demo mutex")
	flag.IntVar(&cfg.killNth, "kill", 3, "kill the worker that makes the n-th acquisition while it holds the lock (0: none)")
	flag.Parse()
	// A kill must leave someone to take over: n must be below the number
	// of sections, which the kill reduces by the dead worker's other rounds.
	if cfg.workers < 1 || cfg.rounds < 1 || cfg.killNth < 0 || (cfg.killNth > 0 && cfg.killNth >= cfg.workers*cfg.rounds-(cfg.rounds-1)) {
		fmt.Fprintln(os.Stderr, "demo: need --workers >= 1, --rounds >= 1, and --kill below the number of critical sections")
		os.Exit(2)
	}

	// Ctrl-C stops the workers (koncli unlocks on SIGTERM) and then the
	// control plane, through the deferred calls in run.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, cfg config, out io.Writer) (err error) {
	if cfg.koncli == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return err
		}
		cfg.koncli = filepath.Join(root, "bin", "koncli")
	}
	if _, err := os.Stat(cfg.koncli); err != nil {
		return fmt.Errorf("koncli not found (make build makes bin/koncli): %w", err)
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	dir, err := os.MkdirTemp("", "konlease-demo-")
	if err != nil {
		return fmt.Errorf("create work directory: %w", err)
	}
	defer os.RemoveAll(dir)

	kubeconfig := cfg.kubeconfig
	if kubeconfig == "" {
		fmt.Fprintln(out, "Starting a local control plane (etcd + kube-apiserver)...")
		var hlog bytes.Buffer
		start := time.Now()
		// Options.Kubeconfig stays empty and the variable that would select
		// an external cluster is dropped: the demo always starts its own.
		os.Unsetenv(harness.EnvKubeconfig)
		// Assigned, not declared: the deferred Stop below must report into
		// run's own err.
		var env *harness.Env
		env, err = harness.Start(ctx, harness.Options{Logf: func(format string, args ...any) {
			fmt.Fprintf(&hlog, format+"\n", args...)
		}})
		if err != nil {
			if ctx.Err() != nil {
				// Start stopped what it had started; its log is noise here.
				return errors.New("interrupted while starting the control plane; nothing is left running")
			}
			return fmt.Errorf("start control plane: %w\n%s", err, hlog.String())
		}
		defer func() {
			if serr := env.Stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop control plane: %w", serr))
				return
			}
			fmt.Fprintln(out, "Control plane stopped and removed.")
		}()
		fmt.Fprintf(out, "  ready at %s in %.1fs\n\n", env.Config().Host, time.Since(start).Seconds())
		kubeconfig = env.AdminKubeconfig()
	}

	k := &koncli{path: cfg.koncli, kubeconfig: kubeconfig, namespace: cfg.namespace, out: out}
	fmt.Fprintf(out, "Every koncli call below also gets --kubeconfig <admin kubeconfig> -n %s.\n\n", cfg.namespace)
	create := []string{"mutex", "create", mutexName, "--ttl", cfg.ttl.String()}
	if cfg.kubeconfig != "" {
		// An existing cluster may keep a demo mutex from an earlier run,
		// perhaps with another TTL.
		create = append(create, "--update")
	}
	if err := k.show(ctx, create...); err != nil {
		return err
	}
	fmt.Fprintf(out, "With a TTL, a holder renews its lock while its command runs; if the holder\n"+
		"dies, the others may take over %s after its last renewal.\n\n", cfg.ttl)

	fmt.Fprintf(out, "%d workers start at once, %d rounds each, every round one process of\n", cfg.workers, cfg.rounds)
	fmt.Fprintf(out, "  $ koncli mutex run %s --holder worker-N --timeout 30s -- demo section %s\n", mutexName, cfg.work)
	if cfg.killNth > 0 {
		fmt.Fprintf(out, "The worker that makes acquisition #%d is killed (kill -9 of its koncli) half-way\n"+
			"through its section and stays dead; the others wait for its TTL to run out.\n", cfg.killNth)
	}
	fmt.Fprintln(out)

	d := &demo{cfg: cfg, k: k, self: self, dir: dir, log: filepath.Join(dir, "log")}
	if err := d.contend(ctx); err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted; the workers were stopped")
		}
		return err
	}
	sections, err := readSections(d.log)
	if err != nil {
		return err
	}
	ok := d.report(out, sections)

	fmt.Fprintln(out)
	if d.listAfterCrash != "" {
		fmt.Fprintln(out, "Right after the kill, the dead worker's lock was still there, waiting for its TTL:")
		fmt.Fprintf(out, "  $ koncli mutex list\n%s\n", indent(d.listAfterCrash))
	}
	fmt.Fprintln(out, "At the end:")
	if err := k.show(ctx, "mutex", "list"); err != nil {
		return err
	}
	if err := k.show(ctx, "mutex", "list", "-o", "wide"); err != nil {
		return err
	}
	if !ok {
		return errors.New("the checks above failed")
	}
	return nil
}

// koncli runs the koncli binary against the demo's cluster.
type koncli struct {
	path, kubeconfig, namespace string
	out                         io.Writer
}

// command returns a koncli command for args ("mutex", verb, ...). The
// connection flags go right after the verb, before anything a `--` could
// hand on to a child command. The environment loses KUBECONFIG so that only
// --kubeconfig decides the cluster: never a user's own.
func (k *koncli) command(ctx context.Context, args ...string) *exec.Cmd {
	n := min(2, len(args))
	full := append(slices.Clone(args[:n]), "--kubeconfig", k.kubeconfig, "-n", k.namespace)
	cmd := exec.CommandContext(ctx, k.path, append(full, args[n:]...)...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KUBECONFIG=") })
	return cmd
}

// output runs koncli and returns what it printed.
func (k *koncli) output(ctx context.Context, args ...string) (string, error) {
	var buf bytes.Buffer
	cmd := k.command(ctx, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Run(); err != nil {
		return buf.String(), fmt.Errorf("koncli %s: %w\n%s", strings.Join(args, " "), err, buf.String())
	}
	return buf.String(), nil
}

// show runs koncli and prints the command line and its output.
func (k *koncli) show(ctx context.Context, args ...string) error {
	s, err := k.output(ctx, args...)
	if err != nil {
		return err
	}
	fmt.Fprintf(k.out, "  $ koncli %s\n%s\n", strings.Join(args, " "), indent(s))
	return nil
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return ""
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ") + "\n"
}

// demo is one contention run.
type demo struct {
	cfg  config
	k    *koncli
	self string
	dir  string
	log  string

	mu             sync.Mutex
	runs           []workerRun
	listAfterCrash string
	t0             time.Time
}

// workerRun is one `koncli mutex run` process as the demo saw it.
type workerRun struct {
	worker     int
	start, end time.Time
	outcome    string // "exit 0", "exit 3", "killed"
	output     string
}

// contend starts the workers and waits for all of them.
func (d *demo) contend(ctx context.Context) error {
	// Bound the whole run: a worker that hangs must not keep the demo (and
	// its control plane) alive.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	d.t0 = time.Now()
	var wg sync.WaitGroup
	for w := 1; w <= d.cfg.workers; w++ {
		wg.Go(func() {
			for round := 1; round <= d.cfg.rounds && ctx.Err() == nil; round++ {
				if !d.runOnce(ctx, w, round) {
					return // killed: a dead worker stays dead
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("workers stopped: %w", err)
	}
	return nil
}

// runOnce runs one `koncli mutex run` process for worker w. It returns
// false if that process was killed.
func (d *demo) runOnce(ctx context.Context, w, round int) bool {
	args := []string{"mutex", "run", mutexName, "--holder", fmt.Sprintf("worker-%d", w), "--timeout", "30s", "--",
		d.self, sectionCommand, "--log", d.log, "--marker", filepath.Join(d.dir, "inside"), "--work", d.cfg.work.String()}
	if d.cfg.killNth > 0 {
		args = append(args, "--crash-at", strconv.Itoa(d.cfg.killNth))
	}
	cmd := d.k.command(ctx, args...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	// Its own process group, so that stopping it on Ctrl-C also reaches the
	// section it runs; SIGTERM first, so that koncli can unlock.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	r := workerRun{worker: w, start: time.Now()}
	err := cmd.Run()
	r.end, r.output = time.Now(), buf.String()
	var exit *exec.ExitError
	switch {
	case err == nil:
		r.outcome = "exit 0"
	case errors.As(err, &exit) && exit.Exited():
		r.outcome = fmt.Sprintf("exit %d", exit.ExitCode())
	case errors.As(err, &exit):
		r.outcome = "killed"
	default:
		r.outcome = err.Error()
	}
	killed := r.outcome == "killed"
	if killed {
		// The dead holder still holds the mutex until its TTL runs out:
		// show it now, while the others wait.
		s, lerr := d.k.output(ctx, "mutex", "list")
		if lerr != nil {
			s = lerr.Error()
		}
		d.mu.Lock()
		d.listAfterCrash = s
		d.mu.Unlock()
	}
	d.mu.Lock()
	d.runs = append(d.runs, r)
	d.mu.Unlock()
	return !killed
}
