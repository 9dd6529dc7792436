package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

const namespace = "chaos"

// The mutexes and their TTLs.
var mutexTTLs = map[string]time.Duration{"ttl-a": 3 * time.Second, "ttl-b": 2 * time.Second, "nottl": 0, "fair": 3 * time.Second}

// fairMutexes are the mutexes created fair; the checker also judges their
// order.
var fairMutexes = map[string]bool{"fair": true}

// The semaphores, their limits and TTLs. Each slot has a fenced store of
// its own (a slot's token grows per slot).
var (
	semaphoreLimits = map[string]int{"sem": 2}
	semaphoreTTLs   = map[string]time.Duration{"sem": 3 * time.Second}
)

// slotNames are the names of semaphore name's slots.
func slotNames(name string) []string {
	var out []string
	for k := range semaphoreLimits[name] {
		out = append(out, fmt.Sprintf("%s.s-%d", name, k))
	}
	return out
}

// endMargin is how long after the workers stopped a TTL mutex may still be
// locked beyond its TTL.
const endMargin = 5 * time.Second

type orchestrator struct {
	duration       time.Duration
	seed           int64
	historyDir     string
	koncli         string
	noFaults       bool
	selfTestNoLock bool
	topology       string // topologySingle or topologyHA

	// nextAPIServer is the API server that the next apiserver-one fault
	// crashes (each in turn).
	nextAPIServer int

	env    *harness.Env
	admin  *kubernetes.Clientset
	locks  *lock.Client
	proxy  *harness.Proxy
	hist   *history
	logDir string
	rng    *rand.Rand

	workers []*workerProc
}

type workerProc struct {
	cfg  workerConfig
	cmd  *exec.Cmd
	done chan struct{}
}

func (o *orchestrator) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func (o *orchestrator) run() (code int, err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.seed == 0 {
		o.seed = time.Now().UnixNano() % 1_000_000
	}
	o.rng = rand.New(rand.NewPCG(uint64(o.seed), 0))
	koncli, err := filepath.Abs(o.koncli)
	if err != nil {
		return 0, err
	}
	if _, err := os.Stat(koncli); err != nil {
		return 0, fmt.Errorf("koncli binary: %w (make build)", err)
	}
	o.koncli = koncli
	work, err := os.MkdirTemp("", "konlease-chaos-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(work)
	o.logDir = filepath.Join(work, "logs")
	if o.historyDir == "" {
		o.historyDir = filepath.Join(work, "history")
	} else {
		// Kept with the histories: the workers' logs of the library's
		// decisions explain what the verdict finds.
		o.logDir = filepath.Join(o.historyDir, "logs")
	}
	if o.historyDir, err = filepath.Abs(o.historyDir); err != nil {
		return 0, err
	}
	if err := os.MkdirAll(o.historyDir, 0o755); err != nil {
		return 0, err
	}
	if old, _ := filepath.Glob(filepath.Join(o.historyDir, "*.jsonl")); len(old) > 0 {
		return 0, fmt.Errorf("history directory %s already holds histories", o.historyDir)
	}
	if err := os.MkdirAll(o.logDir, 0o755); err != nil {
		return 0, err
	}
	if o.hist, err = openHistory(o.historyDir, "orchestrator"); err != nil {
		return 0, err
	}
	defer o.hist.Close()

	// The control plane: always local, since faults need its processes.
	os.Unsetenv(harness.EnvKubeconfig)
	hopts := harness.Options{Logf: func(string, ...any) {}}
	switch o.topology {
	case topologySingle:
	case topologyHA:
		hopts.HA = &harness.HAOptions{APIServers: 2}
	default:
		return 0, fmt.Errorf("unknown topology %q (want %s or %s)", o.topology, topologySingle, topologyHA)
	}
	o.env, err = harness.Start(ctx, hopts)
	if err != nil {
		return 0, err
	}
	defer o.env.Stop()
	if !o.env.Local() {
		return 0, errors.New("chaos needs a local control plane")
	}
	if o.admin, err = kubernetes.NewForConfig(o.env.Config()); err != nil {
		return 0, err
	}
	if o.locks, err = lock.NewForConfig(o.env.Config()); err != nil {
		return 0, err
	}
	if o.proxy, err = o.env.NewProxy(); err != nil {
		return 0, err
	}
	defer o.proxy.Close()
	kubeconfig, err := o.writeKubeconfig(work)
	if err != nil {
		return 0, err
	}
	if err := o.setup(ctx); err != nil {
		return 0, err
	}

	o.logf("chaos: seed %d, duration %s, topology %s, history %s", o.seed, o.duration, o.topology, o.historyDir)
	for _, cfg := range o.workerConfigs(kubeconfig) {
		p := &workerProc{cfg: cfg}
		if err := o.start(p); err != nil {
			return 0, err
		}
		o.workers = append(o.workers, p)
	}
	began := time.Now()
	runRec := record{Kind: "run", At: now()}
	runCtx, cancel := context.WithTimeout(ctx, o.duration)
	o.faults(runCtx)
	cancel()
	// Leave the cluster whole: the last fault has ended (faults are
	// synchronous), so only a stall may still be running out.
	o.proxy.Stall(0)
	runRec.Until = now()
	o.hist.add(runRec)
	o.stopWorkers()
	ran := time.Since(began)
	if err := o.final(ctx); err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}

	fmt.Printf("chaos run: seed %d, duration %s (workers ran %s), topology %s, %d workers, history %s\n",
		o.seed, o.duration, ran.Round(time.Second), o.topology, len(o.workers), o.historyDir)
	return judge(o.historyDir)
}

