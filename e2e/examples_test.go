//go:build e2e

package e2e

// The examples under examples/ are documentation that must keep working.
// These tests build and run the example programs as a user would, send every
// manifest to the API server, and prove that the ServiceAccount of
// examples/rbac can do what the examples make it do.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/e2e/manifests"
	"github.com/konlease/konlease/lock"
)

// TestExamplePrograms runs examples/lock, examples/trylock and examples/with
// against the control plane through the admin kubeconfig, and checks their
// exit codes, their output and the mutex they leave behind.
func TestExamplePrograms(t *testing.T) {
	t.Parallel()
	bin := buildExamples(t, "lock", "trylock", "with")
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	// Every program gets the connection flags a user would give it.
	run := func(t *testing.T, prog, name string, args ...string) exampleRun {
		t.Helper()
		return runExample(t, filepath.Join(bin, prog),
			append([]string{"--kubeconfig", env.AdminKubeconfig(), "-n", ns, "--name", name}, args...)...)
	}
	// hold locks name as a holder outside the program under test.
	hold := func(t *testing.T, name string) {
		t.Helper()
		m := newMutex(t, c, ns, name, lock.WithHolder("e2e-holder"))
		if err := m.Lock(t.Context()); err != nil {
			t.Fatalf("lock %s as e2e-holder: %v", name, err)
		}
	}

	t.Run("lock", func(t *testing.T) {
		t.Parallel()
		r := run(t, "lock", "lock-free", "--work", "50ms")
		r.wantExit(t, 0)
		r.wantStdout(t, "fencing token 1\n", "done; unlocking")
		wantExampleUnlocked(t, c, ns, "lock-free", 1)
	})
	t.Run("lock times out on a held mutex", func(t *testing.T) {
		t.Parallel()
		hold(t, "lock-held")
		r := run(t, "lock", "lock-held", "--timeout", "300ms")
		r.wantExit(t, 3)
		r.wantStderr(t, "not acquired within 300ms", "e2e-holder")
	})
	t.Run("trylock on a free mutex", func(t *testing.T) {
		t.Parallel()
		r := run(t, "trylock", "trylock-free", "--work", "50ms")
		r.wantExit(t, 0)
		r.wantStdout(t, "fencing token 1; running the job", "job done")
		wantExampleUnlocked(t, c, ns, "trylock-free", 1)
	})
	t.Run("trylock on a held mutex", func(t *testing.T) {
		t.Parallel()
		hold(t, "trylock-held")
		r := run(t, "trylock", "trylock-held")
		r.wantExit(t, 3)
		r.wantStdout(t, "is held by e2e-holder since ", "(token 1); skipping")
		// The failed attempt changed nothing.
		s, err := c.Get(t.Context(), ns, "trylock-held")
		if err != nil {
			t.Fatal(err)
		}
		if s.Holder != "e2e-holder" || s.Token != 1 {
			t.Errorf("after trylock: holder %q token %d, want e2e-holder and 1", s.Holder, s.Token)
		}
	})
	t.Run("with", func(t *testing.T) {
		t.Parallel()
		r := run(t, "with", "with-free", "--steps", "2", "--step", "20ms")
		r.wantExit(t, 0)
		r.wantStdout(t, "fencing token 1\n", "step 2/2 done under token 1", "is unlocked")
		wantExampleUnlocked(t, c, ns, "with-free", 1)
	})
}

// TestExampleDemo runs the program behind `make demo`, smaller and on the
// suite's control plane instead of its own: koncli processes contend for a
// mutex, one is killed holding it, and the demo's own checks (no overlap,
// rising tokens, exit codes, takeover after the TTL) must all pass.
func TestExampleDemo(t *testing.T) {
	t.Parallel()
	demo := filepath.Join(buildExamples(t, "demo"), "demo")
	ns := env.Namespace(t)
	r := runExample(t, demo, "--koncli", koncliBinary(t), "--kubeconfig", env.AdminKubeconfig(), "-n", ns,
		"--workers", "3", "--rounds", "2", "--work", "200ms", "--ttl", "2s", "--kill", "2")
	r.wantExit(t, 0)
	r.wantStdout(t,
		"✓ 5 critical sections ran",
		"✓ no two critical sections overlapped",
		"✓ fencing tokens rose by one with every acquisition: 1 2 3 4 5\n",
		" was killed holding the lock; ",
		"$ koncli mutex list -o wide",
	)
	if strings.Contains(r.stdout, "FAILED") {
		t.Errorf("the demo reports a failed check:\n%s", r.stdout)
	}
}

