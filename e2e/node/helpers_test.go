//go:build e2e

package node

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/e2e/manifests"
	"github.com/konlease/konlease/e2e/node/record"
	"github.com/konlease/konlease/lock"
)

// What the tests change in the example manifests, and nothing else:
//
//   - the namespace: each test has a fresh one, with examples/rbac applied
//     in it (the kustomization's namespace is a placeholder);
//   - the image: my-app:latest (a placeholder for "your app image with
//     koncli in it") becomes the node tests' app image, which is the koncli
//     image of make image plus the stand-ins for ./migrate,
//     run-daily-job and maintain-node and busybox's sh, and the stock
//     pause image the node's own; with imagePullPolicy Never, because
//     nothing can be pulled here and a missing image should fail at once;
//   - Job names: several copies of the db-migration Job run at once (as
//     several deploys would start them), so each gets a suffix;
//   - CronJobs are created suspended, so that the controller's own
//     scheduled run cannot join the test's manual runs.
//
// Nothing about the network needs changing: on the local node the
// kubernetes Service's ClusterIP is the API server's own address (see
// package harness), so the pods' in-cluster configuration works as is.
const placeholderImage = "my-app:latest"

// pollInterval paces the waits for pods, Jobs and the record.
const pollInterval = 200 * time.Millisecond

// podWait bounds a wait for a pod or a Job of a test.
const podWait = 4 * time.Minute

// setup returns a fresh namespace with examples/rbac applied, and the name
// of the ServiceAccount that examples/rbac creates.
func setup(t *testing.T) (ns, serviceAccount string) {
	t.Helper()
	requireImages(t)
	ns = s.env.PodNamespace(t)
	objs, err := manifests.RBAC(root(t))
	if err != nil {
		t.Fatal(err)
	}
	a, err := manifests.NewApplier(s.env.Config())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := a.Create(t.Context(), ns, o, false); err != nil {
			t.Fatal(err)
		}
		if o.GetKind() == "ServiceAccount" {
			serviceAccount = o.GetName()
		}
	}
	if serviceAccount == "" {
		t.Fatal("examples/rbac has no ServiceAccount")
	}
	return ns, serviceAccount
}

// requireImages skips the test on an external cluster whose nodes lack the
// images (make e2e-kind loads them; the local node imports them).
var imagesChecked struct {
	once    sync.Once
	missing []string
	err     error
}

func requireImages(t *testing.T) {
	t.Helper()
	if _, local := s.env.Node(); local {
		return
	}
	imagesChecked.once.Do(func() {
		nodes, err := s.env.Client().CoreV1().Nodes().List(context.Background(), metav1.ListOptions{})
		if err != nil {
			imagesChecked.err = err
			return
		}
		have := map[string]bool{}
		for _, n := range nodes.Items {
			for _, img := range n.Status.Images {
				for _, name := range img.Names {
					have[name] = true
					have[strings.TrimPrefix(name, "docker.io/")] = true
					have[strings.TrimPrefix(name, "docker.io/library/")] = true
				}
			}
		}
		for _, name := range s.images {
			if !have[name] {
				imagesChecked.missing = append(imagesChecked.missing, name)
			}
		}
	})
	if imagesChecked.err != nil {
		t.Fatalf("list nodes: %v", imagesChecked.err)
	}
	if len(imagesChecked.missing) > 0 {
		t.Skipf("SKIPPED: the cluster's nodes lack the images %v: load bin/images/*.tar into them (make e2e-kind does)", imagesChecked.missing)
	}
}

func root(t *testing.T) string {
	t.Helper()
	r, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// example reads the object kind/name from an example manifest (a path
// relative to the repository), as a typed object, with the image
// substituted.
func example[T any](t *testing.T, path, kind, name string) *T {
	t.Helper()
	objs, err := manifests.Read(filepath.Join(root(t), path))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.GetKind() != kind || o.GetName() != name {
			continue
		}
		substituteImage(t, o)
		var typed T
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &typed); err != nil {
			t.Fatalf("%s %s: %v", kind, name, err)
		}
		return &typed
	}
	t.Fatalf("%s has no %s %s", path, kind, name)
	return nil
}

