// Command bench measures konlease against what users would pick instead,
// on the same API server and etcd in the same run: the floors no Lease lock
// can beat, konlease itself, client-go leader election used as a lock, and
// etcd's own concurrency.Mutex. `make bench` runs it; `make bench-quick` is
// a shorter run for development. Figures are reported with their ratios to
// the floors and baselines measured in the same process, because absolute
// numbers on a shared machine are noise.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// progress is where figures are reported as they are measured.
var progress io.Writer = os.Stderr

// Crash-takeover helpers: the bench binary re-executes itself as a holder
// that is then killed with SIGKILL.
const (
	roleEnv       = "KONLEASE_BENCH_ROLE" // konlease or le-default or le-tight
	roleKubecfg   = "KONLEASE_BENCH_KUBECONFIG"
	roleNamespace = "KONLEASE_BENCH_NAMESPACE"
	roleName      = "KONLEASE_BENCH_NAME"
)

func main() {
	if role := os.Getenv(roleEnv); role != "" {
		if err := runRole(role); err != nil {
			fmt.Fprintln(os.Stderr, "bench holder:", err)
			os.Exit(1)
		}
		fmt.Println("READY")
		select {} // hold until killed

	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	quick := flag.Bool("quick", false, "fewer samples and no slow baselines (under a minute)")
	jsonOut := flag.String("json", "", "write the results as JSON to this file")
	mdOut := flag.String("markdown", "", "write the results as a Markdown report to this file")
	kubeconfig := flag.String("kubeconfig", "", "measure on this cluster instead of a local control plane (etcd baseline skipped)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env, err := harness.Start(ctx, harness.Options{Kubeconfig: *kubeconfig})
	if err != nil {
		return err
	}
	defer env.Stop()
	cfg := env.Config()
	ns, err := namespace(ctx, env)
	if err != nil {
		return err
	}
	defer env.Client().CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{})

	cmd := "make bench"
	if *quick {
		cmd = "make bench-quick"
	}
	r := newResults(machine(), cmd, *quick)
	n, window, contend, crashes, leN := 200, 30*time.Second, 10*time.Second, 3, 10
	if *quick {
		n, window, contend, crashes, leN = 40, 6*time.Second, 3*time.Second, 1, 3
	}

	fmt.Fprintln(progress, "floors:")
	if err := floors(ctx, r, cfg, ns, n); err != nil {
		return fmt.Errorf("floors: %w", err)
	}
	fmt.Fprintln(progress, "konlease:")
	steps := []func() error{
		func() error { return cycle(ctx, r, cfg, ns, n) },
		func() error { return handoff(ctx, r, cfg, ns, n) },
		func() error { return tryLockHeld(ctx, r, cfg, ns, n) },
		func() error { return contention(ctx, r, cfg, ns, 2, contend) },
		func() error { return contention(ctx, r, cfg, ns, 8, contend) },
		func() error { return contention(ctx, r, cfg, ns, 32, contend) },
		func() error { return crash(ctx, r, env, cfg, ns, "konlease", crashes) },
		func() error { return idle(ctx, r, cfg, ns, 6*time.Second, window) },
		func() error {
			lns, err := namespace(ctx, env)
			if err != nil {
				return err
			}
			defer env.Client().CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), lns, metav1.DeleteOptions{})
			return list(ctx, r, cfg, lns, 1000, 5)
		},
		func() error { return memory(ctx, r, cfg, ns, 100) },
	}
	fairNs, fairHolds := []int{2, 8, 32, 128}, []time.Duration{0, 10 * time.Millisecond}
	if *quick {
		fairNs, fairHolds = []int{2, 32}, []time.Duration{0}
	}
	steps = append(steps,
		func() error { fmt.Fprintln(progress, "fair:"); return fairCycle(ctx, r, cfg, ns, n) },
		func() error { return fairHandoff(ctx, r, cfg, ns, n/4) },
	)
	for _, hold := range fairHolds {
		for _, workers := range fairNs {
			steps = append(steps, func() error { return fairContention(ctx, r, cfg, ns, workers, hold, contend) })
		}
	}
	steps = append(steps, func() error { return fairIdle(ctx, r, cfg, ns, window) })
	steps = append(steps,
		func() error { fmt.Fprintln(progress, "semaphore:"); return semCycle(ctx, r, cfg, ns, n) },
		func() error { return semContention(ctx, r, cfg, ns, 4, 32, contend) },
		func() error { return semIdle(ctx, r, cfg, ns, 6*time.Second, window) },
	)
	if !*quick {
		steps = append(steps, func() error { return fairDeadHead(ctx, r, env, cfg, ns, 2) })
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return err
		}
	}
	fmt.Fprintln(progress, "baselines:")
	if url := env.EtcdURL(); url != "" {
		if err := etcdMutex(ctx, r, url, n); err != nil {
			return fmt.Errorf("etcd baseline: %w", err)
		}
	} else {
		fmt.Fprintln(progress, "  etcd baseline skipped: the cluster's etcd is not reachable")
	}
	leSets := []leTimings{leTight, leDefault}
	for _, t := range leSets {
		samples := leN
		if t == leDefault && *quick {
			samples = 2
		}
		if err := leHandoff(ctx, r, cfg, ns, t, samples); err != nil {
			return fmt.Errorf("%s handoff: %w", t.name, err)
		}
		if t == leDefault && *quick {
			continue // a crash takeover at the defaults takes 15s a sample
		}
		if err := crash(ctx, r, env, cfg, ns, "le-"+t.key(), min(crashes, 2)); err != nil {
			return fmt.Errorf("%s crash: %w", t.name, err)
		}
		if err := leIdle(ctx, r, cfg, ns, t, window); err != nil {
			return fmt.Errorf("%s idle: %w", t.name, err)
		}
	}

	addRatios(r)
	r.table(os.Stdout, false)
	verdicts := targets(r)
	fmt.Println()
	for _, v := range verdicts {
		fmt.Println(v)
	}
	if *jsonOut != "" {
		if err := writeFile(*jsonOut, r.writeJSON); err != nil {
			return err
		}
	}
	if *mdOut != "" {
		if err := writeFile(*mdOut, func(w io.Writer) error { return markdown(w, r, verdicts) }); err != nil {
			return err
		}
	}
	return nil
}

