package harness

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// NodeInfo describes the local node, for tests that look at it from the
// host.
type NodeInfo struct {
	// SandboxPID is the host PID of the sandbox's init.
	SandboxPID int
	// HostLink is the host's end of the node's uplink.
	HostLink string
	// StateDir is the node's state, removed when the node stops.
	StateDir string
}

// Node describes the local node; false without one (no Options.Node, or
// an external cluster).
func (e *Env) Node() (NodeInfo, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.node == nil || e.node.Sandbox == nil {
		return NodeInfo{}, false
	}
	return NodeInfo{SandboxPID: e.node.Sandbox.PID, HostLink: e.node.Net.HostLink, StateDir: newNodePaths(e.dir).state}, true
}

// KillContainer sends SIGKILL to every process of a container of the local
// node, as an OOM kill or a crash would end it: no signal reaches it first.
// containerID is the pod status's containerID (containerd://ID).
func (e *Env) KillContainer(ctx context.Context, containerID string) error {
	id, ok := strings.CutPrefix(containerID, "containerd://")
	if !ok {
		return fmt.Errorf("container %q is not a containerd container", containerID)
	}
	if e.node == nil {
		return fmt.Errorf("kill container: %w", ErrNoNode)
	}
	out, err := exec.CommandContext(ctx, "ctr", "--address", e.node.ContainerdSocket, "--namespace", "k8s.io",
		"tasks", "kill", "--all", "--signal", "SIGKILL", id).CombinedOutput()
	if err != nil {
		return fmt.Errorf("kill container %s: %w: %s", id, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// ErrNoNode is returned by node operations on an Env without a local node.
var ErrNoNode = errors.New("no local node (Options.Node, root, a local control plane)")

// PodNamespace is Namespace, and waits until pods can start there: the
// controllers have created its default ServiceAccount and kube-root-ca.crt.
func (e *Env) PodNamespace(t testing.TB) string {
	t.Helper()
	ns := e.Namespace(t)
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, e.readyWait, true, func(ctx context.Context) (bool, error) {
		return e.namespaceReady(ctx, ns) == nil, nil
	})
	if err != nil {
		t.Fatalf("harness: namespace %s never got its default ServiceAccount and kube-root-ca.crt: %v", ns, e.namespaceReady(t.Context(), ns))
	}
	return ns
}
