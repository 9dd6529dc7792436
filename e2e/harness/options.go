package harness

import (
	"bufio"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

const (
	// EnvKubeconfig names an existing cluster's kubeconfig to test against
	// instead of a local control plane. KUBECONFIG is deliberately not used.
	EnvKubeconfig = "KONLEASE_E2E_KUBECONFIG"
	// EnvBinDir overrides the directory holding the etcd and kube-apiserver
	// binaries (default: <repo root>/bin).
	EnvBinDir = "KONLEASE_CONTROLPLANE_BIN"

	modulePath = "github.com/konlease/konlease"
)

// ErrExternal is returned by operations that need the local control plane
// (fault control) when the Env uses an external cluster.
var ErrExternal = errors.New("not available on an external cluster")

// Options configures Start. The zero value starts a local control plane in a
// temporary directory, or uses the cluster named by KONLEASE_E2E_KUBECONFIG.
type Options struct {
	// BinDir holds the etcd and kube-apiserver binaries. Default: env
	// KONLEASE_CONTROLPLANE_BIN, else <repo root>/bin.
	BinDir string
	// Kubeconfig selects an existing cluster instead of starting processes.
	// Default: env KONLEASE_E2E_KUBECONFIG, which is not consulted when Detach
	// is set (Detach always means local processes).
	Kubeconfig string
	// Logf receives progress messages. Default: standard error.
	Logf func(format string, args ...any)
	// Dir holds certificates, data, logs, the state file and the admin
	// kubeconfig. It is owned by the Env: Stop removes it. Default: a new
	// temporary directory.
	Dir string
	// EtcdFsync keeps etcd's fsync. By default etcd runs with
	// --unsafe-no-fsync: the data is throwaway, and fsync dominates write
	// latency on shared CI disks.
	EtcdFsync bool
	// Detach starts the processes so that they outlive the caller (own
	// session, no parent-death signal); see Attach.
	Detach bool
	// ReadyTimeout bounds the wait for each component to become ready.
	// Default: 2 minutes.
	ReadyTimeout time.Duration
	// StopGrace is how long a component may take to exit after SIGTERM
	// before it gets SIGKILL. Default: 10 seconds.
	StopGrace time.Duration
	// APIServerArgs are appended to the kube-apiserver command line
	// (later flags win), e.g. to enable a feature gate.
	APIServerArgs []string
	// Node, if set, adds a node that runs pods (see NodeOptions): the API
	// server then listens on the node network's host address, port 443,
	// rather than on 127.0.0.1. Ignored for an external cluster, which
	// has its own nodes.
	Node *NodeOptions
	// HA, if set, starts the HA topology instead of one etcd and one
	// kube-apiserver (see HAOptions and the package documentation).
	HA *HAOptions
}

func (o Options) logf() func(string, ...any) {
	if o.Logf != nil {
		return o.Logf
	}
	l := log.New(os.Stderr, "harness: ", log.Ltime|log.Lmicroseconds)
	return l.Printf
}

func (o Options) readyTimeout() time.Duration {
	if o.ReadyTimeout > 0 {
		return o.ReadyTimeout
	}
	return 2 * time.Minute
}

func (o Options) stopGrace() time.Duration {
	if o.StopGrace > 0 {
		return o.StopGrace
	}
	return 10 * time.Second
}

// externalKubeconfig returns the kubeconfig of the cluster to use, or "" for
// a local control plane.
func (o Options) externalKubeconfig() string {
	if o.Kubeconfig != "" || o.Detach {
		return o.Kubeconfig
	}
	return os.Getenv(EnvKubeconfig)
}

// binDir resolves and checks the directory holding the binaries.
func (o Options) binDir() (string, error) {
	dir := o.BinDir
	if dir == "" {
		dir = os.Getenv(EnvBinDir)
	}
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", fmt.Errorf("locate control plane binaries (set %s or Options.BinDir): %w", EnvBinDir, err)
		}
		dir = filepath.Join(root, "bin")
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve %s: %w", dir, err)
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("control plane binary missing (run make controlplane): %w", err)
		}
		if fi.IsDir() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("control plane binary %s is not executable (run make controlplane)", filepath.Join(dir, name))
		}
	}
	return dir, nil
}

// RepoRoot walks up from the working directory to the directory whose go.mod
// declares the konlease module. Nested modules (e2e/controlplane, tools) are
// passed over because their module paths differ.
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("get working directory: %w", err)
	}
	for dir := wd; ; {
		if mod, err := moduleOf(filepath.Join(dir, "go.mod")); err == nil && mod == modulePath {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod for module %s in %s or its parents", modulePath, wd)
		}
		dir = parent
	}
}

// moduleOf returns the module path declared by a go.mod file.
func moduleOf(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if rest, ok := strings.CutPrefix(line, "module"); ok && rest != line && (rest == "" || rest[0] == ' ' || rest[0] == '\t') {
			if i := strings.Index(rest, "//"); i >= 0 {
				rest = rest[:i]
			}
			rest = strings.TrimSpace(rest)
			if unq, err := strconv.Unquote(rest); err == nil {
				rest = unq
			}
			return rest, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s has no module directive", gomod)
}