func namespace(ctx context.Context, env *harness.Env) (string, error) {
	ns, err := env.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "konlease-bench-"},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", err
	}
	return ns.Name, nil
}

func addRatios(r *Results) {
	r.ratio("konlease.cycle", "÷ floor", "floor.update", "floor.update")
	r.ratio("konlease.cycle", "÷ etcd", "etcd.cycle")
	r.ratio("konlease.handoff", "÷ floor", "floor.watch", "floor.update")
	r.ratio("konlease.handoff", "÷ etcd", "etcd.handoff")
	r.ratio("konlease.handoff", "÷ LE 1s", "le.tight.handoff")
	r.ratio("konlease.handoff", "÷ LE default", "le.default.handoff")
	r.ratio("konlease.trylock", "÷ floor", "floor.update")
	r.ratio("konlease.crash", "÷ LE 1s", "le.tight.crash")
	r.ratio("konlease.crash", "÷ LE default", "le.default.crash")
	r.ratio("konlease.idle.holder", "÷ LE 1s", "le.tight.idle.holder")
	r.ratio("konlease.idle.holder", "÷ LE default", "le.default.idle.holder")
	r.ratio("fair.cycle", "÷ racing", "konlease.cycle")
	r.ratio("fair.handoff", "÷ floor", "floor.watch", "floor.update")
	r.ratio("fair.handoff", "÷ etcd", "etcd.handoff")
	r.ratio("fair.handoff", "÷ racing", "konlease.handoff")
	r.ratio("sem.cycle", "÷ mutex", "konlease.cycle")
}

