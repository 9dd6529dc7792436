// Package kubeflags gives the example programs the connection flags every
// Kubernetes command line has, loaded the way kubectl loads them, so that
// each example's main is only about package lock.
package kubeflags

import (
	"flag"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Flags are the values of the flags registered by Register.
type Flags struct {
	Kubeconfig string
	Namespace  string
	Name       string
	Verbosity  int
}

// Register adds --kubeconfig, -n (--namespace), --name and -v to fs. defaultName is the
// mutex name used when --name is not given.
func Register(fs *flag.FlagSet, defaultName string) *Flags {
	f := &Flags{}
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the pod's service account)")
	fs.StringVar(&f.Namespace, "n", "", "namespace of the mutex (default: the kubeconfig context's, or the pod's own)")
	fs.StringVar(&f.Namespace, "namespace", "", "same as -n")
	fs.StringVar(&f.Name, "name", defaultName, "name of the mutex")
	fs.IntVar(&f.Verbosity, "v", 0, "log verbosity: 1 logs the lock's decisions, 2 its requests")
	return f
}

// Connect returns the client configuration and the namespace. Without
// --kubeconfig it tries $KUBECONFIG and ~/.kube/config, and when neither
// exists it uses the in-cluster configuration, so the same binary works on a
// laptop and in a pod. The namespace falls back the same way: -n, else the
// current context's, else the pod's own (its service account's).
func (f *Flags) Connect() (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{}
	overrides.Context.Namespace = f.Namespace
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load client configuration: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("find namespace: %w", err)
	}
	return cfg, ns, nil
}

// Logger returns a logger that writes to standard error, so that standard
// output carries only the program's results. At -v 0 it shows only what
// matters to a holder: that it lost its lock.
func (f *Flags) Logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		if prefix != "" {
			args = prefix + ": " + args
		}
		fmt.Fprintln(os.Stderr, args)
	}, funcr.Options{Verbosity: f.Verbosity})
}
