package lock_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/kubernetes/fake"

	"github.com/konlease/konlease/lock"
)

// kubeconfigWith writes a kubeconfig whose current context has namespace
// ns ("": none). Its server is never contacted: New reads files only.
func kubeconfigWith(t *testing.T, ns string) string {
	t.Helper()
	nsLine := ""
	if ns != "" {
		nsLine = ", namespace: " + ns
	}
	data := `apiVersion: v1
kind: Config
clusters:
- {name: c, cluster: {server: "https://unused.invalid:6443"}}
users:
- {name: u, user: {token: t}}
contexts:
- {name: ctx, context: {cluster: c, user: u` + nsLine + `}}
current-context: ctx
`
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// isolate makes the environment name no cluster but kubeconfig (""
// for none): no ~/.kube/config, and not in a pod.
func isolate(t *testing.T, kubeconfig string) {
	t.Helper()
	if kubeconfig == "" {
		kubeconfig = filepath.Join(t.TempDir(), "missing")
	}
	t.Setenv("KUBECONFIG", kubeconfig)
	t.Setenv("HOME", t.TempDir())
	t.Setenv("KUBERNETES_SERVICE_HOST", "")
	t.Setenv("KUBERNETES_SERVICE_PORT", "")
}

// TestNewDefaultNamespace: New finds the namespace as kubectl does, and
// NewMutex uses it for "".
func TestNewDefaultNamespace(t *testing.T) {
	for _, tc := range []struct {
		name      string
		contextNS string // "": the context names none
		opts      []lock.ClientOption
		want      string
	}{
		{"the context's namespace", "team-a", nil, "team-a"},
		{"no namespace in the context", "", nil, lock.DefaultNamespaceName},
		{"WithDefaultNamespace overrides", "team-a", []lock.ClientOption{lock.WithDefaultNamespace("team-b")}, "team-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t, kubeconfigWith(t, tc.contextNS))
			c, err := lock.New(tc.opts...)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if got := c.DefaultNamespace(); got != tc.want {
				t.Errorf("DefaultNamespace() = %q, want %q", got, tc.want)
			}
			m, err := c.NewMutex("", "critical-section")
			if err != nil {
				t.Fatalf(`NewMutex(""): %v`, err)
			}
			if m.Namespace() != tc.want {
				t.Errorf(`NewMutex("") is in namespace %q, want %q`, m.Namespace(), tc.want)
			}
			// A namespace given is used as given.
			if m, err := c.NewMutex("elsewhere", "critical-section"); err != nil || m.Namespace() != "elsewhere" {
				t.Errorf(`NewMutex("elsewhere"): namespace %v, err %v`, m, err)
			}
		})
	}
}

// TestNewRefuses: no configuration, or a namespace that is no namespace,
// is a clear error.
func TestNewRefuses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		kubeconfig func(t *testing.T) string
		sentinel   error
		want       string
	}{
		{"nothing configured", func(*testing.T) string { return "" }, lock.ErrNoConfig, "no kubeconfig names a cluster"},
		{"invalid context namespace", func(t *testing.T) string { return kubeconfigWith(t, "Bad_NS") }, lock.ErrInvalid, `invalid namespace "Bad_NS"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			isolate(t, tc.kubeconfig(t))
			c, err := lock.New()
			if !errors.Is(err, tc.sentinel) || !strings.Contains(err.Error(), tc.want) || c != nil {
				t.Errorf("New() = %v, %v; want nil and an error matching %v that says %q", c, err, tc.sentinel, tc.want)
			}
		})
	}
}

// TestNewMutexEmptyNamespace: a client without a default namespace, or with
// an invalid one, refuses "" before anything is sent.
func TestNewMutexEmptyNamespace(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []lock.ClientOption
		want string
	}{
		{"no default namespace", nil, "this client has no default namespace"},
		{"invalid default namespace", []lock.ClientOption{lock.WithDefaultNamespace("Bad_NS")}, `invalid namespace "Bad_NS"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cs := fake.NewClientset()
			c, err := lock.NewClient(cs.CoordinationV1(), tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.NewMutex("", "x"); !errors.Is(err, lock.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf(`NewMutex(""): %v, want ErrInvalid saying %q`, err, tc.want)
			}
			if n := len(cs.Actions()); n != 0 {
				t.Errorf("refusing sent %d requests", n)
			}
		})
	}
}
