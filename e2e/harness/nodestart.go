package harness

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

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
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
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