// TestExampleRBAC creates examples/rbac for real in a test namespace, as
// `kubectl apply -k examples/rbac` would there, and proves that its
// ServiceAccount gets exactly the verbs role.yaml grants, and that with them
// it can do everything package lock does and run the container commands of
// the example Job, CronJobs and DaemonSet.
func TestExampleRBAC(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := filepath.Join(exampleRoot(t), "examples", "rbac")

	// The kustomization must tie together exactly the files beside it.
	var k struct {
		Namespace string   `json:"namespace"`
		Resources []string `json:"resources"`
	}
	readYAML(t, filepath.Join(dir, "kustomization.yaml"), &k)
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" {
			want = append(want, base)
		}
	}
	if got := slices.Sorted(slices.Values(k.Resources)); !slices.Equal(got, want) {
		t.Errorf("kustomization.yaml resources = %v, want the files beside it: %v", got, want)
	}
	if k.Namespace != "" {
		t.Errorf("kustomization.yaml sets namespace %q; `kubectl apply -k examples/rbac -n NS` then fails for any other NS", k.Namespace)
	}

	ns := env.Namespace(t)
	ac := newExampleApplier(t)
	var saName string
	for _, f := range k.Resources {
		for _, obj := range readManifests(t, filepath.Join(dir, f)) {
			ac.create(t, ns, obj, false)
			if obj.GetKind() == "ServiceAccount" {
				saName = obj.GetName()
			}
		}
	}
	if saName == "" {
		t.Fatal("examples/rbac has no ServiceAccount")
	}

	// Authenticate as the ServiceAccount the way a pod does: with a token
	// from the TokenRequest API, and nothing of the admin's credentials.
	expiry := int64(10 * 60)
	tr, err := env.Client().CoreV1().ServiceAccounts(ns).CreateToken(ctx, saName, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s: %v", saName, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config())
	cfg.BearerToken = tr.Status.Token
	sa := kubeClient(t, cfg)

	// RBAC objects reach the authorizer through an informer: wait for the
	// first verb, then check all of them at once.
	allowed := func(ctx context.Context, namespace, group, resource, verb string) (bool, error) {
		r, err := sa.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authorizationv1.ResourceAttributes{
				Namespace: namespace, Verb: verb, Group: group, Resource: resource,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return false, err
		}
		return r.Status.Allowed, nil
	}
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return allowed(ctx, ns, "coordination.k8s.io", "leases", "get")
	})
	if err != nil {
		t.Fatalf("%s never allowed to get leases: %v", saName, err)
	}
	checks := []struct {
		namespace, group, resource, verb string
		want                             bool
	}{
		{ns, "coordination.k8s.io", "leases", "get", true},
		{ns, "coordination.k8s.io", "leases", "update", true},
		{ns, "coordination.k8s.io", "leases", "watch", true},
		{ns, "coordination.k8s.io", "leases", "create", true},
		{ns, "coordination.k8s.io", "leases", "list", true},
		{ns, "coordination.k8s.io", "leases", "delete", true},
		// Nothing beyond what koncli uses.
		{ns, "coordination.k8s.io", "leases", "patch", false},
		{ns, "coordination.k8s.io", "leases", "deletecollection", false},
		{ns, "", "pods", "get", false},
		{ns, "", "secrets", "get", false},
		{"default", "coordination.k8s.io", "leases", "update", false},
	}
	for _, c := range checks {
		got, err := allowed(ctx, c.namespace, c.group, c.resource, c.verb)
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s may %s %s in %s: %v, want %v", saName, c.verb, c.resource, c.namespace, got, c.want)
		}
	}

	t.Run("library", func(t *testing.T) {
		t.Parallel()
		exampleRBACLibrary(t, cfg, ns)
	})
	t.Run("manifest commands", func(t *testing.T) {
		t.Parallel()
		exampleRBACCommands(t, env.WriteKubeconfig(t, cfg, ns), ns)
	})
}

