package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// HAOptions selects the HA topology (Options.HA): a 3-member etcd cluster,
// several kube-apiservers on it and a round-robin balancer in front of them.
type HAOptions struct {
	// APIServers is the number of kube-apiservers, 2 or 3. Default: 2.
	APIServers int
	// BalancerCommand runs the balancer as a process of its own, which
	// Options.Detach needs (the balancer must outlive the caller): its
	// argv, to which "-listen HOST:PORT" and one "-backend HOST:PORT" per
	// API server are appended (see ServeBalancer). Without Detach the
	// balancer runs in the caller, where faults can reach it.
	BalancerCommand []string
}

// etcdMembers is the size of the HA topology's etcd cluster: the smallest
// that survives the loss of a member.
const etcdMembers = 3

func (o *HAOptions) apiServers() (int, error) {
	switch o.APIServers {
	case 0:
		return 2, nil
	case 2, 3:
		return o.APIServers, nil
	}
	return 0, fmt.Errorf("harness: HAOptions.APIServers is %d, want 2 or 3", o.APIServers)
}

// haCluster is the HA topology's processes and network. The exported fields
// are persisted in the state file (Attach).
type haCluster struct {
	Members    []*etcdMember `json:"members"`
	APIServers []*apiServer  `json:"apiservers"`
	// Balancer is the balancer's process, with Detach only.
	Balancer *process `json:"balancer,omitempty"`

	// balancer is the balancer in this process, without Detach.
	balancer *Balancer
}

// etcdMember is one member of the etcd cluster. Its peers reach it through
// its peer proxy (without Detach), which a partition cuts.
type etcdMember struct {
	Name      string   `json:"name"`
	ClientURL string   `json:"clientURL"`
	Proc      *process `json:"process"`

	peer *Proxy
}

// apiServer is one kube-apiserver of the HA topology.
type apiServer struct {
	Host string   `json:"host"`
	Proc *process `json:"process"`

	client kubernetes.Interface
}

// processes lists the HA topology's processes in the order they depend on
// each other: etcd members, API servers, the balancer.
func (h *haCluster) processes() []*process {
	var out []*process
	for _, m := range h.Members {
		out = append(out, m.Proc)
	}
	for _, a := range h.APIServers {
		out = append(out, a.Proc)
	}
	if h.Balancer != nil {
		out = append(out, h.Balancer)
	}
	return out
}

// closeNet closes the proxies and the balancer that run in this process.
func (h *haCluster) closeNet() {
	for _, m := range h.Members {
		if m.peer != nil {
			m.peer.Close()
		}
	}
	if h.balancer != nil {
		h.balancer.Close()
	}
}

// configureHA picks free ports and sets up the HA topology's processes,
// proxies and balancer, the admin client and the admin kubeconfig.
func (e *Env) configureHA(binDir string, p *pki, opts Options) error {
	n, err := opts.HA.apiServers()
	if err != nil {
		return err
	}
	// Per member a client and a peer port; per API server its port; the
	// balancer's, when it is a process of its own.
	ports, err := freePorts(2*etcdMembers + n + 1)
	if err != nil {
		return err
	}
	h := &haCluster{}
	e.ha = h
	var cluster, clientURLs []string
	listenPeer := make([]string, etcdMembers)
	for i := range etcdMembers {
		m := &etcdMember{Name: fmt.Sprintf("etcd-%d", i), ClientURL: loopbackURL("http", ports[2*i])}
		listenPeer[i] = loopbackURL("http", ports[2*i+1])
		peerURL := listenPeer[i]
		if !e.detached {
			if m.peer, err = NewProxy(strings.TrimPrefix(listenPeer[i], "http://")); err != nil {
				return err
			}
			peerURL = "http://" + m.peer.Addr()
		}
		cluster = append(cluster, m.Name+"="+peerURL)
		clientURLs = append(clientURLs, m.ClientURL)
		h.Members = append(h.Members, m)
	}
	for i, m := range h.Members {
		peerURL := strings.TrimPrefix(cluster[i], m.Name+"=")
		args := []string{
			"--name=" + m.Name,
			"--data-dir=" + filepath.Join(e.dir, m.Name+"-data"),
			"--listen-client-urls=" + m.ClientURL,
			"--advertise-client-urls=" + m.ClientURL,
			"--listen-peer-urls=" + listenPeer[i],
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=" + strings.Join(cluster, ","),
			"--initial-cluster-token=konlease",
			"--initial-cluster-state=new",
		}
		if !opts.EtcdFsync {
			args = append(args, "--unsafe-no-fsync")
		}
		m.Proc = &process{Name: m.Name, Binary: filepath.Join(binDir, "etcd"), Args: args, LogPath: filepath.Join(e.dir, m.Name+".log")}
	}
	e.etcdURL = strings.Join(clientURLs, ",")

	var backends []string
	for i := range n {
		backends = append(backends, net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[2*etcdMembers+i])))
	}
	var host string
	if e.detached {
		if len(opts.HA.BalancerCommand) == 0 {
			return errors.New("harness: HA with Detach needs HAOptions.BalancerCommand (the balancer must outlive the caller)")
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[len(ports)-1]))
		args := append(append([]string(nil), opts.HA.BalancerCommand[1:]...), "-listen", addr)
		for _, b := range backends {
			args = append(args, "-backend", b)
		}
		h.Balancer = &process{Name: "balancer", Binary: opts.HA.BalancerCommand[0], Args: args, LogPath: filepath.Join(e.dir, "balancer.log")}
		host = "https://" + addr
	} else {
		if h.balancer, err = NewBalancer(backends...); err != nil {
			return err
		}
		host = "https://" + h.balancer.Addr()
	}
	// Every API server names the balancer as the issuer of the tokens it
	// mints, and shares the signing key: a token works on all of them.
	for i, b := range backends {
		_, port, _ := net.SplitHostPort(b)
		securePort, _ := strconv.Atoi(port)
		name := fmt.Sprintf("kube-apiserver-%d", i)
		a := &apiServer{Host: "https://" + b, Proc: &process{
			Name:    name,
			Binary:  filepath.Join(binDir, "kube-apiserver"),
			Args:    append(apiServerArgs(p, e.etcdURL, "127.0.0.1", securePort, host, "10.0.0.0/24", filepath.Join(e.dir, name+"-certs")), opts.APIServerArgs...),
			LogPath: filepath.Join(e.dir, name+".log"),
		}}
		h.APIServers = append(h.APIServers, a)
	}
	e.admin = &rest.Config{
		Host:            host,
		BearerToken:     p.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
	}
	if err := e.haClients(); err != nil {
		return err
	}
	return writeKubeconfigFile(e.kubeconfig, e.admin, "default")
}

