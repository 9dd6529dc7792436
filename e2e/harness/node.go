package harness

import (
	"archive/tar"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/konlease/konlease/e2e/internal/sandbox"
)

// NodeOptions adds a node to a local control plane: kube-controller-manager
// and kube-scheduler beside kube-apiserver, and containerd and kubelet in a
// sandbox of their own (package e2e/internal/sandbox). Needs root on Linux,
// the binaries of `make node` and the packages that e2e/node/packages.sh
// installs.
type NodeOptions struct {
	// Images are image archives (docker save format, as bin/images/*.tar)
	// imported into the node's containerd before Start returns. Nothing
	// can be pulled: pods must use imported images with imagePullPolicy
	// Never or IfNotPresent. The sandbox (pause) image is always imported.
	Images []string
	// CNIBinDir holds the CNI plugins bridge, host-local and loopback.
	// Default: the first of /usr/lib/cni (Debian) and /opt/cni/bin that
	// has them.
	CNIBinDir string
}

// NodeName is the name of the local node.
const NodeName = "konlease-node"

const (
	// nodeStopGrace bounds the sandbox's orderly stop: kubelet, then
	// containerd, each up to 10s, then the clean-up.
	nodeStopGrace = 40 * time.Second
	// PauseImageArchive is the sandbox image's archive in the binary
	// directory (make node).
	pauseImageArchive = "images/pause.tar"
)

// ErrNodeNeedsRoot is returned by Start when Options.Node is set and the
// process is not root.
var ErrNodeNeedsRoot = errors.New("the local node needs root (network and mount namespaces, containerd, kubelet)")

// nodeHostPrograms are the programs of OS packages the node runs.
var nodeHostPrograms = []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "ip"}

// node is the state of the local node, persisted in the state file.
type node struct {
	Net               nodeNet  `json:"net"`
	ContainerdSocket  string   `json:"containerdSocket"`
	Sandbox           *process `json:"sandbox"`
	ControllerManager *process `json:"controllerManager"`
	Scheduler         *process `json:"scheduler"`
	// Health endpoints of kube-controller-manager and kube-scheduler.
	ControllerManagerHealth string `json:"controllerManagerHealth"`
	SchedulerHealth         string `json:"schedulerHealth"`

	// apiServerArgs are the API server's flags for the node (its client
	// certificate for kubelet); needed only to start.
	apiServerArgs []string
}

// nodeBinaries checks and returns what the node runs.
type nodeBinaries struct {
	kubelet, controllerManager, scheduler, sandbox, pauseArchive string
	cniBinDir                                                    string
}

func findNodeBinaries(binDir string, opts *NodeOptions) (nodeBinaries, error) {
	b := nodeBinaries{
		kubelet:           filepath.Join(binDir, "kubelet"),
		controllerManager: filepath.Join(binDir, "kube-controller-manager"),
		scheduler:         filepath.Join(binDir, "kube-scheduler"),
		sandbox:           filepath.Join(binDir, "nodesandbox"),
		pauseArchive:      filepath.Join(binDir, pauseImageArchive),
	}
	var missing []string
	for _, f := range []string{b.kubelet, b.controllerManager, b.scheduler, b.sandbox, b.pauseArchive} {
		if _, err := os.Stat(f); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("node binaries missing (run make node): %s", strings.Join(missing, ", "))
	}
	for _, prog := range nodeHostPrograms {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, prog)
		}
	}
	b.cniBinDir = opts.CNIBinDir
	if b.cniBinDir == "" {
		for _, d := range []string{"/usr/lib/cni", "/opt/cni/bin"} {
			if hasCNIPlugins(d) {
				b.cniBinDir = d
				break
			}
		}
	}
	if b.cniBinDir == "" || !hasCNIPlugins(b.cniBinDir) {
		missing = append(missing, "CNI plugins bridge, host-local and loopback (in /usr/lib/cni or /opt/cni/bin)")
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("the node needs programs that are not installed: %s (run e2e/node/packages.sh as root; on Debian it installs containerd, runc, containernetworking-plugins and iproute2)", strings.Join(missing, ", "))
	}
	return b, nil
}

