//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/lock/lockmetrics"
)

// TestMetrics scrapes a registry after real locking: acquisitions by
// result, holds ended by how, renewals, conflicts, and the gauges.
func TestMetrics(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	rec := lockmetrics.New()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(rec)
	c := newClient(t, env.Config(), lock.WithMetrics(rec))
	ctx := t.Context()

	a := newMutex(t, c, ns, "m", lock.WithHolder("a"), lock.WithTTL(2*time.Second))
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if got := gaugeValue(t, reg, "konlease_holds", ns, "m"); got != 1 {
		t.Errorf("konlease_holds while held: %v, want 1", got)
	}
	b := newMutex(t, c, ns, "m", lock.WithHolder("b"))
	if err := b.TryLock(ctx); !errors.Is(err, lock.ErrLocked) {
		t.Fatal(err)
	}
	// A renewal: a third of the TTL in.
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		return counter(t, reg, "konlease_renewals_total", "result", "ok") >= 1, nil
	}); err != nil {
		t.Fatalf("no renewal counted: %v", err)
	}
	// Lost: force-unlocked by an operator.
	if _, err := c.ForceUnlock(ctx, ns, "m"); err != nil {
		t.Fatal(err)
	}
	<-a.Done()
	// Released.
	if err := b.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	// Conflicts: two handles racing for a free mutex, until one write
	// loses (nearly always at once).
	for i := 0; counter(t, reg, "konlease_conflicts_total", "", "") == 0 && i < 100; i++ {
		var wg sync.WaitGroup
		for _, h := range []string{"r1", "r2"} {
			m := newMutex(t, c, ns, "race", lock.WithHolder(h))
			wg.Add(1)
			go func() {
				defer wg.Done()
				if m.TryLock(ctx) == nil {
					_ = m.Unlock(ctx)
				}
			}()
		}
		wg.Wait()
	}
	for _, want := range []struct {
		metric, label, value string
		min                  float64
	}{
		{"konlease_acquisitions_total", "result", "acquired", 2},
		{"konlease_acquisitions_total", "result", "busy", 1},
		{"konlease_holds_ended_total", "end", "force-unlocked", 1},
		{"konlease_holds_ended_total", "end", "released", 1},
		{"konlease_conflicts_total", "", "", 1},
	} {
		if got := counter(t, reg, want.metric, want.label, want.value); got < want.min {
			t.Errorf("%s{%s=%q}: %v, want at least %v", want.metric, want.label, want.value, got, want.min)
		}
	}
	if got := gaugeValue(t, reg, "konlease_holds", ns, "m"); got != 0 {
		t.Errorf("konlease_holds after every hold ended: %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(reg, "konlease_hold_duration_seconds"); err != nil || n == 0 {
		t.Errorf("hold duration histogram: %d series, %v", n, err)
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("metrics lint: %v %v", problems, err)
	}
}