// targets checks the targets of the benchmark issue against the figures.
func targets(r *Results) []string {
	get := func(k string) *Figure { return r.byKey[k] }
	var out []string
	verdict := func(ok bool, format string, args ...any) {
		mark := "MISSED"
		if ok {
			mark = "met   "
		}
		out = append(out, fmt.Sprintf("%s  %s", mark, fmt.Sprintf(format, args...)))
	}
	if h, e := get("konlease.handoff"), get("etcd.handoff"); h != nil && e != nil {
		verdict(h.P50 <= 3*e.P50, "handoff p50 within 3× of etcd's native mutex: %.2f×", h.P50/e.P50)
	}
	if h, le := get("konlease.handoff"), get("le.default.handoff"); h != nil && le != nil {
		verdict(le.P50 >= 100*h.P50, "handoff p50 at least 100× faster than leader election at its defaults: %.0f×", le.P50/h.P50)
	}
	if l, u := get("konlease.req.lock"), get("konlease.req.unlock"); l != nil && u != nil {
		w := get("konlease.req.keeperwatch")
		total := l.Value + u.Value + w.Value
		verdict(total <= 3, "uncontended Lock+Unlock at most 3 API requests: %.2f (%.2f lock + %.2f unlock + %.2f keeper watch)", total, l.Value, u.Value, w.Value)
	}
	if c, f := get("konlease.cycle"), get("floor.update"); c != nil && f != nil {
		verdict(c.P50 <= 2.5*2*f.P50, "uncontended Lock+Unlock within 2.5× of two Lease update round trips: %.2f×", c.P50/(2*f.P50))
	}
	if w := get("konlease.idle.waiter"); w != nil {
		verdict(w.Value == 0, "idle waiter makes no requests beyond its watch: %.1f req/min", w.Value)
	}
	if h := get("konlease.idle.holder"); h != nil {
		perTTL := h.Value / 10 // 6s TTL: 10 TTLs a minute
		verdict(perTTL <= 3, "idle TTL holder makes at most 3 requests per TTL: %.2f", perTTL)
	}
	out = append(out, fairTargets(r)...)
	if c2, c32 := get("konlease.contention.2.conflicts"), get("konlease.contention.32.conflicts"); c2 != nil && c32 != nil {
		out = append(out, fmt.Sprintf("report  409 conflicts per acquisition: %.2f at 2 workers, %.2f at 8, %.2f at 32 (grows with the number of waiters: every waiter races for each release; a FIFO mode would make it constant)",
			c2.Value, get("konlease.contention.8.conflicts").Value, c32.Value))
	}
	return out
}

// renewCycle is how often each kind of holder renews.
var renewCycle = map[string]time.Duration{
	"konlease":   5 * time.Second / 3,
	"le-default": leDefault.retry,
	"le-tight":   leTight.retry,
}