// judge reads the histories of dir, prints the verdict and returns the
// exit code: 1 on any violation. -mode check calls it on a kept history,
// to judge it again with a changed checker.
func judge(dir string) (int, error) {
	recs, torn, err := readHistories(dir)
	if err != nil {
		return 0, err
	}
	v := check(recs, mutexTTLs, fairMutexes, semaphoreLimits)
	fmt.Printf("torn history lines (processes killed mid-write): %d\n", torn)
	targets, kinds := livenessTargets()
	live := checkLiveness(v, recs, targets, kinds)
	v.report(os.Stdout)
	reportLiveness(os.Stdout, live)
	if n := v.total(); n > 0 {
		fmt.Printf("FAIL: %d violations\n", n)
		return 1, nil
	}
	if n := v.counts[cLivenessMiss]; n > 0 {
		fmt.Printf("liveness: %d faults after which a mutex waited longer than its target (reported, not a violation)\n", n)
	}
	fmt.Println("PASS: no violations")
	return 0, nil
}

// writeKubeconfig writes the admin kubeconfig with every server pointed at
// the proxy. The serving certificate covers 127.0.0.1, and the proxy
// listens there, so TLS verification is unchanged.
func (o *orchestrator) writeKubeconfig(dir string) (string, error) {
	kc, err := clientcmd.LoadFromFile(o.env.AdminKubeconfig())
	if err != nil {
		return "", err
	}
	for _, c := range kc.Clusters {
		c.Server = "https://" + o.proxy.Addr()
	}
	for _, c := range kc.Contexts {
		c.Namespace = namespace
	}
	path := filepath.Join(dir, "kubeconfig")
	return path, clientcmd.WriteToFile(*kc, path)
}

func (o *orchestrator) setup(ctx context.Context) error {
	if _, err := o.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: namespace},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	for s, limit := range semaphoreLimits {
		for _, slot := range slotNames(s) {
			if err := createFence(ctx, o.admin, namespace, slot); err != nil {
				return err
			}
		}
		if _, _, err := o.locks.CreateSemaphore(ctx, namespace, s, lock.SemaphoreOptions{Limit: limit, TTL: semaphoreTTLs[s]}); err != nil {
			return err
		}
	}
	for m, ttl := range mutexTTLs {
		if err := createFence(ctx, o.admin, namespace, m); err != nil {
			return err
		}
		if _, _, err := o.locks.Create(ctx, namespace, m, lock.CreateOptions{TTL: ttl, Fair: fairMutexes[m]}); err != nil {
			return err
		}
	}
	return nil
}

