package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/konlease/konlease/lock"
)

// ErrNoConfig means no Kubernetes client configuration was found at all.
var ErrNoConfig = errors.New("no Kubernetes configuration found")

// Factory turns the global flags into what commands need: the namespace, a
// lock client and a logger. It is created once per invocation and handed
// to every command's NewCommand; nothing is built until a command runs, so
// that --help and usage errors never read a kubeconfig.
type Factory struct {
	// ConfigFlags are kubectl's connection flags (--kubeconfig, --context,
	// -n, --server, --token, ...).
	ConfigFlags *genericclioptions.ConfigFlags
	// Verbosity is -v: 0 messages, 1 decisions, 2 requests.
	Verbosity int
	// Events is --events: record Kubernetes Events on the Leases locked.
	Events bool
	// UserAgent is sent with every request.
	UserAgent string
	// NewClient, if set, replaces the lock client built from ConfigFlags
	// (unit tests use a fake clientset).
	NewClient func(log logr.Logger) (*lock.Client, error)

	streams genericiooptions.IOStreams
	log     *logr.Logger
	host    string
	clients []*lock.Client
}

// NewFactory returns a Factory whose messages go to streams.ErrOut.
func NewFactory(streams genericiooptions.IOStreams) *Factory {
	return &Factory{
		ConfigFlags: genericclioptions.NewConfigFlags(false),
		streams:     streams,
	}
}

// AddFlags adds the connection flags and -v to fs.
func (f *Factory) AddFlags(fs *pflag.FlagSet) {
	f.ConfigFlags.AddFlags(fs)
	fs.IntVarP(&f.Verbosity, "v", "v", 0,
		"verbosity of the messages on stderr: 1 adds the locking decisions, 2 every API request")
	fs.BoolVar(&f.Events, "events", true,
		"record Kubernetes Events (acquired, released, taken over, lost) on the mutex's (semaphore's) Lease; an identity that may not create events.events.k8s.io records none, silently")
}

// Logger returns the logger for messages on stderr, built on first use
// from -v.
func (f *Factory) Logger() logr.Logger {
	if f.log == nil {
		l := NewLogger(f.streams.ErrOut, f.Verbosity)
		f.log = &l
	}
	return *f.log
}

// Host is the API server URL of the last configuration built, "" before
// any; error messages name it.
func (f *Factory) Host() string { return f.host }

// Namespace is the namespace to work in: -n, else the kubeconfig context's,
// else (in a pod) the pod's service-account namespace, else "default".
// That order is exactly what client-go's deferred loader implements; it
// reads files but contacts no server.
func (f *Factory) Namespace() (string, error) {
	ns, _, err := f.ConfigFlags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return "", noConfig()
		}
		return "", fmt.Errorf("reading the kubeconfig: %w", err)
	}
	if err := lock.ValidateNamespace(ns); err != nil {
		return "", AsUsage(err)
	}
	return ns, nil
}

// RESTConfig builds the client configuration from the flags, KUBECONFIG,
// ~/.kube/config or the in-cluster configuration.
func (f *Factory) RESTConfig() (*rest.Config, error) {
	if f.nothingConfigured() {
		return nil, noConfig()
	}
	cfg, err := f.ConfigFlags.ToRESTConfig()
	if err != nil {
		if clientcmd.IsEmptyConfig(err) {
			return nil, noConfig()
		}
		return nil, fmt.Errorf("reading the kubeconfig: %w", err)
	}
	f.host = cfg.Host
	if f.UserAgent != "" {
		cfg.UserAgent = f.UserAgent
	}
	// Warnings from the API server (deprecations, say) go to stderr as
	// kubectl prints them, not through klog.
	cfg.WarningHandler = rest.NewWarningWriter(f.streams.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
	log := f.Logger()
	if log.V(2).Enabled() {
		cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
			return &requestLogger{next: rt, log: log.V(2)}
		})
	}
	return cfg, nil
}

// Client returns a lock client for the configured API server.
func (f *Factory) Client() (*lock.Client, error) {
	log := f.Logger()
	if f.NewClient != nil {
		return f.NewClient(log)
	}
	cfg, err := f.RESTConfig()
	if err != nil {
		return nil, err
	}
	opts := []lock.ClientOption{lock.WithLogger(LibraryLogger(log))}
	if f.Events {
		opts = append(opts, lock.WithEvents())
	}
	c, err := lock.NewForConfig(cfg, opts...)
	if err != nil {
		return nil, fmt.Errorf("building the API client for %s: %w", cfg.Host, err)
	}
	f.clients = append(f.clients, c)
	return c, nil
}

// Close closes the lock clients built: it deletes the sessions of their
// fair waiters, so that they need not expire. koncli calls it once the
// command is done.
func (f *Factory) Close(ctx context.Context) error {
	var errs []error
	for _, c := range f.clients {
		errs = append(errs, c.Close(ctx))
	}
	f.clients = nil
	return errors.Join(errs...)
}

// Target resolves what most commands act on: the namespace (as kubectl
// chooses it) and the lock client.
func (f *Factory) Target() (string, *lock.Client, error) {
	ns, err := f.Namespace()
	if err != nil {
		return "", nil, err
	}
	c, err := f.Client()
	if err != nil {
		return "", nil, err
	}
	return ns, c, nil
}

// nothingConfigured reports that no kubeconfig names a cluster, no --server
// was given and koncli is not in a pod. client-go would then fall back to
// http://localhost:8080, a relic of insecure local clusters; saying that
// nothing is configured helps more than "connection refused".
func (f *Factory) nothingConfigured() bool {
	if f.ConfigFlags.APIServer != nil && *f.ConfigFlags.APIServer != "" {
		return false
	}
	raw, err := f.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
	if err != nil || len(raw.Clusters) > 0 {
		return false // a broken kubeconfig reports its own error
	}
	_, err = rest.InClusterConfig()
	return err != nil
}

func noConfig() error {
	return fmt.Errorf("%w: no kubeconfig names a cluster (KUBECONFIG, ~/.kube/config), no --server was given, and koncli is not running in a pod; name a cluster with --kubeconfig, KUBECONFIG or --server", ErrNoConfig)
}

// requestLogger logs every API request at V(2): what -v 2 promises.
type requestLogger struct {
	next http.RoundTripper
	log  logr.Logger
}

func (r *requestLogger) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		r.log.Info("request failed", "method", req.Method, "url", req.URL.String(), "after", time.Since(start).Round(time.Millisecond), "error", err.Error())
		return resp, err
	}
	r.log.Info("request", "method", req.Method, "url", req.URL.String(), "status", resp.StatusCode, "after", time.Since(start).Round(time.Millisecond))
	return resp, nil
}

// WrappedRoundTripper lets client-go see through the wrapper.
func (r *requestLogger) WrappedRoundTripper() http.RoundTripper { return r.next }