// substituteImage replaces the placeholder image in every container and
// init container, and the stock pause image (the DaemonSet's container
// that keeps the pod once its step is done) by the node's own.
func substituteImage(t *testing.T, o *unstructured.Unstructured) {
	t.Helper()
	n := 0
	for _, field := range []string{"initContainers", "containers"} {
		path := append(manifests.PodSpecPath(o), field)
		containers, _, err := unstructured.NestedSlice(o.Object, path...)
		if err != nil {
			t.Fatalf("%s %s: %s: %v", o.GetKind(), o.GetName(), field, err)
		}
		if len(containers) == 0 {
			continue
		}
		for _, c := range containers {
			cm := c.(map[string]any)
			switch cm["image"] {
			case placeholderImage:
				cm["image"] = s.images[appArchive]
				n++
			case stockPauseImage:
				cm["image"] = s.images[pauseArchive]
			default:
				t.Fatalf("%s %s: image %v, want the placeholder %s", o.GetKind(), o.GetName(), cm["image"], placeholderImage)
			}
			cm["imagePullPolicy"] = string(corev1.PullNever)
		}
		if err := unstructured.SetNestedSlice(o.Object, containers, path...); err != nil {
			t.Fatal(err)
		}
	}
	if n == 0 {
		t.Fatalf("%s %s: no container with the placeholder image %s", o.GetKind(), o.GetName(), placeholderImage)
	}
}

// stockPauseImage is the pause image that examples/daemonset names; the
// node tests run the project's own pause program instead.
const stockPauseImage = "registry.k8s.io/pause:3.10"

// migrationJob is the db-migration Job of examples/db-migration, named
// db-migration-SUFFIX.
func migrationJob(t *testing.T, suffix string) *batchv1.Job {
	t.Helper()
	j := example[batchv1.Job](t, "examples/db-migration/job.yaml", "Job", "db-migration")
	j.Name += "-" + suffix
	return j
}

// jobFromCronJob makes a Job from a CronJob's template the way kubectl
// create job --from=cronjob/NAME does: the template's labels, annotations
// and spec, the instantiate annotation, and the CronJob as its owner.
func jobFromCronJob(cj *batchv1.CronJob, name string) *batchv1.Job {
	annotations := map[string]string{"cronjob.kubernetes.io/instantiate": "manual"}
	for k, v := range cj.Spec.JobTemplate.Annotations {
		annotations[k] = v
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: annotations,
			Labels:      cj.Spec.JobTemplate.Labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: batchv1.SchemeGroupVersion.String(), Kind: "CronJob",
				Name: cj.Name, UID: cj.UID, Controller: ptr.To(true),
			}},
		},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
}

func createJob(t *testing.T, ns string, j *batchv1.Job) {
	t.Helper()
	if _, err := s.env.Client().BatchV1().Jobs(ns).Create(t.Context(), j, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create Job %s: %v", j.Name, err)
	}
}

// jobEnd waits until the Job has completed or failed and returns which.
func jobEnd(t *testing.T, ns, name string) batchv1.JobConditionType {
	t.Helper()
	var end batchv1.JobConditionType
	poll(t, "Job "+name+" ends", func(ctx context.Context) (bool, error) {
		j, err := s.env.Client().BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		end = ended(j)
		return end != "", nil
	})
	return end
}

// ended is the Job's terminal condition, or "".
func ended(j *batchv1.Job) batchv1.JobConditionType {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c.Type
		}
	}
	return ""
}

// jobPods lists the pods of a Job, oldest first.
func jobPods(ctx context.Context, ns, job string) ([]corev1.Pod, error) {
	pods, err := s.env.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: batchv1.JobNameLabel + "=" + job})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(pods.Items, func(a, b corev1.Pod) int {
		return a.CreationTimestamp.Compare(b.CreationTimestamp.Time)
	})
	return pods.Items, nil
}