// exampleRBACLibrary does, through package lock as the ServiceAccount of cfg,
// everything the examples and koncli do: create a mutex by locking it, make
// a second holder wait (watch) and take over on unlock (update), list,
// delete.
func exampleRBACLibrary(t *testing.T, cfg *rest.Config, ns string) {
	ctx := t.Context()
	c := newClient(t, cfg)
	first := newMutex(t, c, ns, "rbac-example", lock.WithHolder("first"), lock.WithTTL(30*time.Second))
	if err := first.Lock(ctx); err != nil {
		t.Fatalf("lock: %v", err)
	}
	waiting := make(chan struct{})
	acquired := make(chan error, 1)
	go func() {
		lctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		acquired <- lock.With(lctx, c, ns, "rbac-example", func(context.Context) error { return nil },
			lock.WithHolder("second"), lock.WithWaitNotify(func(lock.Status) {
				select {
				case <-waiting:
				default:
					close(waiting)
				}
			}))
	}()
	within(t, waiting, 30*time.Second, "second holder starts waiting")
	if err := first.Unlock(ctx); err != nil {
		t.Fatalf("unlock: %v", err)
	}
	if err := <-acquired; err != nil {
		t.Fatalf("second holder: %v", err)
	}
	list, err := c.List(ctx, ns)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	i := slices.IndexFunc(list, func(s lock.Status) bool { return s.Name == "rbac-example" })
	if i < 0 || list[i].Token != 2 || list[i].Phase != lock.PhaseUnlocked {
		t.Errorf("list = %+v, want rbac-example unlocked with token 2", list)
	}
	if _, err := c.Delete(ctx, ns, "rbac-example", lock.DeleteOptions{}); err != nil {
		t.Fatalf("delete: %v", err)
	}
}

// slotRun is what the stand-in prints when it ran under a slot of the
// semaphore of examples/daemonset (limit 2: slot 0 or 1).
var slotRun = regexp.MustCompile(`\(mutex [a-z0-9-]+/node-maintenance, token 1, slot [01]\)`)

