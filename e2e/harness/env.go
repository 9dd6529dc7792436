package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

const (
	stateFile      = "state.json"
	kubeconfigFile = "kubeconfig"
	logTailLines   = 40
)

// Env is a Kubernetes API for tests: a local control plane started by Start
// (or reloaded by Attach), or an external cluster.
type Env struct {
	logf       func(string, ...any)
	readyWait  time.Duration
	stopGrace  time.Duration
	local      bool
	dir        string
	kubeconfig string
	admin      *rest.Config
	client     kubernetes.Interface

	// mu serialises fault control and Stop, which replace processes.
	mu        sync.Mutex
	detached  bool
	etcdURL   string
	etcd      *process
	apiserver *process
	// node is the local node, if Options.Node asked for one.
	node *node
	// ha is the HA topology, if Options.HA asked for it; etcd and
	// apiserver are then nil.
	ha *haCluster
}

// state is persisted in Dir so that a detached control plane can be found
// and stopped by a later process.
type state struct {
	Detached   bool       `json:"detached"`
	Host       string     `json:"host"`
	CAFile     string     `json:"caFile"`
	AdminToken string     `json:"adminToken"`
	EtcdURL    string     `json:"etcdURL"`
	Etcd       *process   `json:"etcd"`
	APIServer  *process   `json:"apiserver"`
	Node       *node      `json:"node,omitempty"`
	HA         *haCluster `json:"ha,omitempty"`
}

// Start returns a ready Kubernetes API: the external cluster selected by
// Options.Kubeconfig or KONLEASE_E2E_KUBECONFIG, or else a local etcd and
// kube-apiserver. On error nothing is left running.
func Start(ctx context.Context, opts Options) (*Env, error) {
	if path := opts.externalKubeconfig(); path != "" {
		if opts.Detach {
			return nil, errors.New("harness: Options.Detach needs a local control plane, not Kubeconfig")
		}
		return startExternal(ctx, opts, path)
	}
	return startLocal(ctx, opts)
}

func startExternal(ctx context.Context, opts Options, path string) (*Env, error) {
	// ExplicitPath only: no merging with KUBECONFIG or ~/.kube/config.
	loader := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, &clientcmd.ConfigOverrides{})
	cfg, err := loader.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", path, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("client for %s: %w", cfg.Host, err)
	}
	v, err := client.Discovery().ServerVersionWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("reach cluster %s from %s: %w", cfg.Host, path, err)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", path, err)
	}
	e := &Env{
		logf:       opts.logf(),
		readyWait:  opts.readyTimeout(),
		stopGrace:  opts.stopGrace(),
		kubeconfig: abs,
		admin:      cfg,
		client:     client,
	}
	e.logf("using external cluster %s (Kubernetes %s) from %s", cfg.Host, v.GitVersion, abs)
	return e, nil
}

func startLocal(ctx context.Context, opts Options) (_ *Env, err error) {
	binDir, err := opts.binDir()
	if err != nil {
		return nil, err
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "konlease-cp-"); err != nil {
			return nil, fmt.Errorf("create control plane directory: %w", err)
		}
	} else {
		if dir, err = filepath.Abs(dir); err != nil {
			return nil, fmt.Errorf("resolve %s: %w", opts.Dir, err)
		}
		if _, err := os.Stat(filepath.Join(dir, stateFile)); err == nil {
			return nil, fmt.Errorf("%s already holds a control plane (stop it first)", dir)
		}
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create control plane directory: %w", err)
		}
	}
	e := &Env{
		logf:       opts.logf(),
		readyWait:  opts.readyTimeout(),
		stopGrace:  opts.stopGrace(),
		local:      true,
		dir:        dir,
		kubeconfig: filepath.Join(dir, kubeconfigFile),
		detached:   opts.Detach,
	}
	defer func() {
		if err != nil {
			if stopErr := e.Stop(); stopErr != nil {
				err = errors.Join(err, fmt.Errorf("clean up: %w", stopErr))
			}
		}
	}()

	if opts.HA != nil {
		if err := e.startHA(ctx, binDir, opts); err != nil {
			return nil, err
		}
		return e, nil
	}
	var (
		p        *pki
		nodeBins nodeBinaries
		images   []string
	)
	if opts.Node != nil {
		// The node's sandbox comes first: the API server listens on the
		// host's end of its uplink.
		images = slices.Clone(opts.Node.Images)
		if p, nodeBins, err = e.startNodeSandbox(opts.Node, binDir, &images); err != nil {
			return nil, err
		}
	} else if p, err = writePKI(dir); err != nil {
		return nil, err
	}
	// Ports are picked before the children bind them, so another process can
	// take one in between; that start is retried on new ports.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		if err := e.configure(binDir, p, opts); err != nil {
			return nil, err
		}
		err := e.startAll(ctx)
		if err == nil {
			break
		}
		if attempt == attempts || !strings.Contains(err.Error(), "address already in use") {
			return nil, err
		}
		e.logf("a port was taken before the control plane bound it; retrying on new ports")
		// Only etcd and kube-apiserver: a node's sandbox keeps running.
		for _, p := range []*process{e.apiserver, e.etcd} {
			if err := p.stop(ctx, e.stopGrace); err != nil {
				return nil, err
			}
		}
		// The member was initialised with the old peer URL.
		if err := os.RemoveAll(filepath.Join(dir, "etcd-data")); err != nil {
			return nil, fmt.Errorf("reset etcd data: %w", err)
		}
	}
	if opts.Node != nil {
		if err := e.configureNodeControllers(nodeBins, p); err != nil {
			return nil, err
		}
		e.mu.Lock()
		err := e.startNodeLocked(ctx, images)
		e.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	e.logf("control plane ready: %s (dir %s)", e.admin.Host, dir)
	return e, nil
}

