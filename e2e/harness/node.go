package harness

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

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

// ImageNames returns the repository tags recorded in an image archive of
// the docker save format (its manifest.json).
func ImageNames(archive string) ([]string, error) {
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
		// The node's name resolves nowhere (no DNS); its address does.
		"--kubelet-preferred-address-types=InternalIP",
	}
	pause, err := ImageNames(bins.pauseArchive)
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
		Masks: []string{"/run", "/var/lib", "/var/log"},
		// containerd's runc shim puts the CRI's containers (kubelet passes
		// no cgroup parent without cgroupsPerQOS) under /k8s.io.
		CgroupParents: []string{"k8s.io"},
		Overrides:     kubeletTunables,
		StateDir:      paths.state,
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
	// The API server binds the host's end of the uplink next, which exists
	// only while the sandbox does: a sandbox that failed to set up must
	// say so rather than leave a puzzling bind error.
	err = e.waitReady(context.Background(), e.node.Sandbox, func(context.Context) error {
		if !strings.Contains(e.node.Sandbox.logTail(logTailLines), sandboxNetworkReady) {
			return errors.New("sandbox network not set up yet")
		}
		return nil
	})
	if err != nil {
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

// sandboxNetworkReady is what the sandbox logs once its network is set up
// (package sandbox).
const sandboxNetworkReady = "network ready:"

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