// exampleRBACCommands runs the container commands of the example Job,
// CronJobs and DaemonSet with the real koncli, as the example
// ServiceAccount (kubeconfig names it and the namespace, as a pod's
// in-cluster configuration would), with stand-ins for ./migrate,
// run-daily-job and maintain-node. A free mutex (or semaphore) runs the
// job; a held one makes the CronJobs skip it.
func exampleRBACCommands(t *testing.T, kubeconfig, ns string) {
	koncli := koncliBinary(t)
	dir := t.TempDir()
	// The stand-ins say that they ran, and under which lock.
	const stub = "#!/bin/sh\necho \"ran $0 (mutex ${KONLEASE_MUTEX:-${KONLEASE_SEMAPHORE:-none}}, token ${KONLEASE_TOKEN:-none}, slot ${KONLEASE_SLOT:-none})\"\n"
	for _, name := range []string{"migrate", "run-daily-job", "maintain-node"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(stub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(koncli, filepath.Join(dir, "koncli")); err != nil {
		t.Fatal(err)
	}
	environ := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "KUBECONFIG=") || strings.HasPrefix(kv, "HOSTNAME=") || strings.HasPrefix(kv, "PATH=")
	})
	environ = append(environ, "KUBECONFIG="+kubeconfig, "HOSTNAME=example-pod-x7k2p", "PATH="+dir+string(filepath.ListSeparator)+os.Getenv("PATH"))
	run := func(t *testing.T, command []string) exampleRun {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		path := command[0]
		if path == "koncli" {
			path = koncli // exec.Command resolves names with this process's PATH, not the child's
		}
		cmd := exec.CommandContext(ctx, path, command[1:]...)
		cmd.Env, cmd.Dir = environ, dir // ./migrate is relative to the working directory
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		r := exampleRun{name: strings.Join(command, " "), stdout: stdout.String(), stderr: stderr.String()}
		var exit *exec.ExitError
		switch {
		case err == nil:
		case errors.As(err, &exit) && exit.Exited():
			r.exit = exit.ExitCode()
		default:
			t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", r.name, err, r.stdout, r.stderr)
		}
		return r
	}

	admin := newClient(t, env.Config())
	// The DaemonSet's semaphore is created beforehand, as its header says.
	if _, _, err := admin.CreateSemaphore(t.Context(), ns, "node-maintenance", lock.SemaphoreOptions{Limit: 2, TTL: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	containers := exampleContainers(t)
	for _, c := range containers {
		t.Run(c.object+"/free", func(t *testing.T) {
			r := run(t, c.command)
			r.wantExit(t, 0)
			r.wantStdout(t, "ran ")
			if strings.HasPrefix(c.object, "DaemonSet/") && !slotRun.MatchString(r.stdout) {
				t.Errorf("%s: stdout %q, want maintain-node run in a slot (%s)", r.name, r.stdout, slotRun)
			}
		})
	}
	// Each CronJob form has its own mutex (their TTLs differ). Held by
	// another run, they do what manifests.CronJobSkips says (the node tests
	// expect the same).
	var holders []*lock.Mutex
	for _, name := range slices.Sorted(maps.Keys(manifests.CronJobSkips)) {
		holder := newMutex(t, admin, ns, manifests.CronJobSkips[name].Mutex, lock.WithHolder("other-run"))
		if err := holder.Lock(t.Context()); err != nil {
			t.Fatal(err)
		}
		holders = append(holders, holder)
	}
	for _, c := range containers {
		if !strings.HasPrefix(c.object, "CronJob/") {
			continue
		}
		t.Run(c.object+"/held", func(t *testing.T) {
			r := run(t, c.command)
			skip, ok := manifests.CronJobSkips[strings.TrimPrefix(c.object, "CronJob/")]
			if !ok {
				t.Fatalf("manifests.CronJobSkips does not say what %s does when the mutex is held", c.object)
			}
			r.wantExit(t, skip.ExitCode)
			r.wantStdout(t, skip.Stdout)
			r.wantStderr(t, skip.Stderr, `locked by "other-run"`)
			if strings.Contains(r.stdout, "ran ") {
				t.Errorf("%s ran the job while another run held the mutex:\n%s", r.name, r.stdout)
			}
		})
	}
	for _, holder := range holders {
		if err := holder.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	// db-migration ran once; each daily job ran once and was held once by
	// other-run.
	wantExampleUnlocked(t, admin, ns, "db-migration", 1)
	wantExampleUnlocked(t, admin, ns, "daily-job", 2)
	wantExampleUnlocked(t, admin, ns, "daily-job-script", 2)
	// maintain-node ran under a slot, which it gave back.
	if st, err := admin.GetSemaphore(t.Context(), ns, "node-maintenance"); err != nil || len(st.Holders) != 0 {
		t.Errorf("node-maintenance after the DaemonSet's command: %+v (%v), want no holder", st, err)
	}
}

// TestExampleWorkloads sends every other manifest under examples/ (the Job,
// the CronJobs) to the API server as a server-side dry run, with strict
// field validation, so that a misspelt field fails here rather than in a
// user's cluster; and checks that they run as the ServiceAccount of
// examples/rbac. (TestExampleRBAC runs their commands.)
func TestExampleWorkloads(t *testing.T) {
	t.Parallel()
	rbacSA := ""
	for _, obj := range readManifests(t, filepath.Join(exampleRoot(t), "examples", "rbac", "serviceaccount.yaml")) {
		rbacSA = obj.GetName()
	}
	ns := env.Namespace(t)
	ac := newExampleApplier(t)
	var seen []string
	for _, obj := range exampleWorkloads(t) {
		seen = append(seen, obj.GetKind()+"/"+obj.GetName())
		ac.create(t, ns, obj, true)
		got, _, _ := unstructured.NestedString(obj.Object, append(podSpecPath(obj), "serviceAccountName")...)
		if got != rbacSA {
			t.Errorf("%s %s: serviceAccountName %q, want %q from examples/rbac", obj.GetKind(), obj.GetName(), got, rbacSA)
		}
	}
	for _, want := range []string{"Job/db-migration", "CronJob/daily-job", "CronJob/daily-job-lock-unlock", "DaemonSet/node-maintenance"} {
		if !slices.Contains(seen, want) {
			t.Errorf("no %s among the example manifests %v", want, seen)
		}
	}
}

// exampleWorkloads returns the objects of every manifest under examples/
// but examples/rbac.
func exampleWorkloads(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Workloads(exampleRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// podSpecPath is where a Job's or CronJob's pod spec is.
var podSpecPath = manifests.PodSpecPath

// exampleContainer is a container command of an example workload.
type exampleContainer struct {
	object  string // Kind/name
	command []string
}

func exampleContainers(t *testing.T) []exampleContainer {
	t.Helper()
	var out []exampleContainer
	for _, obj := range exampleWorkloads(t) {
		n := len(out)
		for _, field := range []string{"initContainers", "containers"} {
			containers, _, err := unstructured.NestedSlice(obj.Object, append(podSpecPath(obj), field)...)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range containers {
				cm, _ := c.(map[string]any)
				command, _, err := unstructured.NestedStringSlice(cm, "command")
				if err != nil {
					t.Fatalf("%s %s: a command that is not a list of strings: %v", obj.GetKind(), obj.GetName(), err)
				}
				if len(command) == 0 {
					// Only a stock image's own entrypoint (the DaemonSet's
					// pause container) runs without a command.
					if cm["image"] == placeholderImage {
						t.Fatalf("%s %s: container %v runs the placeholder image without a command", obj.GetKind(), obj.GetName(), cm["name"])
					}
					continue
				}
				out = append(out, exampleContainer{object: obj.GetKind() + "/" + obj.GetName(), command: command})
			}
		}
		if len(out) == n {
			t.Fatalf("%s %s: no container runs a command", obj.GetKind(), obj.GetName())
		}
	}
	return out
}

// placeholderImage is the image that the example manifests name for the
// user's own (with koncli in it).
const placeholderImage = "my-app:latest"

// exampleApplier creates example objects as the admin (manifests.Applier).
type exampleApplier struct{ *manifests.Applier }

func newExampleApplier(t *testing.T) *exampleApplier {
	t.Helper()
	a, err := manifests.NewApplier(env.Config())
	if err != nil {
		t.Fatal(err)
	}
	return &exampleApplier{a}
}

// create creates obj in namespace, or only validates it when dryRun is set.
func (a *exampleApplier) create(t *testing.T, namespace string, obj *unstructured.Unstructured, dryRun bool) {
	t.Helper()
	if _, err := a.Create(t.Context(), namespace, obj, dryRun); err != nil {
		t.Error(err)
	}
}

// readManifests parses every document of a YAML file (manifests.Read).
func readManifests(t *testing.T, path string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := manifests.Read(path)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// readYAML decodes a YAML file that is not a Kubernetes object into into.
func readYAML(t *testing.T, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	j, err := yaml.YAMLToJSONStrict(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if err := json.Unmarshal(j, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func exampleRoot(t *testing.T) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// buildExamples compiles example programs into a temporary directory with
// go build, as a user would, and returns the directory.
func buildExamples(t *testing.T, names ...string) string {
	t.Helper()
	var pkgs []string
	for _, n := range names {
		pkgs = append(pkgs, "./examples/"+n)
	}
	return buildPackages(t, pkgs...)
}

// buildPackages builds the main packages pkgs (relative to the repository)
// into a directory of the test's, and returns it: each program is there
// under its package's name.
func buildPackages(t *testing.T, pkgs ...string) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the test's programs are built with the go command: %v", err)
	}
	dir := t.TempDir()
	args := append([]string{"build", "-o", dir + string(filepath.Separator)}, pkgs...)
	cmd := exec.CommandContext(t.Context(), goTool, args...)
	cmd.Dir = exampleRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return dir
}

type exampleRun struct {
	name           string
	exit           int
	stdout, stderr string
}

// runExample runs a program without KUBECONFIG in its environment, so that
// only the flags decide which cluster it talks to, and waits for it to exit.
func runExample(t *testing.T, path string, args ...string) exampleRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "KUBECONFIG=") })
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := exampleRun{name: filepath.Base(path) + " " + strings.Join(args, " "), stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit) && exit.Exited():
		r.exit = exit.ExitCode()
	default:
		t.Fatalf("%s: %v\nstdout:\n%s\nstderr:\n%s", r.name, err, r.stdout, r.stderr)
	}
	return r
}

func (r exampleRun) wantExit(t *testing.T, code int) {
	t.Helper()
	if r.exit != code {
		t.Fatalf("%s: exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.name, r.exit, code, r.stdout, r.stderr)
	}
}

func (r exampleRun) wantStdout(t *testing.T, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("%s: stdout lacks %q:\n%s", r.name, s, r.stdout)
		}
	}
}

func (r exampleRun) wantStderr(t *testing.T, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("%s: stderr lacks %q:\n%s", r.name, s, r.stderr)
		}
	}
}

// wantExampleUnlocked checks that a program left the mutex unlocked after
// acquiring it token times.
func wantExampleUnlocked(t *testing.T, c *lock.Client, ns, name string, token int64) {
	t.Helper()
	s, err := c.Get(t.Context(), ns, name)
	if err != nil {
		t.Fatalf("get %s: %v", name, err)
	}
	if s.Phase != lock.PhaseUnlocked || s.Token != token {
		t.Errorf("%s after the program: phase %s token %d, want %s and %d", name, s.Phase, s.Token, lock.PhaseUnlocked, token)
	}
}