func (o *orchestrator) workerConfigs(kubeconfig string) []workerConfig {
	base := workerConfig{Namespace: namespace, Kubeconfig: kubeconfig, History: o.historyDir, Koncli: o.koncli, Timeout: 15 * time.Second}
	mk := func(kind, mutex string, f func(*workerConfig)) workerConfig {
		w := base
		w.Kind, w.Mutex, w.TTL = kind, mutex, mutexTTLs[mutex]
		if _, ok := semaphoreLimits[mutex]; ok {
			w.TTL = semaphoreTTLs[mutex] // a crashed holder's slot frees after it
		}
		if f != nil {
			f(&w)
		}
		return w
	}
	ws := []workerConfig{
		mk("with", "ttl-a", nil),
		mk("lock", "ttl-a", nil),
		mk("koncli", "ttl-a", nil),
		mk("with", "ttl-b", func(w *workerConfig) { w.Skew = 7 * time.Minute }),
		mk("koncli", "ttl-b", nil),
		mk("lock", "ttl-b", func(w *workerConfig) { w.Timeout = 4 * time.Second }),
		mk("with", "nottl", nil),
		mk("koncli", "nottl", func(w *workerConfig) { w.Timeout = 6 * time.Second }),
		mk("lock", "nottl", func(w *workerConfig) { w.Timeout = 5 * time.Second }),
		mk("with", "fair", nil),
		mk("lock", "fair", func(w *workerConfig) { w.Skew = -5 * time.Minute }),
		mk("koncli", "fair", nil),
		mk("with", "fair", nil),
		mk("sem-with", "sem", nil),
		mk("sem-with", "sem", func(w *workerConfig) { w.Skew = 3 * time.Minute }),
		mk("sem-with", "sem", nil),
		mk("sem-with", "sem", func(w *workerConfig) { w.Timeout = 5 * time.Second }),
	}
	if o.selfTestNoLock {
		ws = append(ws, mk("nolock", "ttl-a", nil))
	}
	for i := range ws {
		ws[i].Name = fmt.Sprintf("w%d", i)
	}
	return ws
}

func (o *orchestrator) start(p *workerProc) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(o.logDir, p.cfg.Name+".log"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(self, p.cfg.args()...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Own process group, so that a kill takes koncli along; parent-death
	// signal, so that nothing outlives the orchestrator.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return err
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return nil
}

// stopWorkers asks every worker to stop (SIGTERM: it finishes or abandons
// its wait, unlocks and exits) and kills those that do not within 30s.
func (o *orchestrator) stopWorkers() {
	for _, p := range o.workers {
		_ = p.cmd.Process.Signal(syscall.SIGCONT)
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
	}
	deadline := time.After(30 * time.Second)
	for _, p := range o.workers {
		select {
		case <-p.done:
		case <-deadline:
			o.logf("worker %s did not stop; killing it", p.cfg.Name)
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
	}
}

// retry calls f until it succeeds or ctx ends (the API server may be
// restarting).
func retry(ctx context.Context, f func(context.Context) error) error {
	for {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := f(rctx)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// final waits out the largest TTL plus the margin, then records each mutex's
// phase and its store's content.
func (o *orchestrator) final(ctx context.Context) error {
	var maxTTL time.Duration
	for _, t := range mutexTTLs {
		maxTTL = max(maxTTL, t)
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(maxTTL + endMargin):
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for m, ttl := range mutexTTLs {
		var st lock.Status
		var cm *corev1.ConfigMap
		err := retry(ctx, func(ctx context.Context) (err error) {
			if st, err = o.locks.Get(ctx, namespace, m); err != nil {
				return err
			}
			cm, err = o.admin.CoreV1().ConfigMaps(namespace).Get(ctx, fenceName(m), metav1.GetOptions{})
			return err
		})
		if err != nil {
			return fmt.Errorf("final reading of %s: %w", m, err)
		}
		rv, _ := strconv.ParseInt(cm.ResourceVersion, 10, 64)
		o.hist.add(record{Kind: "end", Mutex: m, Phase: string(st.Phase), Holder: st.Holder, Token: st.Token,
			TTL: int64(ttl), Value: cm.Data["value"], RV: rv})
	}
	// A semaphore's slots end like mutexes: each with its holder (if any)
	// and its store.
	for s := range semaphoreLimits {
		var st lock.SemaphoreStatus
		if err := retry(ctx, func(ctx context.Context) (err error) {
			st, err = o.locks.GetSemaphore(ctx, namespace, s)
			return err
		}); err != nil {
			return fmt.Errorf("final reading of %s: %w", s, err)
		}
		for k, slot := range slotNames(s) {
			var cm *corev1.ConfigMap
			if err := retry(ctx, func(ctx context.Context) (err error) {
				cm, err = o.admin.CoreV1().ConfigMaps(namespace).Get(ctx, fenceName(slot), metav1.GetOptions{})
				return err
			}); err != nil {
				return fmt.Errorf("final reading of %s: %w", slot, err)
			}
			end := record{Kind: "end", Mutex: slot, Phase: string(lock.PhaseUnlocked), TTL: int64(semaphoreTTLs[s]), Value: cm.Data["value"]}
			end.RV, _ = strconv.ParseInt(cm.ResourceVersion, 10, 64)
			for _, h := range st.Holders {
				if h.Slot == k {
					end.Phase, end.Holder, end.Token = string(h.Phase), h.Holder, h.Token
				}
			}
			o.hist.add(end)
		}
	}
	return nil
}