// poll calls cond until it is true, failing the test on an error or after
// podWait. Pods fail fast: an image that cannot be used ends the wait.
func poll(t *testing.T, what string, cond func(context.Context) (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), pollInterval, podWait, true, func(ctx context.Context) (bool, error) {
		ok, err := cond(ctx)
		last = err
		return ok, nil
	})
	if err != nil {
		t.Fatalf("%s: %v (last error: %v)", what, err, last)
	}
}

// terminated returns the exit code of the pod's only container once it
// has terminated.
func terminated(p *corev1.Pod) (int32, bool) {
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Terminated != nil {
			return c.State.Terminated.ExitCode, true
		}
	}
	return 0, false
}

// unusableImage reports a pod whose image cannot be used, which no wait
// would cure.
func unusableImage(p *corev1.Pod) error {
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && (w.Reason == "ErrImageNeverPull" || w.Reason == "InvalidImageName") {
			return fmt.Errorf("pod %s: %s: %s", p.Name, w.Reason, w.Message)
		}
	}
	return nil
}

// logs returns the log of the pod's only container.
func logs(t *testing.T, ns, pod string) string {
	t.Helper()
	raw, err := s.env.Client().CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{}).Do(t.Context()).Raw()
	if err != nil {
		t.Fatalf("logs of %s: %v", pod, err)
	}
	return string(raw)
}

// newRecord creates the record of the workload prog (migrate,
// run-daily-job).
func newRecord(t *testing.T, ns, prog string, r record.Record) string {
	t.Helper()
	name := record.LeaseName(prog)
	if err := record.Create(t.Context(), s.env.Client(), ns, name, r); err != nil {
		t.Fatal(err)
	}
	return name
}

func getRecord(t *testing.T, ctx context.Context, ns, name string) *record.Record {
	t.Helper()
	r, err := record.Get(ctx, s.env.Client(), ns, name)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// release lets every holder of the record leave.
func release(t *testing.T, ns, name string) {
	t.Helper()
	err := record.Update(t.Context(), s.env.Client(), ns, name, func(r *record.Record) error {
		r.Released = true
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// inside waits until a holder is inside the record and returns its entry.
func inside(t *testing.T, ns, name string) record.Entry {
	t.Helper()
	var e record.Entry
	poll(t, "a holder enters "+name, func(ctx context.Context) (bool, error) {
		r, err := record.Get(ctx, s.env.Client(), ns, name)
		if err != nil || r.Inside == nil {
			return false, err
		}
		e = *r.Inside
		return true, nil
	})
	return e
}

// wantClean checks that the record saw no violation and nobody is inside.
func wantClean(t *testing.T, r *record.Record) {
	t.Helper()
	for _, v := range r.Violations {
		t.Errorf("record: %s", v)
	}
	if r.Inside != nil {
		t.Errorf("record: %s (token %d) is still inside", r.Inside.Pod, r.Inside.Token)
	}
}

// mutexStatus reads a mutex as the admin.
func mutexStatus(t *testing.T, ctx context.Context, ns, name string) lock.Status {
	t.Helper()
	c, err := lock.NewForConfig(s.env.Config())
	if err != nil {
		t.Fatal(err)
	}
	st, err := c.Get(ctx, ns, name)
	if err != nil {
		t.Fatalf("mutex %s: %v", name, err)
	}
	return st
}

// wantServiceAccount checks that pods run as the ServiceAccount of
// examples/rbac, with its token mounted (in-cluster configuration).
func wantServiceAccount(t *testing.T, pods []corev1.Pod, sa string) {
	t.Helper()
	for _, p := range pods {
		if p.Spec.ServiceAccountName != sa {
			t.Errorf("pod %s runs as ServiceAccount %q, want %q", p.Name, p.Spec.ServiceAccountName, sa)
		}
		if p.Spec.AutomountServiceAccountToken != nil && !*p.Spec.AutomountServiceAccountToken {
			t.Errorf("pod %s does not mount its ServiceAccount's token", p.Name)
		}
	}
}
