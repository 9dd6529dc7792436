package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

const namespace = "soak"

type orchestrator struct {
	duration                         time.Duration
	workers, held, waiters, parkedOn int
	handoff, contenders              int
	ttl, holdFor, sample             time.Duration
	env                              *harness.Env
	admin                            kubernetes.Interface
	apiserverPID                     int
	logDir                           string
	procs                            []*workerProc
	col                              collector
	marks                            []mark
	apiSamples                       []procSample
	loads                            []float64 // the host's 1-minute load average
	selfTestSteal                    bool
	apiSamplesMu                     sync.Mutex
}

// mark is a moment of the run with the API server's counters then.
type mark struct {
	name     string
	t        time.Time
	requests map[string]float64 // leases requests by verb, cumulative
	watches  float64            // open lease watches
	proc     procSample
}

type workerProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan struct{}
}

// collector keeps every event the workers report.
type collector struct {
	mu     sync.Mutex
	events []event
}

func (c *collector) add(ev event) {
	c.mu.Lock()
	c.events = append(c.events, ev)
	c.mu.Unlock()
}

func (c *collector) all() []event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]event(nil), c.events...)
}

func (c *collector) count(typ string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ev := range c.events {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

func (o *orchestrator) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s soak: %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// phases splits the run: the unloaded baseline, the quiet window (only
// held mutexes and parked waiters: the idle cost) and the loaded handoff
// phase, which takes the rest. The ramp-up of the load comes on top.
func (o *orchestrator) phases() (baseline, quiet, loaded time.Duration) {
	baseline = min(max(o.duration/10, 10*time.Second), time.Minute)
	quiet = 3 * o.ttl
	if o.duration < 5*time.Minute {
		quiet = 2 * o.ttl
	}
	loaded = max(o.duration-baseline-quiet, 10*time.Second)
	return baseline, quiet, loaded
}

func (o *orchestrator) run() (code int, err error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	work, err := os.MkdirTemp("", "konlease-soak-")
	if err != nil {
		return 0, err
	}
	// The workers' logs are kept when the run fails: they say why.
	defer func() {
		if code == 0 && err == nil {
			os.RemoveAll(work)
		} else {
			fmt.Fprintf(os.Stderr, "soak: the workers' logs are in %s\n", work)
		}
	}()
	o.logDir = work

	os.Unsetenv(harness.EnvKubeconfig) // always local: it reads the API server's process
	o.env, err = harness.Start(ctx, harness.Options{Logf: func(string, ...any) {}})
	if err != nil {
		return 0, err
	}
	defer o.env.Stop()
	for _, c := range o.env.Components() {
		if strings.Contains(c.Name, "apiserver") {
			o.apiserverPID = c.PID
		}
	}
	if o.apiserverPID == 0 {
		return 0, errors.New("no kube-apiserver process in the harness")
	}
	if o.admin, err = kubernetes.NewForConfig(o.env.Config()); err != nil {
		return 0, err
	}
	if _, err := o.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	baseline, quiet, loaded := o.phases()
	o.logf("%d workers: %d held (TTL %s), %d waiters on %d of them, %d handoff mutexes x %d contenders; baseline %s, quiet %s, loaded %s",
		o.workers, o.held, o.ttl, o.waiters, o.parkedOn, o.handoff, o.contenders, baseline, quiet, loaded)
	for i := range o.workers {
		p, err := o.start(o.workerConfig(i))
		if err != nil {
			return 0, err
		}
		o.procs = append(o.procs, p)
	}
	defer o.kill()
	sampling, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go o.sampleAPIServer(sampling)

	steps := []func() error{
		func() error { o.mark(ctx, "start"); return o.send("handoff") },
		func() error { return o.wait(ctx, baseline) },
		func() error { o.mark(ctx, "baseline-end"); return o.send("load") },
		func() error { return o.await(ctx, "ready", 5*time.Minute) },
		func() error { o.mark(ctx, "loaded"); return o.send("pause") },
		func() error { return o.await(ctx, "paused", 2*time.Minute) },
		func() error { o.mark(ctx, "quiet-start"); return o.steal(ctx) },
		func() error { return o.wait(ctx, quiet) },
		func() error { o.mark(ctx, "quiet-end"); return o.send("resume") },
		func() error { o.mark(ctx, "loaded-start"); return o.wait(ctx, loaded) },
		func() error { o.mark(ctx, "end"); return o.send("stop") },
		func() error { return o.await(ctx, "stopped", 3*time.Minute) },
	}
	for _, step := range steps {
		if err := step(); err != nil {
			return 0, err
		}
	}
	for _, p := range o.procs {
		<-p.done
	}
	stopSampling()
	r := o.report()
	r.print(os.Stdout)
	if r.failures() > 0 {
		fmt.Printf("FAIL: %d safety or leak failures\n", r.failures())
		return 1, nil
	}
	fmt.Println("PASS: no hold lost or duplicated, no overlapping sections, no goroutine growth")
	return 0, nil
}

// workerConfig gives worker i its share of each kind of load.
func (o *orchestrator) workerConfig(i int) workerConfig {
	share := func(n int) span { return span{Lo: n * i / o.workers, Hi: n * (i + 1) / o.workers} }
	return workerConfig{
		Name: fmt.Sprintf("w%d", i), Kubeconfig: o.env.AdminKubeconfig(), Namespace: namespace,
		TTL: o.ttl, HoldFor: o.holdFor, Sample: o.sample,
		Held: share(o.held), Waiters: share(o.waiters), ParkedOn: o.parkedOn,
		Contenders: share(o.handoff * o.contenders), HandoffMutexes: o.handoff,
	}
}

func (o *orchestrator) start(w workerConfig) (*workerProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.logDir, w.Name+".log"))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-mode", "worker", "-worker", w.Name, "-kubeconfig", w.Kubeconfig,
		"-namespace", w.Namespace, "-worker-ttl", w.TTL.String(), "-worker-hold-for", w.HoldFor.String(),
		"-worker-sample", w.Sample.String(), "-held-span", w.Held.String(), "-waiter-span", w.Waiters.String(),
		"-worker-parked-on", fmt.Sprint(w.ParkedOn), "-contender-span", w.Contenders.String(),
		"-worker-handoff", fmt.Sprint(w.HandoffMutexes))
	cmd.Stderr = logf
	// Nothing outlives the orchestrator.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	p := &workerProc{name: w.Name, cmd: cmd, stdin: stdin, done: make(chan struct{})}
	go func() {
		lines := bufio.NewScanner(stdout)
		lines.Buffer(make([]byte, 1<<16), 1<<20)
		for lines.Scan() {
			var ev event
			if err := json.Unmarshal(lines.Bytes(), &ev); err != nil {
				o.col.add(event{Type: "error", Worker: w.Name, Err: "bad line: " + lines.Text()})
				continue
			}
			o.col.add(ev)
		}
		if err := cmd.Wait(); err != nil {
			o.col.add(event{Type: "error", Worker: w.Name, Err: fmt.Sprintf("exited: %v (log %s)", err, logf.Name())})
		}
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

func (o *orchestrator) kill() {
	for _, p := range o.procs {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

func (o *orchestrator) send(cmd string) error {
	o.logf("%s", cmd)
	for _, p := range o.procs {
		if _, err := fmt.Fprintln(p.stdin, cmd); err != nil {
			return fmt.Errorf("%s: %s: %w", p.name, cmd, err)
		}
	}
	return nil
}

func (o *orchestrator) wait(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await polls until every worker has reported an event of type typ
// (ready, paused, stopped: once each per run).
func (o *orchestrator) await(ctx context.Context, typ string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	want := len(o.procs) // each comes once per worker
	for o.col.count(typ) < want {
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d workers reported %s within %s", o.col.count(typ), want, typ, limit)
		}
		if err := o.wait(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	return nil
}

func (o *orchestrator) mark(ctx context.Context, name string) {
	m := mark{name: name, t: time.Now()}
	var err error
	if m.requests, m.watches, err = scrape(ctx, o.admin); err != nil {
		o.logf("metrics at %s: %v", name, err)
	}
	m.proc, _ = readProc(o.apiserverPID)
	o.marks = append(o.marks, m)
}

func (o *orchestrator) sampleAPIServer(ctx context.Context) {
	t := time.NewTicker(o.sample)
	defer t.Stop()
	for {
		s, err := readProc(o.apiserverPID)
		load, lerr := loadAverage()
		o.apiSamplesMu.Lock()
		if err == nil {
			o.apiSamples = append(o.apiSamples, s)
		}
		if lerr == nil {
			o.loads = append(o.loads, load)
		}
		o.apiSamplesMu.Unlock()
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// steal, in the self-test, force-unlocks a held mutex under its holder: the
// run must then fail, which shows that it sees a lost hold.
func (o *orchestrator) steal(ctx context.Context) error {
	if !o.selfTestSteal {
		return nil
	}
	c, err := lock.NewForConfig(o.env.Config())
	if err != nil {
		return err
	}
	o.logf("self-test: force-unlocking %s", heldName(0))
	_, err = c.ForceUnlock(ctx, namespace, heldName(0))
	return err
}