// crash measures how long a waiter takes to acquire after the holder
// process was killed with SIGKILL (TTL 5s for konlease; the lease
// duration for leader election).
func crash(ctx context.Context, r *Results, env *harness.Env, cfg *rest.Config, ns, role string, n int) error {
	var lat []time.Duration
	for i := range n {
		name := fmt.Sprintf("crash-%s-%d", role, i)
		holder := exec.CommandContext(ctx, os.Args[0])
		holder.Env = append(os.Environ(), roleEnv+"="+role, roleKubecfg+"="+env.AdminKubeconfig(),
			roleNamespace+"="+ns, roleName+"="+name)
		holder.Stderr = os.Stderr
		holder.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := holder.StdoutPipe()
		if err != nil {
			return err
		}
		if err := holder.Start(); err != nil {
			return err
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "READY\n" {
			_ = holder.Process.Kill()
			return fmt.Errorf("crash holder %s: got %q, %v", role, line, err)
		}
		acquired := make(chan time.Time, 1)
		var stopWaiter func()
		if role == "konlease" {
			c, wcnt, err := newLockClient(cfg)
			if err != nil {
				return err
			}
			m := mustMutex(c, ns, name, "waiter")
			go func() {
				if m.Lock(ctx) == nil {
					acquired <- time.Now()
				}
			}()
			<-wcnt.watches
			stopWaiter = func() { _ = m.Unlock(context.WithoutCancel(ctx)) }
		} else {
			t := map[string]leTimings{"le-default": leDefault, "le-tight": leTight}[role]
			wcfg, wcnt := counted(cfg)
			wctx, cancel := context.WithCancel(ctx)
			done, err := leCandidate(wctx, wcfg, ns, name, "waiter", t, acquired)
			if err != nil {
				cancel()
				return err
			}
			for {
				v, _ := wcnt.take()
				if v["GET"] > 0 {
					break
				}
				<-time.After(10 * time.Millisecond)
			}
			stopWaiter = func() { cancel(); <-done }
		}
		// Kill the holder at a spread of points in its renewal cycle, as a
		// crash would, not always right after it acquired.
		<-time.After(time.Duration(float64(renewCycle[role]) * jitterFraction(i+3)))
		t0 := time.Now()
		if err := holder.Process.Kill(); err != nil {
			return err
		}
		_ = holder.Wait()
		t1 := <-acquired
		lat = append(lat, t1.Sub(t0))
		stopWaiter()
	}
	title := map[string]string{
		"konlease":   "konlease: crash takeover, TTL 5s",
		"le-default": "LE default: crash takeover",
		"le-tight":   "LE 1s: crash takeover",
	}[role]
	r.latency(strings.ReplaceAll(role, "-", ".")+".crash", title, lat, "holder killed with SIGKILL → waiter acquires")
	return nil
}

// runRole takes the lock (or leadership) as the holder of a crash
// measurement; main then holds it until the process is killed.
func runRole(role string) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv(roleKubecfg))
	if err != nil {
		return err
	}
	ns, name := os.Getenv(roleNamespace), os.Getenv(roleName)
	ctx := context.Background()
	if role == "fair-waiter" {
		c, err := lock.NewForConfig(cfg)
		if err != nil {
			return err
		}
		return fairWaiterRole(ctx, c, ns, name)
	}
	if role == "konlease" {
		c, err := lock.NewForConfig(cfg)
		if err != nil {
			return err
		}
		m := mustMutex(c, ns, name, "doomed", lock.WithTTL(5*time.Second))
		if err := m.Lock(ctx); err != nil {
			return err
		}
	} else {
		t, ok := map[string]leTimings{"le-default": leDefault, "le-tight": leTight}[role]
		if !ok {
			return errors.New("unknown role " + role)
		}
		leading := make(chan time.Time, 1)
		if _, err := leCandidate(ctx, cfg, ns, name, "doomed", t, leading); err != nil {
			return err
		}
		<-leading
	}
	return nil
}

func machine() string {
	model := "unknown CPU"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%s, %d CPUs, %s/%s, %s", model, runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func writeFile(path string, write func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func markdown(w io.Writer, r *Results, verdicts []string) error {
	fmt.Fprintf(w, "# Benchmarks\n\n")
	fmt.Fprintf(w, "Made by `%s` on %s.\n\n", r.Command, r.Started.Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "Machine: %s. Local control plane: kube-apiserver v1.37.2 and etcd v3.7.0 on loopback (etcd with --unsafe-no-fsync), built by `make controlplane`.\n\n", r.Machine)
	fmt.Fprintf(w, "Every baseline ran in the same process against the same API server and etcd. Absolute times on a shared 2-core machine are noisy; the ratio columns (this row's p50 divided by the named figure's p50, or value by value) are the numbers to compare.\n\n")
	r.table(w, true)
	fmt.Fprintf(w, "\n## Targets\n\n```\n%s\n```\n", strings.Join(verdicts, "\n"))
	fmt.Fprintf(w, "\n## What the figures mean\n\n")
	for _, f := range r.Figures {
		if f.Note != "" {
			fmt.Fprintf(w, "- **%s**: %s\n", f.Title, f.Note)
		}
	}
	return nil
}
