package harness

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

const (
	// namePrefix starts the name of everything the harness creates, so that
	// leftovers on a real cluster are easy to find.
	namePrefix = "konlease-e2e-"
	// LabelE2E marks namespaces created by Namespace.
	LabelE2E = "konlease.io/e2e"
	// identityTokenTTL is the lifetime requested for minted tokens; it must
	// outlast the e2e suite's -timeout. Clusters may shorten it.
	identityTokenTTL = time.Hour
	cleanupTimeout   = 30 * time.Second
)

// Main runs a test package against an Env: it starts the Env, stores it in
// *env, runs the tests and stops the Env; a passing run then fails if
// goroutines are left (see LeakOptions). Use it from TestMain:
//
//	var env *harness.Env
//
//	func TestMain(m *testing.M) {
//		os.Exit(harness.Main(m, harness.Options{}, &env))
//	}
func Main(m *testing.M, opts Options, env **Env) int {
	ctx, cancel := context.WithTimeout(context.Background(), 2*opts.readyTimeout())
	e, err := Start(ctx, opts)
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "harness: start: %v\n", err)
		return 1
	}
	*env = e

	// On Ctrl-C or SIGTERM, stop the children and remove the directory rather
	// than relying on Pdeathsig, which would leave the directory behind.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		if sig, ok := <-sigs; ok {
			fmt.Fprintf(os.Stderr, "harness: %v: stopping control plane\n", sig)
			if err := e.Stop(); err != nil {
				fmt.Fprintf(os.Stderr, "harness: stop: %v\n", err)
			}
			os.Exit(130)
		}
	}()

	code := m.Run()
	signal.Stop(sigs)
	close(sigs)
	if err := e.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "harness: stop: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	leaks := LeakOptions()
	if opts.Node != nil {
		leaks = nodeLeakOptions()
	}
	return reportLeaks(code, leaks)
}

// Namespace creates a fresh, uniquely named namespace and deletes it when the
// test ends. The deletion is not awaited: a local control plane without a
// node has no namespace controller to finish it.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns, err := e.client.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: namePrefix,
			Labels:       map[string]string{LabelE2E: "true"},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("harness: create namespace: %v", err)
	}
	t.Cleanup(func() {
		// t.Context is already canceled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
		defer cancel()
		err := e.client.CoreV1().Namespaces().Delete(ctx, ns.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("harness: delete namespace %s: %v", ns.Name, err)
		}
	})
	return ns.Name
}

// Identity creates a ServiceAccount in namespace, allowed exactly verbs on
// coordination.k8s.io leases there (through a Role and RoleBinding), mints a
// token for it with the TokenRequest API and returns a client configuration
// authenticating as it. It returns once the API server accepts the token and
// authorizes every verb. Objects live in namespace and go with it.
func (e *Env) Identity(t testing.TB, namespace string, verbs ...string) *rest.Config {
	t.Helper()
	cfg, err := e.identity(t.Context(), namespace, verbs)
	if err != nil {
		t.Fatalf("harness: identity in %s with verbs %v: %v", namespace, verbs, err)
	}
	return cfg
}

func (e *Env) identity(ctx context.Context, namespace string, verbs []string) (*rest.Config, error) {
	sa, err := e.client.CoreV1().ServiceAccounts(namespace).Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{GenerateName: namePrefix},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service account: %w", err)
	}
	// RBAC rejects a rule without verbs; an identity without verbs simply
	// has no Role.
	if len(verbs) > 0 {
		_, err = e.client.RbacV1().Roles(namespace).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: sa.Name},
			Rules: []rbacv1.PolicyRule{{
				APIGroups: []string{"coordination.k8s.io"},
				Resources: []string{"leases"},
				Verbs:     verbs,
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create role: %w", err)
		}
		_, err = e.client.RbacV1().RoleBindings(namespace).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: sa.Name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa.Name, Namespace: namespace}},
		}, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("create role binding: %w", err)
		}
	}
	ttl := int64(identityTokenTTL / time.Second)
	tr, err := e.client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("request token for %s: %w", sa.Name, err)
	}
	// Keep only the server and CA of the admin config, never its credentials.
	cfg := rest.AnonymousClientConfig(e.admin)
	cfg.BearerToken = tr.Status.Token
	if err := e.waitAuthorized(ctx, cfg, namespace, verbs); err != nil {
		return nil, fmt.Errorf("service account %s: %w", sa.Name, err)
	}
	return cfg, nil
}

// waitAuthorized waits until the API server authenticates cfg and allows it
// every verb on leases in namespace. RBAC objects reach the authorizer
// through an informer, so a just-created binding can be missing for a moment.
func (e *Env) waitAuthorized(ctx context.Context, cfg *rest.Config, namespace string, verbs []string) error {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	check := []string{"get"} // with no verbs, only authentication is awaited
	if len(verbs) > 0 {
		check = verbs
	}
	var last error
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, e.readyWait, true, func(ctx context.Context) (bool, error) {
		for _, verb := range check {
			review, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{
				Spec: authorizationv1.SelfSubjectAccessReviewSpec{
					ResourceAttributes: &authorizationv1.ResourceAttributes{
						Namespace: namespace,
						Verb:      verb,
						Group:     "coordination.k8s.io",
						Resource:  "leases",
					},
				},
			}, metav1.CreateOptions{})
			if err != nil {
				last = fmt.Errorf("access review for %q: %w", verb, err)
				return false, nil
			}
			if len(verbs) > 0 && !review.Status.Allowed {
				last = fmt.Errorf("%q on leases not allowed yet: %s", verb, review.Status.Reason)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("not usable: %w (last: %v)", err, last)
	}
	return nil
}

// WriteKubeconfig writes cfg as a kubeconfig whose current context uses
// namespace, in a directory removed when the test ends, and returns its path.
// For CLI tests.
func (e *Env) WriteKubeconfig(t testing.TB, cfg *rest.Config, namespace string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfigFile(path, cfg, namespace); err != nil {
		t.Fatalf("harness: %v", err)
	}
	return path
}
