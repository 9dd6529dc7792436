package harness

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"
)

// nodePaths are the node's files. Everything that kubelet and containerd
// keep lives under state, which the sandbox removes when it stops; logs stay
// in the control plane directory beside the others until Stop.
type nodePaths struct {
	state            string // removed by the sandbox at exit
	containerdConfig string
	containerdRoot   string
	containerdState  string
	containerdSocket string
	cniConfDir       string
	cniIPAMDir       string
	kubeletRoot      string
	kubeletConfig    string
	kubeletKubecfg   string
	podLogs          string
	spec             string
}

func newNodePaths(dir string) nodePaths {
	state := filepath.Join(dir, "node")
	return nodePaths{
		state:            state,
		containerdConfig: filepath.Join(state, "containerd.toml"),
		containerdRoot:   filepath.Join(state, "containerd"),
		containerdState:  filepath.Join(state, "containerd-state"),
		containerdSocket: filepath.Join(state, "containerd.sock"),
		cniConfDir:       filepath.Join(state, "cni"),
		cniIPAMDir:       filepath.Join(state, "cni-ipam"),
		kubeletRoot:      filepath.Join(state, "kubelet"),
		kubeletConfig:    filepath.Join(state, "kubelet.yaml"),
		kubeletKubecfg:   filepath.Join(state, "kubelet.kubeconfig"),
		podLogs:          filepath.Join(dir, "pod-logs"),
		spec:             filepath.Join(state, "sandbox.json"),
	}
}

// maxSocketPath is the room for a unix socket path (sun_path less the NUL).
const maxSocketPath = 107

// containerdConfigTemplate configures containerd 1.6 (config version 2)
// for the node: every path in the run's directory, nothing pulled (the
// sandbox image is imported), runc with cgroupfs, and CNI from our conf dir.
var containerdConfigTemplate = template.Must(template.New("containerd").Funcs(template.FuncMap{"q": strconv.Quote}).Parse(`version = 2
root = {{q .Root}}
state = {{q .State}}
# Snapshotters and plugins this node does not use; "opt" would install into
# /opt/containerd on the host.
disabled_plugins = [
  "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = {{q .Socket}}

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = {{q .SandboxImage}}
  # Lowering oom_score_adj is refused here even to root; without this every
  # sandbox fails with runc's "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = {{q .CNIBinDir}}
    conf_dir = {{q .CNIConfDir}}
    max_conf_num = 1
`))