func hasCNIPlugins(dir string) bool {
	for _, p := range []string{"bridge", "host-local", "loopback"} {
		if fi, err := os.Stat(filepath.Join(dir, p)); err != nil || fi.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// imageNames returns the repository tags recorded in an image archive of
// the docker save format (its manifest.json).
func imageNames(archive string) ([]string, error) {
	f, err := os.Open(archive)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: no manifest.json: not an image archive of the docker save format", archive)
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", archive, err)
		}
		if h.Name != "manifest.json" {
			continue
		}
		var m []struct {
			RepoTags []string `json:"RepoTags"`
		}
		if err := json.NewDecoder(tr).Decode(&m); err != nil {
			return nil, fmt.Errorf("%s: manifest.json: %w", archive, err)
		}
		var tags []string
		for _, e := range m {
			tags = append(tags, e.RepoTags...)
		}
		if len(tags) == 0 {
			return nil, fmt.Errorf("%s: the image has no name (RepoTags)", archive)
		}
		return tags, nil
	}
}

// startNodeSandbox picks the node's network, writes the PKI (the API
// server's certificate must name the host's address on that network) and
// starts the sandbox. It returns the PKI for the rest of the control plane.
func (e *Env) startNodeSandbox(opts *NodeOptions, binDir string, images *[]string) (*pki, nodeBinaries, error) {
	if os.Geteuid() != 0 {
		return nil, nodeBinaries{}, ErrNodeNeedsRoot
	}
	bins, err := findNodeBinaries(binDir, opts)
	if err != nil {
		return nil, bins, err
	}
	*images = dedupePaths(append([]string{bins.pauseArchive}, *images...))
	taken := map[byte]bool{}
	for attempt := 1; ; attempt++ {
		n, err := pickNodeNet(taken)
		if err != nil {
			return nil, bins, err
		}
		e.node = &node{Net: n}
		p, err := writePKI(e.dir, net.IP(n.HostIP().AsSlice()))
		if err != nil {
			return nil, bins, err
		}
		err = e.startSandbox(bins, p)
		if err == nil {
			return p, bins, nil
		}
		if !errors.Is(err, errNodeNetTaken) || attempt == 3 {
			return nil, bins, err
		}
		e.logf("%v; picking another subnet", err)
		taken[n.Subnet.Addr().As4()[2]] = true
	}
}