// gaugeValue is the value of gauge metric for namespace/name.
func gaugeValue(t *testing.T, reg *prometheus.Registry, metric, ns, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			if labels["namespace"] == ns && labels["name"] == name {
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

// counter sums the series of metric whose label has value (label "": all).
func counter(t *testing.T, reg *prometheus.Registry, metric, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := label == ""
			for _, lp := range m.GetLabel() {
				ok = ok || (lp.GetName() == label && lp.GetValue() == value)
			}
			if ok {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestEvents: the story of a mutex as Events on its Lease; an identity
// that may not create events records none, and locks as well.
func TestEvents(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config(), lock.WithEvents())
	ctx := t.Context()
	a := newMutex(t, c, ns, "m", lock.WithHolder("alice"), lock.WithTTL(time.Second), lock.WithoutRenewal())
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	<-a.Done() // no renewal: lost when its TTL could run out
	b := newMutex(t, c, ns, "m", lock.WithHolder("bob"))
	if err := b.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ForceUnlock(ctx, ns, "m"); err != nil {
		t.Fatal(err)
	}
	<-b.Done()
	if err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(ctx); err != nil { // flushes the events
		t.Fatal(err)
	}
	want := []string{lock.EventAcquired, lock.EventForceUnlocked, lock.EventLost, lock.EventReleased, lock.EventTakenOver}
	var got []string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		got = eventReasons(t, ns, "m")
		return slices.Equal(got, want), nil
	}); err != nil {
		t.Fatalf("events on lease m: %v, want %v", got, want)
	}
	notes := strings.Join(eventNotes(t, ns, "m"), "\n")
	for _, s := range []string{`"bob" took it over from "alice"`, `"bob" was evicted`, `"alice" released it`} {
		if !strings.Contains(notes, s) {
			t.Errorf("event notes lack %q:\n%s", s, notes)
		}
	}

	// Without the verb: no event, no error, the lock works.
	quiet := newClient(t, env.Identity(t, ns, "get", "update", "create", "watch"), lock.WithEvents())
	q := newMutex(t, quiet, ns, "quiet", lock.WithHolder("q"))
	if err := q.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := q.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := quiet.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if r := eventReasons(t, ns, "quiet"); len(r) != 0 {
		t.Errorf("an identity without the events verb recorded %v", r)
	}
}

// eventReasons are the distinct reasons of the Events regarding lease ns/name.
func eventReasons(t *testing.T, ns, name string) []string {
	t.Helper()
	seen := map[string]bool{}
	for _, e := range events(t, ns, name) {
		seen[e[0]] = true
	}
	var out []string
	for r := range seen {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func eventNotes(t *testing.T, ns, name string) []string {
	t.Helper()
	var out []string
	for _, e := range events(t, ns, name) {
		out = append(out, e[1])
	}
	return out
}

func events(t *testing.T, ns, name string) [][2]string {
	t.Helper()
	list, err := admin(t).EventsV1().Events(ns).List(t.Context(), metav1.ListOptions{FieldSelector: "regarding.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	var out [][2]string
	for _, e := range list.Items {
		out = append(out, [2]string{e.Reason, e.Note})
	}
	return out
}

// TestExampleMetrics runs examples/metrics as a user would, scrapes its
// /metrics after a round of work, and stops it with SIGTERM.
func TestExampleMetrics(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	bin := filepath.Join(buildExamples(t, "metrics"), "metrics")
	cmd := exec.CommandContext(t.Context(), bin, "--kubeconfig", env.AdminKubeconfig(), "-n", ns, "--name", "work", "--listen", "127.0.0.1:0")
	cmd.Env = cliEnviron(t, nil)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var url string
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "serving metrics on "); ok {
			url = u
		}
		if strings.HasPrefix(line, "round 2 done") {
			break
		}
	}
	if url == "" {
		t.Fatalf("the program never said where it serves its metrics")
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`konlease_acquisitions_total{name="work",namespace="` + ns + `",result="acquired"}`,
		`konlease_holds_ended_total{end="released",name="work",namespace="` + ns + `"}`,
		`konlease_hold_duration_seconds_count{name="work",namespace="` + ns + `"}`,
		"go_goroutines",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("after SIGTERM: %v, want exit 0", err)
	}
}

// TestCLIEvents: koncli records Events by default, and none with
// --events=false.
func TestCLIEvents(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "run", "m", "--holder", "job-1", "--", "true"), 0, "", "")
	expectCLI(t, c.run("--events=false", "mutex", "run", "quiet", "--holder", "job-2", "--", "true"), 0, "", "")
	if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return slices.Equal(eventReasons(t, ns, "m"), []string{lock.EventAcquired, lock.EventReleased}), nil
	}); err != nil {
		t.Errorf("events of koncli mutex run: %v, want Acquired and Released", eventReasons(t, ns, "m"))
	}
	if r := eventReasons(t, ns, "quiet"); len(r) != 0 {
		t.Errorf("--events=false recorded %v", r)
	}
}
