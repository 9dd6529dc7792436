//go:build e2e

package node

import (
	"context"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/konlease/konlease/e2e/node/record"
	"github.com/konlease/konlease/lock"
)

// TestDaemonSetMaintenance runs examples/daemonset on the node while two
// other "nodes" (the test's own holders) hold both slots of the semaphore:
// the pod's init container waits, without entering; once one slot is
// released it takes that very slot (its token is the slot's next), runs
// maintain-node, gives the slot back when the step is done, and the pod
// goes on to its pause container. Only one node here, so the test shows
// the limit from the side of the waiter; e2e's semaphore tests show it
// with many processes.
func TestDaemonSetMaintenance(t *testing.T) {
	require(t, false)
	t.Parallel()
	ns, sa := setup(t)
	admin, err := lock.NewForConfig(s.env.Config())
	if err != nil {
		t.Fatal(err)
	}
	const name = "node-maintenance"
	// As the example's header says: the semaphore first, with its limit.
	if _, _, err := admin.CreateSemaphore(t.Context(), ns, name, lock.SemaphoreOptions{Limit: 2, TTL: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	others := map[string]*lock.Semaphore{}
	for _, holder := range []string{"node-a", "node-b"} {
		sem, err := admin.NewSemaphore(ns, name, lock.WithHolder(holder))
		if err != nil {
			t.Fatal(err)
		}
		if err := sem.Acquire(t.Context()); err != nil {
			t.Fatal(err)
		}
		others[holder] = sem
		t.Cleanup(func() { _ = sem.Release(context.WithoutCancel(t.Context())) })
	}
	rec := newRecord(t, ns, "maintain-node", record.Record{UntilReleased: true})

	ds := example[appsv1.DaemonSet](t, "examples/daemonset/daemonset.yaml", "DaemonSet", name)
	if _, err := s.env.Client().AppsV1().DaemonSets(ns).Create(t.Context(), ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The init container runs koncli, which waits: both slots are taken.
	var pod corev1.Pod
	poll(t, "the DaemonSet's pod running its init container", func(ctx context.Context) (bool, error) {
		p, err := daemonSetPod(ctx, ns, ds)
		if err != nil || p == nil {
			return false, err
		}
		if err := unusableImage(p); err != nil {
			t.Fatal(err)
		}
		pod = *p
		return len(p.Status.InitContainerStatuses) == 1 && p.Status.InitContainerStatuses[0].State.Running != nil, nil
	})
	wantServiceAccount(t, []corev1.Pod{pod}, sa)
	if r := getRecord(t, t.Context(), ns, rec); len(r.Entries) != 0 {
		t.Fatalf("maintain-node ran while both slots were held by others: %+v", r.Entries)
	}

	// node-a is done: its slot, and only it, goes to the pod.
	freed := others["node-a"].Slot()
	wantToken := others["node-a"].Token() + 1
	if err := others["node-a"].Release(t.Context()); err != nil {
		t.Fatal(err)
	}
	e := inside(t, ns, rec)
	if e.Pod != pod.Name || e.Token != wantToken {
		t.Errorf("inside: pod %s token %d, want %s with token %d (slot %d's next)", e.Pod, e.Token, pod.Name, wantToken, freed)
	}
	st, err := admin.GetSemaphore(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	holders := map[int]string{}
	for _, h := range st.Holders {
		holders[h.Slot] = h.Holder
	}
	if len(holders) != 2 || holders[freed] != e.Holder || holders[others["node-b"].Slot()] != "node-b" {
		t.Errorf("slots while the pod maintains: %v, want slot %d held by %q and node-b's kept", holders, freed, e.Holder)
	}

	// The step ends: the slot is given back, and the pod runs on.
	release(t, ns, rec)
	poll(t, "the pod past its init container, running", func(ctx context.Context) (bool, error) {
		p, err := daemonSetPod(ctx, ns, ds)
		if err != nil || p == nil {
			return false, err
		}
		pod = *p
		return p.Status.Phase == corev1.PodRunning && slices.ContainsFunc(p.Status.ContainerStatuses, func(c corev1.ContainerStatus) bool {
			return c.State.Running != nil
		}), nil
	})
	if ics := pod.Status.InitContainerStatuses; len(ics) != 1 || ics[0].State.Terminated == nil || ics[0].State.Terminated.ExitCode != 0 {
		t.Errorf("init container: %+v, want terminated with status 0", ics)
	}
	r := getRecord(t, t.Context(), ns, rec)
	wantClean(t, r)
	if len(r.Entries) != 1 || r.Entries[0].Outcome != "ok" {
		t.Errorf("record: %+v, want one maintenance, ok", r.Entries)
	}
	st, err = admin.GetSemaphore(t.Context(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Holders) != 1 || st.Holders[0].Holder != "node-b" {
		t.Errorf("holders after the step: %+v, want node-b alone", st.Holders)
	}
}

// daemonSetPod returns the DaemonSet's pod on the node, nil before there
// is one.
func daemonSetPod(ctx context.Context, ns string, ds *appsv1.DaemonSet) (*corev1.Pod, error) {
	pods, err := s.env.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: metav1.FormatLabelSelector(ds.Spec.Selector)})
	if err != nil || len(pods.Items) == 0 {
		return nil, err
	}
	return &pods.Items[0], nil
}