// startSandbox writes the node's configuration and starts the sandbox with
// containerd and kubelet, and the uplink to it. kubelet waits inside the
// sandbox until the API server answers.
func (e *Env) startSandbox(bins nodeBinaries, p *pki) error {
	np, err := writeNodePKI(e.dir, p, NodeName)
	if err != nil {
		return err
	}
	e.node.apiServerArgs = []string{
		"--kubelet-client-certificate=" + np.apiserverKubeletCert,
		"--kubelet-client-key=" + np.apiserverKubeletKey,
	}
	pause, err := imageNames(bins.pauseArchive)
	if err != nil {
		return err
	}
	paths := newNodePaths(e.dir)
	e.node.ContainerdSocket = paths.containerdSocket
	apiserver := net.JoinHostPort(e.node.Net.HostIP().String(), strconv.Itoa(apiServerNodePort))
	// configure sets the same again, with the admin client.
	e.admin = &rest.Config{Host: "https://" + apiserver, BearerToken: p.adminToken, TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM}}
	if err := writeNodeConfig(paths, e.node.Net, bins.cniBinDir, pause[0], e.admin, np, !isCgroupV2()); err != nil {
		return err
	}
	spec := &sandbox.Spec{
		Hostname: NodeName,
		Network: sandbox.Network{
			Uplink:  sandboxUplink,
			Bridge:  sandboxBridge,
			Address: fmt.Sprintf("%s/%d", e.node.Net.NodeIP(), e.node.Net.Subnet.Bits()),
		},
		Masks:     []string{"/run", "/var/lib", "/var/log"},
		Overrides: kubeletTunables,
		StateDir:  paths.state,
		Processes: []sandbox.Process{
			{
				Name: "containerd", Path: mustLookPath("containerd"),
				Args: []string{"--config", paths.containerdConfig},
				Log:  filepath.Join(e.dir, "containerd.log"),
			},
			{
				Name: "kubelet", Path: bins.kubelet,
				Args: []string{
					"--config=" + paths.kubeletConfig,
					"--kubeconfig=" + paths.kubeletKubecfg,
					"--root-dir=" + paths.kubeletRoot,
					"--hostname-override=" + NodeName,
					"--node-ip=" + e.node.Net.NodeIP().String(),
					"--v=2",
				},
				Log: filepath.Join(e.dir, "kubelet.log"),
				WaitFor: []sandbox.Endpoint{
					{Network: "unix", Address: paths.containerdSocket},
					{Network: "tcp", Address: apiserver},
				},
			},
		},
	}
	if err := spec.Write(filepath.Join(e.dir, "sandbox.json")); err != nil {
		return err
	}
	e.node.Sandbox = &process{
		Name:    "nodesandbox",
		Binary:  bins.sandbox,
		Args:    []string{filepath.Join(e.dir, "sandbox.json")},
		LogPath: filepath.Join(e.dir, "nodesandbox.log"),
		Sandbox: true,
	}
	if err := e.node.Sandbox.start(e.detached); err != nil {
		return err
	}
	if err := e.saveStateLocked(); err != nil {
		return err
	}
	if err := e.node.Net.createUplink(e.node.Sandbox.PID); err != nil {
		if errors.Is(err, errLinkExists) {
			// Another run took the subnet between the check and the link:
			// the certificate names this subnet, so the start begins again.
			err = fmt.Errorf("%w: %w", errNodeNetTaken, err)
		}
		return err
	}
	e.logf("node sandbox started (pid %d); node network %s, API server at %s", e.node.Sandbox.PID, e.node.Net.Subnet, apiserver)
	return nil
}

// dedupePaths drops later duplicates of a path (make up imports every
// archive of bin/images, the pause image among them).
func dedupePaths(paths []string) []string {
	seen := map[string]bool{}
	return slices.DeleteFunc(paths, func(p string) bool {
		abs, err := filepath.Abs(p)
		if err != nil {
			abs = p
		}
		dup := seen[abs]
		seen[abs] = true
		return dup
	})
}

// errNodeNetTaken makes startLocal start again on another subnet.
var errNodeNetTaken = errors.New("node network taken by another run")

func mustLookPath(prog string) string {
	p, err := exec.LookPath(prog)
	if err != nil {
		return prog // findNodeBinaries has checked; the sandbox reports it
	}
	return p
}

func isCgroupV2() bool {
	_, err := os.Stat("/sys/fs/cgroup/cgroup.controllers")
	return err == nil
}

// configureNodeControllers sets up kube-controller-manager and
// kube-scheduler for the API server configured in e.admin.
func (e *Env) configureNodeControllers(bins nodeBinaries, p *pki) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	common := func(name string, port int) []string {
		return []string{
			"--kubeconfig=" + e.kubeconfig,
			"--authentication-kubeconfig=" + e.kubeconfig,
			"--authorization-kubeconfig=" + e.kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(port),
			"--cert-dir=" + filepath.Join(e.dir, name+"-certs"),
			"--leader-elect=false",
			"--profiling=false",
		}
	}
	e.node.ControllerManager = &process{
		Name:   "kube-controller-manager",
		Binary: bins.controllerManager,
		Args: append(common("kube-controller-manager", ports[0]),
			// The CA in every namespace's kube-root-ca.crt, which the pods'
			// in-cluster configuration trusts.
			"--root-ca-file="+p.caFile,
			"--service-account-private-key-file="+p.saKeyFile,
			"--use-service-account-credentials=false",
		),
		LogPath: filepath.Join(e.dir, "kube-controller-manager.log"),
	}
	e.node.ControllerManagerHealth = loopbackURL("https", ports[0]) + "/healthz"
	e.node.Scheduler = &process{
		Name:    "kube-scheduler",
		Binary:  bins.scheduler,
		Args:    common("kube-scheduler", ports[1]),
		LogPath: filepath.Join(e.dir, "kube-scheduler.log"),
	}
	e.node.SchedulerHealth = loopbackURL("https", ports[1]) + "/healthz"
	return nil
}