// configure picks free ports and sets up the processes, the admin client and
// the admin kubeconfig for them.
func (e *Env) configure(binDir string, p *pki, opts Options) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	clientPort, peerPort, securePort := ports[0], ports[1], ports[2]
	e.etcdURL = loopbackURL("http", clientPort)
	peerURL := loopbackURL("http", peerPort)
	host := loopbackURL("https", securePort)
	address, serviceRange := "127.0.0.1", "10.0.0.0/24"
	var nodeArgs []string
	if e.node != nil {
		// See nodeNet: the host's end of the node's uplink, and the
		// kubernetes Service's ClusterIP on it.
		address, securePort = e.node.Net.HostIP().String(), apiServerNodePort
		host = "https://" + net.JoinHostPort(address, strconv.Itoa(securePort))
		serviceRange = e.node.Net.ServiceRange().String()
		nodeArgs = e.node.apiServerArgs
	}

	etcdArgs := []string{
		"--name=konlease",
		"--data-dir=" + filepath.Join(e.dir, "etcd-data"),
		"--listen-client-urls=" + e.etcdURL,
		"--advertise-client-urls=" + e.etcdURL,
		"--listen-peer-urls=" + peerURL,
		"--initial-advertise-peer-urls=" + peerURL,
		"--initial-cluster=konlease=" + peerURL,
	}
	if !opts.EtcdFsync {
		etcdArgs = append(etcdArgs, "--unsafe-no-fsync")
	}
	e.etcd = &process{
		Name:    "etcd",
		Binary:  filepath.Join(binDir, "etcd"),
		Args:    etcdArgs,
		LogPath: filepath.Join(e.dir, "etcd.log"),
	}
	e.apiserver = &process{
		Name:    "kube-apiserver",
		Binary:  filepath.Join(binDir, "kube-apiserver"),
		Args:    append(apiServerArgs(p, e.etcdURL, address, securePort, host, serviceRange, filepath.Join(e.dir, "apiserver-certs")), append(nodeArgs, opts.APIServerArgs...)...),
		LogPath: filepath.Join(e.dir, "kube-apiserver.log"),
	}
	e.admin = &rest.Config{
		Host:            host,
		BearerToken:     p.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
	}
	if e.client, err = kubernetes.NewForConfig(e.Config()); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	return writeKubeconfigFile(e.kubeconfig, e.admin, "default")
}

// apiServerArgs is the kube-apiserver command line for one API server on
// etcdServers (comma-separated), listening on address:securePort, whose
// ServiceAccount tokens name issuer; certDir is its own.
func apiServerArgs(p *pki, etcdServers, address string, securePort int, issuer, serviceRange, certDir string) []string {
	return []string{
		"--etcd-servers=" + etcdServers,
		"--bind-address=" + address,
		"--advertise-address=" + address,
		"--secure-port=" + strconv.Itoa(securePort),
		// No Service traffic: do not maintain the kubernetes Service
		// endpoints (nor, with several API servers, count them).
		"--endpoint-reconciler-type=none",
		"--service-cluster-ip-range=" + serviceRange,
		"--tls-cert-file=" + p.certFile,
		"--tls-private-key-file=" + p.keyFile,
		// Unused (certificates are given above) but keeps the default
		// /var/run/kubernetes out of the picture.
		"--cert-dir=" + certDir,
		// Needed by the TokenRequest API, which Identity uses.
		"--service-account-issuer=" + issuer,
		"--service-account-key-file=" + p.saKeyFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--authorization-mode=RBAC",
		"--token-auth-file=" + p.tokenFile,
		"--profiling=false",
	}
}

// startAll starts etcd, then kube-apiserver, each waited for.
func (e *Env) startAll(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.startEtcdLocked(ctx); err != nil {
		return err
	}
	return e.startAPIServerLocked(ctx)
}

