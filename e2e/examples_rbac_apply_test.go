//go:build e2e

package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/resource"
	"k8s.io/client-go/rest"
)

// TestExampleRBACApplyK applies examples/rbac as the README says,
// `kubectl apply -k examples/rbac -n NAMESPACE` once per namespace, and
// without -n (the context's namespace), through the code kubectl runs for
// it: cli-runtime's resource builder with kustomize, the namespace enforced
// as kubectl enforces it. Each namespace's ServiceAccount can then use
// koncli there, and only there.
func TestExampleRBACApplyK(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(exampleRoot(t), "examples", "rbac")
	nsA, nsB, nsCtx := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	applyK(t, dir, nsA, adminKubeconfigIn(t, "default"))
	applyK(t, dir, nsB, adminKubeconfigIn(t, "default"))
	applyK(t, dir, "", adminKubeconfigIn(t, nsCtx))

	for _, ns := range []string{nsA, nsB, nsCtx} {
		t.Run(ns, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, env.WriteKubeconfig(t, serviceAccountConfig(t, ns, "konlease"), ns))
			// RBAC reaches the authorizer through an informer: the first
			// lock may be refused for a moment.
			err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
				return c.run("mutex", "lock", "m", "--holder", "w1", "--timeout", "0").code == 0, nil
			})
			if err != nil {
				t.Fatalf("the ServiceAccount of %s never locked a mutex there: %s", ns, c.run("mutex", "lock", "m", "--holder", "w1", "--timeout", "0"))
			}
			expectCLI(t, c.run("mutex", "list", "-o", "name"), 0, "m\n", "")
			expectCLI(t, c.run("mutex", "delete", "m", "--force"), 0, "", `evicted "w1"`)
			// Its Role is for its own namespace only ...
			other := nsA
			if ns == nsA {
				other = nsB
			}
			expectCLIError(t, c.run("mutex", "lock", "m", "-n", other, "--timeout", "0"), 1, "not allowed to get leases.coordination.k8s.io in namespace "+`"`+other+`"`)
			// ... and -A needs a ClusterRole, which the message says.
			expectCLIError(t, c.run("mutex", "list", "-A"), 1,
				"not allowed to list leases.coordination.k8s.io in all namespaces", "needs a ClusterRole", "ClusterRoleBinding", "a Role grants verbs in its own namespace only")
		})
	}
}

// applyK creates what `kubectl apply -k dir [-n ns]` creates with the
// kubeconfig, by kubectl's own path: kustomize build, then the namespace
// rule of kubectl (-n fills in objects without a namespace and refuses any
// that names another; without -n, the context's namespace is used).
func applyK(t *testing.T, dir, ns, kubeconfig string) {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &kubeconfig
	cache := t.TempDir()
	flags.CacheDir = &cache
	enforce := ns != ""
	if enforce {
		flags.Namespace = &ns
	}
	namespace, _, err := flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		t.Fatal(err)
	}
	infos, err := resource.NewBuilder(flags).Unstructured().
		NamespaceParam(namespace).DefaultNamespace().
		FilenameParam(enforce, &resource.FilenameOptions{Kustomize: dir}).
		Flatten().Do().Infos()
	if err != nil {
		t.Fatalf("kubectl apply -k %s -n %q: %v", dir, ns, err)
	}
	if len(infos) != 3 {
		t.Fatalf("kustomize build %s: %d objects, want the ServiceAccount, Role and RoleBinding", dir, len(infos))
	}
	for _, info := range infos {
		if info.Namespace != namespace {
			t.Errorf("%s %s goes to namespace %q, want %q", info.Mapping.GroupVersionKind.Kind, info.Name, info.Namespace, namespace)
		}
		if _, err := resource.NewHelper(info.Client, info.Mapping).Create(info.Namespace, true, info.Object); err != nil {
			t.Fatalf("create %s %s in %s: %v", info.Mapping.GroupVersionKind.Kind, info.Name, info.Namespace, err)
		}
	}
}

// serviceAccountConfig authenticates as the ServiceAccount ns/name, as a pod
// does: with a token from the TokenRequest API, and nothing of the admin's
// credentials.
func serviceAccountConfig(t *testing.T, ns, name string) *rest.Config {
	t.Helper()
	expiry := int64(10 * 60)
	tr, err := env.Client().CoreV1().ServiceAccounts(ns).CreateToken(t.Context(), name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("token for %s/%s: %v", ns, name, err)
	}
	cfg := rest.AnonymousClientConfig(env.Config())
	cfg.BearerToken = tr.Status.Token
	return cfg
}
