package lock

import (
	"errors"
	"fmt"

	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/clientcmd"
)

// ErrNoConfig means New found no configuration at all: no kubeconfig names
// a cluster, and the process is not running in a pod.
var ErrNoConfig = errors.New("no Kubernetes configuration found")

// DefaultNamespaceName is the namespace of last resort, as kubectl's: the
// one used when neither the kubeconfig's context nor the pod names one.
const DefaultNamespaceName = "default"

// New returns a Client configured as kubectl configures itself, for
// programs that want no configuration of their own:
//
//	client, err := lock.New()
//	m, err := client.NewMutex("", "critical-section") // "": the default namespace
//
// The cluster is the one of the kubeconfig that KUBECONFIG names (a list
// of files, merged), else of ~/.kube/config, else, in a pod, the in-cluster
// configuration of its service account. The default namespace, which
// NewMutex uses for the namespace "", is the kubeconfig context's, else the
// pod's own, else "default". Both are read once, here, by client-go's
// deferred loader (clientcmd), which reads files and contacts no server.
// opts are the options of NewForConfig; a WithDefaultNamespace among them
// overrides the namespace found.
func New(opts ...ClientOption) (*Client, error) {
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, fmt.Errorf("lock.New: %w: no kubeconfig names a cluster (KUBECONFIG, ~/.kube/config), and this process is not running in a pod", ErrNoConfig)
		}
		return nil, fmt.Errorf("lock.New: loading the Kubernetes configuration: %w", err)
	}
	ns, _, err := loader.Namespace()
	if err != nil {
		return nil, fmt.Errorf("lock.New: reading the namespace of the Kubernetes configuration: %w", err)
	}
	if err := ValidateNamespace(ns); err != nil {
		return nil, fmt.Errorf("lock.New: the configuration's namespace: %w", err)
	}
	// The caller's options come last, so that their WithDefaultNamespace
	// wins over the configuration's.
	return NewForConfig(cfg, append([]ClientOption{WithDefaultNamespace(ns)}, opts...)...)
}

// WithDefaultNamespace sets the namespace that NewMutex uses when it is
// given the namespace "". A client without one refuses "" with ErrInvalid;
// New sets the namespace of the kubeconfig context (see New). The
// namespace is validated by NewMutex, as one given there would be.
func WithDefaultNamespace(namespace string) ClientOption {
	return func(c *Client) {
		inner := c.leases
		if d, ok := inner.(*defaultNamespaceLeases); ok {
			inner = d.LeasesGetter // the last option wins
		}
		c.leases = &defaultNamespaceLeases{LeasesGetter: inner, namespace: namespace}
	}
}

// defaultNamespaceLeases is the client's Lease getter together with the
// default namespace of its configuration: both say where the client
// works, and both are set once, when it is built.
type defaultNamespaceLeases struct {
	coordinationv1client.LeasesGetter
	namespace string
}

// DefaultNamespace is the namespace that NewMutex uses for "": set by New
// or WithDefaultNamespace; empty when the client has none.
func (c *Client) DefaultNamespace() string {
	if d, ok := c.leases.(*defaultNamespaceLeases); ok {
		return d.namespace
	}
	return ""
}

// mutexNamespace resolves the namespace given to NewMutex: "" is the
// client's default namespace. The result is validated.
func (c *Client) mutexNamespace(namespace string) (string, error) {
	if namespace != "" {
		return namespace, ValidateNamespace(namespace)
	}
	ns := c.DefaultNamespace()
	if ns == "" {
		return "", fmt.Errorf("namespace is empty, and this client has no default namespace (lock.New or WithDefaultNamespace gives it one): %w", ErrInvalid)
	}
	if err := ValidateNamespace(ns); err != nil {
		return "", fmt.Errorf("the client's default namespace: %w", err)
	}
	return ns, nil
}
