//go:build e2e

package node

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/e2e/node/record"
	"github.com/konlease/konlease/lock"
)

// TestHolderKilledTakeoverAfterTTL kills the db-migration pod's processes
// with SIGKILL while it holds the mutex (no signal, no unlock, as after an
// OOM kill): a pod of a second db-migration Job that waits on the mutex
// takes it over once the manifest's --ttl has run out since the killed
// holder's last renewal, and not before.
func TestHolderKilledTakeoverAfterTTL(t *testing.T) {
	require(t, true)
	t.Parallel()
	ns, _ := setup(t)
	rec := newRecord(t, ns, "migrate", record.Record{UntilReleased: true})
	first, second := migrationJob(t, "killed"), migrationJob(t, "waiting")
	ttl := ttlArg(t, first)
	createJob(t, ns, first)
	holder := inside(t, ns, rec)
	createJob(t, ns, second)
	poll(t, "the second Job's pod waits for the mutex", func(ctx context.Context) (bool, error) {
		pods, err := jobPods(ctx, ns, second.Name)
		if err != nil || len(pods) == 0 || pods[0].Status.Phase != corev1.PodRunning {
			return false, err
		}
		out, err := s.env.Client().CoreV1().Pods(ns).GetLogs(pods[0].Name, &corev1.PodLogOptions{}).Do(ctx).Raw()
		return err == nil && strings.Contains(string(out), "waiting for mutex"), nil
	})

	pod, err := s.env.Client().CoreV1().Pods(ns).Get(t.Context(), holder.Pod, metav1.GetOptions{})
	if err != nil || len(pod.Status.ContainerStatuses) != 1 {
		t.Fatalf("holder pod %s: %v", holder.Pod, err)
	}
	if err := s.env.KillContainer(t.Context(), pod.Status.ContainerStatuses[0].ContainerID); err != nil {
		t.Fatal(err)
	}
	poll(t, "the killed container has terminated", func(ctx context.Context) (bool, error) {
		p, err := s.env.Client().CoreV1().Pods(ns).Get(ctx, holder.Pod, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		code, done := terminated(p)
		if done && code != 137 {
			t.Fatalf("killed container exited %d, want 137 (SIGKILL)", code)
		}
		return done, nil
	})
	// The holder is dead: its critical section is over, though it could
	// not say so itself.
	err = record.Update(t.Context(), s.env.Client(), ns, rec, func(r *record.Record) error {
		r.Exit(holder, "killed by the test (SIGKILL)", time.Now().UTC())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	killed := mutexStatus(t, t.Context(), ns, "db-migration")
	if killed.Holder != holder.Holder || killed.TTL != ttl {
		t.Fatalf("mutex after the kill: holder %q TTL %s, want %q and the manifest's %s", killed.Holder, killed.TTL, holder.Holder, ttl)
	}
	lastRenew := killed.RenewedAt

	var next lock.Status
	poll(t, "a waiting pod takes the mutex over", func(ctx context.Context) (bool, error) {
		next = mutexStatus(t, ctx, ns, "db-migration")
		return next.Holder != holder.Holder && next.Phase == lock.PhaseLocked, nil
	})
	after := next.LockedAt.Sub(lastRenew)
	t.Logf("takeover %s after the killed holder's last renewal (TTL %s)", after.Round(time.Millisecond), ttl)
	if after < ttl {
		t.Errorf("taken over by %s %s after the last renewal, before the TTL %s ran out", next.Holder, after, ttl)
	}
	if after > ttl+30*time.Second {
		t.Errorf("taken over only %s after the last renewal (TTL %s)", after, ttl)
	}
	release(t, ns, rec)
	for _, j := range []string{first.Name, second.Name} {
		// The killed pod failed; its Job's retry (backoffLimit) migrates.
		if end := jobEnd(t, ns, j); end != batchv1.JobComplete {
			t.Errorf("Job %s: %s, want %s", j, end, batchv1.JobComplete)
		}
	}
	wantClean(t, getRecord(t, t.Context(), ns, rec))
}

// ttlArg is the --ttl of the Job's koncli command line.
func ttlArg(t *testing.T, j *batchv1.Job) time.Duration {
	t.Helper()
	cmd := j.Spec.Template.Spec.Containers[0].Command
	for i, a := range cmd {
		if a == "--ttl" && i+1 < len(cmd) {
			d, err := time.ParseDuration(cmd[i+1])
			if err != nil {
				t.Fatalf("--ttl %q: %v", cmd[i+1], err)
			}
			return d
		}
	}
	t.Fatalf("no --ttl in %v", cmd)
	return 0
}

// TestKoncliImageInPod runs the koncli image of make image in pods as the
// ServiceAccount of examples/rbac: koncli mutex lock's default holder is
// the pod's name, and the Role's rights are all it has.
func TestKoncliImageInPod(t *testing.T) {
	require(t, false)
	t.Parallel()
	ns, sa := setup(t)
	tests := []struct {
		name     string
		args     []string
		wantExit int32
		wantLog  string
		check    func(t *testing.T, pod string)
	}{
		{
			name: "lock's default holder is the pod's name",
			args: []string{"mutex", "lock", "pod-identity", "--timeout", "0"},
			check: func(t *testing.T, pod string) {
				if st := mutexStatus(t, t.Context(), ns, "pod-identity"); st.Holder != pod {
					t.Errorf("holder %q, want the pod's name %q", st.Holder, pod)
				}
			},
		},
		{
			name:     "no rights outside its namespace",
			args:     []string{"mutex", "list", "-n", metav1.NamespaceDefault},
			wantExit: 1,
			wantLog:  "forbidden",
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p := runPod(t, ns, sa, s.images[koncliArchive], "koncli-"+string(rune('a'+i)), nil, tt.args)
			if code, _ := terminated(p); code != tt.wantExit {
				t.Errorf("koncli %s: exit %d, want %d\n%s", strings.Join(tt.args, " "), code, tt.wantExit, logs(t, ns, p.Name))
			}
			if out := logs(t, ns, p.Name); !strings.Contains(out, tt.wantLog) {
				t.Errorf("koncli %s: output lacks %q:\n%s", strings.Join(tt.args, " "), tt.wantLog, out)
			}
			if tt.check != nil {
				tt.check(t, p.Name)
			}
		})
	}
}

// TestExampleProgramInPod runs examples/with, built into an image, as a
// pod with the ServiceAccount of examples/rbac.
func TestExampleProgramInPod(t *testing.T) {
	require(t, false)
	t.Parallel()
	ns, sa := setup(t)
	p := runPod(t, ns, sa, s.images[exampleArchive], "example-with", nil,
		[]string{"--name", "with-pod", "--steps", "2", "--step", "100ms"})
	out := logs(t, ns, p.Name)
	if code, _ := terminated(p); code != 0 {
		t.Fatalf("examples/with exited %d:\n%s", code, out)
	}
	for _, want := range []string{"fencing token 1\n", "step 2/2 done under token 1", "is unlocked"} {
		if !strings.Contains(out, want) {
			t.Errorf("examples/with output lacks %q:\n%s", want, out)
		}
	}
	if st := mutexStatus(t, t.Context(), ns, "with-pod"); st.Phase != lock.PhaseUnlocked || st.Token != 1 {
		t.Errorf("mutex with-pod: phase %s token %d, want %s and 1", st.Phase, st.Token, lock.PhaseUnlocked)
	}
}

// runPod runs a pod of one container with the image's entrypoint and args
// (or command), as serviceAccount, and waits until it has terminated.
func runPod(t *testing.T, ns, serviceAccount, image, name string, command, args []string) *corev1.Pod {
	t.Helper()
	pods := s.env.Client().CoreV1().Pods(ns)
	_, err := pods.Create(t.Context(), &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName: serviceAccount,
			RestartPolicy:      corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "main", Image: image, ImagePullPolicy: corev1.PullNever, Command: command, Args: args,
			}},
			TerminationGracePeriodSeconds: ptr.To[int64](5),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var p *corev1.Pod
	poll(t, "pod "+name+" terminates", func(ctx context.Context) (bool, error) {
		p, err = pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if err := unusableImage(p); err != nil {
			t.Fatal(err)
		}
		_, done := terminated(p)
		return done, nil
	})
	wantServiceAccount(t, []corev1.Pod{*p}, serviceAccount)
	return p
}