// haClients makes the admin client (through the balancer) and one for each
// API server (directly, for its readiness).
func (e *Env) haClients() error {
	var err error
	if e.client, err = kubernetes.NewForConfig(e.Config()); err != nil {
		return fmt.Errorf("admin client: %w", err)
	}
	for _, a := range e.ha.APIServers {
		cfg := e.Config()
		cfg.Host = a.Host
		if a.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("client of %s: %w", a.Proc.Name, err)
		}
	}
	return nil
}

// startAllHA starts the etcd members together (a lone member has no quorum
// and never becomes healthy), then the API servers, then the balancer's
// process if it has one, each waited for.
func (e *Env) startAllHA(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.startMembersLocked(ctx, e.ha.Members); err != nil {
		return err
	}
	for i := range e.ha.APIServers {
		if err := e.startHAAPIServerLocked(ctx, i); err != nil {
			return err
		}
	}
	if b := e.ha.Balancer; b != nil {
		if err := b.start(e.detached); err != nil {
			return err
		}
		if err := e.saveStateLocked(); err != nil {
			return err
		}
		return e.waitReady(ctx, b, e.Ready)
	}
	return nil
}

// resetHA stops what a failed start of the HA topology started and removes
// the members' data (initialised with the old peer URLs), so that it can be
// configured again on new ports.
func (e *Env) resetHA(ctx context.Context) error {
	for _, p := range e.ha.processes() {
		if err := p.stop(ctx, e.stopGrace); err != nil {
			return err
		}
	}
	e.ha.closeNet()
	for _, m := range e.ha.Members {
		if err := os.RemoveAll(filepath.Join(e.dir, m.Name+"-data")); err != nil {
			return fmt.Errorf("reset etcd data: %w", err)
		}
	}
	return nil
}

// startMembersLocked starts the etcd members given, then waits until each
// is healthy (it has a leader).
func (e *Env) startMembersLocked(ctx context.Context, ms []*etcdMember) error {
	for _, m := range ms {
		if err := m.Proc.start(e.detached); err != nil {
			return err
		}
	}
	if err := e.saveStateLocked(); err != nil {
		return err
	}
	for _, m := range ms {
		if err := e.waitReady(ctx, m.Proc, etcdHealth(m.ClientURL)); err != nil {
			return err
		}
	}
	return nil
}

// startHAAPIServerLocked starts API server i and waits until it is ready;
// meanwhile the balancer sends it no client, as a health check would not.
func (e *Env) startHAAPIServerLocked(ctx context.Context, i int) error {
	a := e.ha.APIServers[i]
	if b := e.ha.balancer; b != nil {
		b.Disable(i)
		defer b.Enable(i)
	}
	if err := a.Proc.start(e.detached); err != nil {
		return err
	}
	if err := e.saveStateLocked(); err != nil {
		return err
	}
	return e.waitReady(ctx, a.Proc, func(ctx context.Context) error { return readyz(ctx, a.client) })
}

// startHA configures and starts the HA topology, on new ports if another
// process took one before the children bound it.
func (e *Env) startHA(ctx context.Context, binDir string, opts Options) error {
	if opts.Node != nil {
		return errors.New("harness: Options.HA and Options.Node do not go together")
	}
	p, err := writePKI(e.dir)
	if err != nil {
		return err
	}
	const attempts = 3
	for attempt := 1; ; attempt++ {
		if err := e.configureHA(binDir, p, opts); err != nil {
			return err
		}
		err := e.startAllHA(ctx)
		if err == nil {
			break
		}
		if attempt == attempts || !strings.Contains(err.Error(), "address already in use") {
			return err
		}
		e.logf("a port was taken before the control plane bound it; retrying on new ports")
		if err := e.resetHA(ctx); err != nil {
			return err
		}
	}
	e.logf("HA control plane ready: %s (dir %s)", e.admin.Host, e.dir)
	return nil
}