// writeNodeConfig writes containerd's, CNI's and kubelet's configuration.
func writeNodeConfig(paths nodePaths, n nodeNet, cniBinDir, sandboxImage string, admin *rest.Config, np *nodePKI, cgroupV1 bool) error {
	for _, d := range []string{paths.state, paths.cniConfDir, paths.cniIPAMDir, paths.podLogs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("node directory: %w", err)
		}
	}
	if len(paths.containerdSocket) > maxSocketPath {
		return fmt.Errorf("containerd's socket path %s is longer than a unix socket allows (%d bytes): use a shorter TMPDIR or Options.Dir", paths.containerdSocket, maxSocketPath)
	}
	var toml strings.Builder
	err := containerdConfigTemplate.Execute(&toml, map[string]string{
		"Root": paths.containerdRoot, "State": paths.containerdState, "Socket": paths.containerdSocket,
		"SandboxImage": sandboxImage, "CNIBinDir": cniBinDir, "CNIConfDir": paths.cniConfDir,
	})
	if err != nil {
		return fmt.Errorf("containerd config: %w", err)
	}
	if err := os.WriteFile(paths.containerdConfig, []byte(toml.String()), 0o644); err != nil {
		return fmt.Errorf("containerd config: %w", err)
	}

	// The bridge exists already (the sandbox creates it with the node's
	// address); the plugin attaches pods to it. No isGateway (it would
	// turn on forwarding), no ipMasq (no NAT), and host-local gives no
	// routes: a pod reaches its /24 and nothing else.
	cni := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "konlease",
		"plugins": []any{map[string]any{
			"type":   "bridge",
			"bridge": sandboxBridge,
			"ipam": map[string]any{
				"type":    "host-local",
				"dataDir": paths.cniIPAMDir,
				"ranges": []any{[]any{map[string]any{
					"subnet":     n.Subnet.String(),
					"rangeStart": n.PodRangeStart().String(),
					"rangeEnd":   n.PodRangeEnd().String(),
				}}},
			},
		}},
	}
	raw, err := json.MarshalIndent(cni, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(paths.cniConfDir, "10-konlease.conflist"), raw, 0o644); err != nil {
		return fmt.Errorf("CNI config: %w", err)
	}

	kubelet := map[string]any{
		"apiVersion":               "kubelet.config.k8s.io/v1beta1",
		"kind":                     "KubeletConfiguration",
		"containerRuntimeEndpoint": "unix://" + paths.containerdSocket,
		// What this machine needs: cgroup v1, no QoS hierarchy, no
		// allocatable enforcement. (The containers' cgroups are then
		// containerd's /k8s.io/ID; the sandbox removes them.)
		"cgroupDriver":           "cgroupfs",
		"cgroupsPerQOS":          false,
		"enforceNodeAllocatable": []string{},
		// Error instead of changing the host's kernel tunables; the sandbox
		// shows kubelet the values it wants (kubeletTunables).
		"protectKernelDefaults": true,
		// Lowering its own oom_score_adj is refused here.
		"oomScoreAdj": 0,
		// Own network namespace: the default ports cannot clash with
		// another run's. kube-apiserver authenticates with a client
		// certificate of our CA; no anonymous access.
		"authentication": map[string]any{
			"anonymous": map[string]any{"enabled": false},
			"webhook":   map[string]any{"enabled": false},
			"x509":      map[string]any{"clientCAFile": np.kubeletClientCAFile},
		},
		"authorization": map[string]any{"mode": "AlwaysAllow"},
		"readOnlyPort":  0,
		// No DNS anywhere: pods get an empty resolv.conf.
		"resolvConf": "",
		"podLogsDir": paths.podLogs,
		// Kubelet's defaults outside its root directory.
		"volumePluginDir": filepath.Join(paths.kubeletRoot, "volume-plugins"),
		"failSwapOn":      false,
		// Imported images cannot be pulled again: never collect them, and
		// evict nothing on a nearly full disk of a shared machine.
		"imageGCHighThresholdPercent": 100,
		"imageGCLowThresholdPercent":  99,
		"evictionHard": map[string]string{
			"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%", "nodefs.inodesFree": "1%",
		},
		"shutdownGracePeriod": "0s",
	}
	if cgroupV1 {
		kubelet["failCgroupV1"] = false
	}
	raw, err = yaml.Marshal(kubelet)
	if err != nil {
		return err
	}
	if err := os.WriteFile(paths.kubeletConfig, raw, 0o644); err != nil {
		return fmt.Errorf("kubelet config: %w", err)
	}
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = np.kubeletToken
	return writeKubeconfigFile(paths.kubeletKubecfg, cfg, "default")
}

// kubeletTunables are the kernel tunables kubelet (v1.37) insists on
// (pkg/kubelet/cm: setupKernelTunables). They are global to the machine, so
// the sandbox overrides them inside its mount namespace only; with
// protectKernelDefaults kubelet fails to start, rather than change the host,
// if a later version wants more.
var kubeletTunables = map[string]string{
	"/proc/sys/vm/overcommit_memory":      "1",
	"/proc/sys/vm/panic_on_oom":           "0",
	"/proc/sys/kernel/panic":              "10",
	"/proc/sys/kernel/panic_on_oops":      "1",
	"/proc/sys/kernel/keys/root_maxkeys":  "1000000",
	"/proc/sys/kernel/keys/root_maxbytes": "25000000",
}