// Stop stops the local processes (kube-apiserver first) and removes the
// directory. For an external cluster it does nothing. If a process cannot be
// stopped the directory is kept for its logs.
func (e *Env) Stop() error {
	if !e.local {
		return nil
	}
	if err := e.stopAll(); err != nil {
		return fmt.Errorf("%w (kept %s)", err, e.dir)
	}
	if err := os.RemoveAll(e.dir); err != nil {
		return fmt.Errorf("remove %s: %w", e.dir, err)
	}
	return nil
}

// stopAll stops the node (its sandbox, then the controllers), then
// kube-apiserver, then etcd.
func (e *Env) stopAll() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	var errs []error
	procs := e.processesLocked()
	for i := len(procs) - 1; i >= 0; i-- {
		p := procs[i]
		grace := e.stopGrace
		if p.Sandbox {
			grace = max(grace, nodeStopGrace)
		}
		if err := p.stop(context.Background(), grace); err != nil {
			errs = append(errs, err)
		}
	}
	if e.ha != nil {
		e.ha.closeNet()
	}
	if len(errs) > 0 {
		return fmt.Errorf("stop control plane: %w", errors.Join(errs...))
	}
	return nil
}

// processesLocked lists the local processes that exist, in the order in
// which they depend on each other (stopped in reverse).
func (e *Env) processesLocked() []*process {
	all := []*process{e.etcd, e.apiserver}
	if e.ha != nil {
		all = e.ha.processes()
	}
	if e.node != nil {
		all = append(all, e.node.ControllerManager, e.node.Scheduler, e.node.Sandbox)
	}
	return slices.DeleteFunc(all, func(p *process) bool { return p == nil })
}

// Local reports whether the Env runs its own control plane (so fault control
// works) rather than using an external cluster.
func (e *Env) Local() bool { return e.local }

// Dir is the local control plane's directory ("" for an external cluster).
func (e *Env) Dir() string { return e.dir }

// Config returns a fresh copy of the admin client configuration (trusting the
// cluster CA; never insecure).
func (e *Env) Config() *rest.Config { return rest.CopyConfig(e.admin) }

// EtcdURL returns the client URL of the local etcd that backs the API
// server (for benchmarks that compare with etcd's own primitives); empty for
// an external cluster.
func (e *Env) EtcdURL() string { return e.etcdURL }

// AdminKubeconfig returns the path of a kubeconfig for the admin, for CLI
// tests: the one the Env wrote, or the external cluster's.
func (e *Env) AdminKubeconfig() string { return e.kubeconfig }

// Client returns an admin clientset.
func (e *Env) Client() kubernetes.Interface { return e.client }

// Component describes one local control plane process.
type Component struct {
	Name    string
	PID     int
	Running bool
	LogPath string
}

// Components lists the local processes (none for an external cluster).
func (e *Env) Components() []Component {
	if !e.local {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Component
	for _, p := range e.processesLocked() {
		out = append(out, Component{Name: p.Name, PID: p.PID, Running: p.running(), LogPath: p.LogPath})
	}
	return out
}

// Ready checks once that the API server answers /readyz with 200. The error
// names the failing checks rather than quoting the whole report.
func (e *Env) Ready(ctx context.Context) error { return readyz(ctx, e.client) }

// startEtcdLocked starts etcd and waits for it to be healthy.
func (e *Env) startEtcdLocked(ctx context.Context) error {
	if err := e.etcd.start(e.detached); err != nil {
		return err
	}
	if err := e.saveStateLocked(); err != nil {
		return err
	}
	return e.waitReady(ctx, e.etcd, etcdHealth(e.etcdURL))
}

// startAPIServerLocked starts kube-apiserver and waits for /readyz.
func (e *Env) startAPIServerLocked(ctx context.Context) error {
	if err := e.apiserver.start(e.detached); err != nil {
		return err
	}
	if err := e.saveStateLocked(); err != nil {
		return err
	}
	return e.waitAPIServerLocked(ctx)
}

func (e *Env) waitAPIServerLocked(ctx context.Context) error {
	return e.waitReady(ctx, e.apiserver, e.Ready)
}

// waitReady polls check until it succeeds, the process exits, or the ready
// timeout passes; failures carry the tail of the process log.
func (e *Env) waitReady(ctx context.Context, p *process, check func(context.Context) error) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, e.readyWait)
	defer cancel()
	var lastErr error
	err := wait.PollUntilContextCancel(ctx, 100*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		if err := p.exitErr(); err != nil {
			return false, err
		}
		attempt, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		lastErr = check(attempt)
		return lastErr == nil, nil
	})
	if err != nil {
		if wait.Interrupted(err) {
			err = fmt.Errorf("%s not ready after %s: %w (last check: %v)", p.Name, time.Since(begin).Round(time.Millisecond), err, lastErr)
		}
		return fmt.Errorf("%w\n---- last lines of %s:\n%s", err, p.LogPath, p.logTail(logTailLines))
	}
	e.logf("%s ready in %s (pid %d)", p.Name, time.Since(begin).Round(time.Millisecond), p.PID)
	return nil
}
