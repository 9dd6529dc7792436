//go:build e2e

package node

// The example manifests run for real: pods on a node, koncli in them, as
// the ServiceAccount of examples/rbac with in-cluster configuration. The
// commands the manifests run under the mutex (./migrate, run-daily-job)
// are the workload of e2e/node/workload, which logs every critical section
// in a fenced record (package record): overlaps are detected by
// conditional writes, not by timing.

import (
	"context"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/e2e/manifests"
	"github.com/konlease/konlease/e2e/node/record"
	"github.com/konlease/konlease/lock"
)

// TestDBMigrationJobs starts copies of the db-migration Job at once: every
// pod waits on the mutex while one migrates, the migrations never overlap,
// the fencing tokens rise by one, all Jobs complete, and the mutex ends
// unlocked. The holders are koncli mutex run's default: the pod's name,
// its pid and a random suffix.
func TestDBMigrationJobs(t *testing.T) {
	require(t, false)
	t.Parallel()
	const copies = 4
	ns, sa := setup(t)
	rec := newRecord(t, ns, "migrate", record.Record{UntilReleased: true})
	var names []string
	for i := range copies {
		j := migrationJob(t, fmt.Sprint(i+1))
		createJob(t, ns, j)
		names = append(names, j.Name)
	}
	// All pods are up at once (one inside, the others waiting on the
	// mutex) before the first may finish.
	var pods []corev1.Pod
	poll(t, fmt.Sprintf("%d migration pods running at once", copies), func(ctx context.Context) (bool, error) {
		pods = pods[:0]
		for _, n := range names {
			ps, err := jobPods(ctx, ns, n)
			if err != nil {
				return false, err
			}
			for _, p := range ps {
				if err := unusableImage(&p); err != nil {
					t.Fatal(err)
				}
				if p.Status.Phase == corev1.PodRunning {
					pods = append(pods, p)
				}
			}
		}
		return len(pods) == copies, nil
	})
	wantServiceAccount(t, pods, sa)
	first := inside(t, ns, rec)
	release(t, ns, rec)

	for _, n := range names {
		if end := jobEnd(t, ns, n); end != batchv1.JobComplete {
			t.Errorf("Job %s: %s, want %s", n, end, batchv1.JobComplete)
		}
	}
	r := getRecord(t, t.Context(), ns, rec)
	wantClean(t, r)
	if len(r.Entries) != copies {
		t.Fatalf("record has %d critical sections, want %d (one per Job): %+v", len(r.Entries), copies, r.Entries)
	}
	podNames := map[string]bool{}
	for _, p := range pods {
		podNames[p.Name] = true
	}
	defaultHolder := regexp.MustCompile(`^(.+)-[0-9]+-[a-z0-9]+$`)
	for i, e := range r.Entries {
		if e.Token != int64(i+1) || e.Outcome != "ok" {
			t.Errorf("critical section %d: %s token %d outcome %q, want token %d and ok", i+1, e.Pod, e.Token, e.Outcome, i+1)
		}
		if m := defaultHolder.FindStringSubmatch(e.Holder); m == nil || m[1] != e.Pod || !podNames[e.Pod] {
			t.Errorf("critical section %d: holder %q, want koncli mutex run's default: the pod's name %q, its pid and a random suffix", i+1, e.Holder, e.Pod)
		}
	}
	if r.Entries[0].Pod != first.Pod {
		t.Errorf("first in the record %s, but %s was seen inside first", r.Entries[0].Pod, first.Pod)
	}
	if st := mutexStatus(t, t.Context(), ns, "db-migration"); st.Phase != lock.PhaseUnlocked || st.Token != copies {
		t.Errorf("mutex db-migration after the Jobs: phase %s token %d, want %s and %d", st.Phase, st.Token, lock.PhaseUnlocked, copies)
	}
}

// TestCronJobManualRuns makes two Jobs at once from each example CronJob's
// template, as `kubectl create job --from=cronjob/NAME` does: one runs the
// job, the other skips it while the first holds the mutex, and both end as
// manifests.CronJobSkips (the CronJob's comments) says.
func TestCronJobManualRuns(t *testing.T) {
	require(t, false)
	t.Parallel()
	for _, name := range slices.Sorted(maps.Keys(manifests.CronJobSkips)) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cronJobManualRuns(t, name, manifests.CronJobSkips[name])
		})
	}
}