// startNodeLocked starts the controllers and waits for the node: the
// controllers healthy, containerd up and the images imported, the Node
// Ready, and the default ServiceAccount and kube-root-ca.crt there.
func (e *Env) startNodeLocked(ctx context.Context, images []string) error {
	begin := time.Now()
	if err := e.bindNodesGroup(ctx); err != nil {
		return err
	}
	for _, c := range []struct {
		p      *process
		health string
	}{{e.node.ControllerManager, e.node.ControllerManagerHealth}, {e.node.Scheduler, e.node.SchedulerHealth}} {
		if err := c.p.start(e.detached); err != nil {
			return err
		}
		if err := e.saveStateLocked(); err != nil {
			return err
		}
		if err := e.waitReady(ctx, c.p, e.healthCheck(c.health)); err != nil {
			return err
		}
	}
	sb := e.node.Sandbox
	if err := e.waitReady(ctx, sb, func(ctx context.Context) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", e.node.ContainerdSocket)
		if err != nil {
			return err
		}
		return c.Close()
	}); err != nil {
		return err
	}
	for _, img := range images {
		if err := e.importImage(ctx, img); err != nil {
			return err
		}
	}
	if err := e.waitReady(ctx, sb, e.nodeReady); err != nil {
		return fmt.Errorf("%w\n---- last lines of %s:\n%s", err, filepath.Join(e.dir, "kubelet.log"), fileTail(filepath.Join(e.dir, "kubelet.log"), logTailLines))
	}
	e.logf("node %s ready in %s", NodeName, time.Since(begin).Round(time.Millisecond))
	return nil
}

// bindNodesGroup grants kubelet identities the ClusterRole system:node,
// which RBAC bootstraps without a binding.
func (e *Env) bindNodesGroup(ctx context.Context) error {
	_, err := e.client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: namePrefix + "nodes"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "system:node"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: nodesGroup}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("bind %s to system:node: %w", nodesGroup, err)
	}
	return nil
}

// healthCheck checks a controller's /healthz with the admin's token. The
// controllers serve with a certificate they made themselves, which nothing
// can verify; the request goes to loopback only.
func (e *Env) healthCheck(url string) func(context.Context) error {
	client := &http.Client{
		Timeout:   2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, //nolint:gosec // self-signed, loopback
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+e.admin.BearerToken)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", url, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil
	}
}

// nodeReady checks that the Node is Ready and that the controllers have
// made the default namespace usable for pods.
func (e *Env) nodeReady(ctx context.Context) error {
	n, err := e.client.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("node %s: %w", NodeName, err)
	}
	ready := false
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status != corev1.ConditionTrue {
				return fmt.Errorf("node %s not ready: %s", NodeName, c.Message)
			}
			ready = true
		}
	}
	if !ready {
		return fmt.Errorf("node %s has no Ready condition yet", NodeName)
	}
	return e.namespaceReady(ctx, metav1.NamespaceDefault)
}

// namespaceReady checks that kube-controller-manager has given namespace
// its default ServiceAccount and kube-root-ca.crt, without which pods do
// not start.
func (e *Env) namespaceReady(ctx context.Context, namespace string) error {
	if _, err := e.client.CoreV1().ServiceAccounts(namespace).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("default ServiceAccount in %s: %w", namespace, err)
	}
	if _, err := e.client.CoreV1().ConfigMaps(namespace).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("kube-root-ca.crt in %s: %w", namespace, err)
	}
	return nil
}

// importImage imports an image archive into the node's containerd, in the
// namespace that the CRI plugin uses.
func (e *Env) importImage(ctx context.Context, archive string) error {
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ctr", "--address", e.node.ContainerdSocket, "--namespace", "k8s.io",
		"images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("import image %s: %w: %s", archive, err, strings.TrimSpace(string(out)))
	}
	e.logf("imported %s in %s", archive, time.Since(begin).Round(time.Millisecond))
	return nil
}