func cronJobManualRuns(t *testing.T, name string, skip manifests.SkipOutcome) {
	ns, sa := setup(t)
	rec := newRecord(t, ns, "run-daily-job", record.Record{UntilReleased: true})
	cj := example[batchv1.CronJob](t, "examples/cronjob/cronjob.yaml", "CronJob", name)
	cj.Spec.Suspend = ptr.To(true)
	cj, err := s.env.Client().BatchV1().CronJobs(ns).Create(t.Context(), cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := []string{name + "-manual-1", name + "-manual-2"}
	for _, j := range jobs {
		createJob(t, ns, jobFromCronJob(cj, j))
	}

	// The one that ends first skipped: the other holds the mutex until
	// released.
	var skipper, runner string
	poll(t, "one of the manual runs ends", func(ctx context.Context) (bool, error) {
		for i, j := range jobs {
			job, err := s.env.Client().BatchV1().Jobs(ns).Get(ctx, j, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			if ended(job) != "" {
				skipper, runner = j, jobs[1-i]
				return true, nil
			}
		}
		return false, nil
	})
	holder := inside(t, ns, rec)
	runnerPods, err := jobPods(t.Context(), ns, runner)
	if err != nil || len(runnerPods) != 1 || runnerPods[0].Name != holder.Pod {
		t.Fatalf("the running Job %s has pods %v (%v); want the one inside the record, %s", runner, podNamesOf(runnerPods), err, holder.Pod)
	}

	// The skipped run, as the example says.
	wantEnd := batchv1.JobComplete
	if skip.ExitCode != 0 && ptr.Deref(cj.Spec.JobTemplate.Spec.BackoffLimit, 6) == 0 {
		wantEnd = batchv1.JobFailed
	}
	if end := jobEnd(t, ns, skipper); end != wantEnd {
		t.Errorf("skipped run %s: Job %s, want %s", skipper, end, wantEnd)
	}
	skipPods, err := jobPods(t.Context(), ns, skipper)
	if err != nil || len(skipPods) != 1 {
		t.Fatalf("skipped run %s: pods %v (%v), want one", skipper, podNamesOf(skipPods), err)
	}
	if code, ok := terminated(&skipPods[0]); !ok || int(code) != skip.ExitCode {
		t.Errorf("skipped run %s: exit code %d (terminated %v), want %d", skipPods[0].Name, code, ok, skip.ExitCode)
	}
	out := logs(t, ns, skipPods[0].Name)
	if !strings.Contains(out, skip.Stdout) || !strings.Contains(out, skip.Stderr) || strings.Contains(out, " entered ") {
		t.Errorf("skipped run %s: output %q, want %q, %q and no critical section", skipPods[0].Name, out, skip.Stdout, skip.Stderr)
	}
	// Held by the running pod, under its own name (the script passes
	// $HOSTNAME; koncli mutex run's default starts with it).
	st := mutexStatus(t, t.Context(), ns, skip.Mutex)
	if st.Phase != lock.PhaseLocked || !strings.HasPrefix(st.Holder, holder.Pod) {
		t.Errorf("mutex %s while %s runs: phase %s holder %q, want Locked by it", skip.Mutex, holder.Pod, st.Phase, st.Holder)
	}

	release(t, ns, rec)
	if end := jobEnd(t, ns, runner); end != batchv1.JobComplete {
		t.Errorf("running Job %s: %s, want %s", runner, end, batchv1.JobComplete)
	}
	wantServiceAccount(t, append(runnerPods, skipPods...), sa)
	r := getRecord(t, t.Context(), ns, rec)
	wantClean(t, r)
	if len(r.Entries) != 1 || r.Entries[0].Outcome != "ok" {
		t.Errorf("record: %+v, want one critical section that ended ok", r.Entries)
	}
	if st := mutexStatus(t, t.Context(), ns, skip.Mutex); st.Phase != lock.PhaseUnlocked {
		t.Errorf("mutex %s after both runs: %s, want %s", skip.Mutex, st.Phase, lock.PhaseUnlocked)
	}
}

func podNamesOf(pods []corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

// TestPodDeletedWhileHolding deletes the db-migration pod while
// ./migrate runs under the lock: kubelet's SIGTERM reaches koncli, which
// passes it on to ./migrate (the record shows it stopped by the signal)
// and unlocks once it has exited, within the grace period the manifest
// gives the pod.
func TestPodDeletedWhileHolding(t *testing.T) {
	require(t, false)
	t.Parallel()
	ns, _ := setup(t)
	rec := newRecord(t, ns, "migrate", record.Record{UntilReleased: true})
	j := migrationJob(t, "deleted")
	grace := time.Duration(ptr.Deref(j.Spec.Template.Spec.TerminationGracePeriodSeconds, 30)) * time.Second
	createJob(t, ns, j)
	holder := inside(t, ns, rec)

	deleted := time.Now()
	if err := s.env.Client().CoreV1().Pods(ns).Delete(t.Context(), holder.Pod, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	var released time.Duration
	poll(t, "mutex released after the pod's deletion", func(ctx context.Context) (bool, error) {
		st := mutexStatus(t, ctx, ns, "db-migration")
		if st.Holder == holder.Holder {
			return false, nil
		}
		released = time.Since(deleted)
		return true, nil
	})
	t.Logf("delete to release: %s (grace period %s)", released.Round(time.Millisecond), grace)
	if released >= grace {
		t.Errorf("released %s after the deletion, not within the grace period %s", released, grace)
	}
	r := getRecord(t, t.Context(), ns, rec)
	if len(r.Entries) == 0 || r.Entries[0].Pod != holder.Pod || r.Entries[0].Outcome != "signal: terminated" {
		t.Errorf("record: %+v, want %s first, stopped by SIGTERM", r.Entries, holder.Pod)
	}
	// The Job replaces the pod; the replacement migrates and completes.
	release(t, ns, rec)
	if end := jobEnd(t, ns, j.Name); end != batchv1.JobComplete {
		t.Errorf("Job %s after the replacement pod: %s, want %s", j.Name, end, batchv1.JobComplete)
	}
	wantClean(t, getRecord(t, t.Context(), ns, rec))
}
