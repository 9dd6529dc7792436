//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// cliTimeout bounds one koncli invocation: no command under test should
// take long, and a hung one must fail the test rather than the suite.
const cliTimeout = 2 * time.Minute

// koncliBuild is the koncli binary, built once per test binary run.
var koncliBuild struct {
	once sync.Once
	path string
	err  error
}

// koncliBinary builds ./cmd/koncli with go build, as a user would, once for
// all CLI tests. The binary goes into the local control plane's directory,
// which Env.Stop removes with everything else the run left; against an
// external cluster it goes into a temporary directory.
func koncliBinary(t testing.TB) string {
	t.Helper()
	koncliBuild.once.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			koncliBuild.err = err
			return
		}
		var dir string
		if env.Dir() != "" {
			dir = filepath.Join(env.Dir(), "koncli-bin")
			err = os.MkdirAll(dir, 0o755)
		} else {
			dir, err = os.MkdirTemp("", "konlease-e2e-koncli-")
		}
		if err != nil {
			koncliBuild.err = err
			return
		}
		path := filepath.Join(dir, "koncli")
		cmd := exec.Command("go", "build", "-o", path, "./cmd/koncli")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			koncliBuild.err = fmt.Errorf("go build ./cmd/koncli: %w\n%s", err, out)
			return
		}
		koncliBuild.path = path
	})
	if koncliBuild.err != nil {
		t.Fatal(koncliBuild.err)
	}
	return koncliBuild.path
}

// cli runs koncli for one test. Its environment never carries the
// caller's KUBECONFIG, and HOME is empty, so a command that is not given a
// kubeconfig on purpose cannot reach any cluster.
type cli struct {
	t *testing.T
	// bin is the executable to run (koncli, or a kubectl-mutex link).
	bin string
	// kubeconfig, if set, is passed with --kubeconfig before the arguments.
	kubeconfig string
	// env is added to the child's environment.
	env []string
	// dir is the working directory; empty: the test's temporary directory.
	dir string
}

func newCLI(t *testing.T, kubeconfig string) *cli {
	t.Helper()
	return &cli{t: t, bin: koncliBinary(t), kubeconfig: kubeconfig}
}

// with returns a copy that adds environment variables.
func (c *cli) with(env ...string) *cli {
	cc := *c
	cc.env = append(slices.Clone(c.env), env...)
	return &cc
}

func (c *cli) command(ctx context.Context, args []string) *exec.Cmd {
	if c.kubeconfig != "" {
		// Global flags first: after run's -- they would be the command's.
		args = append([]string{"--kubeconfig", c.kubeconfig}, args...)
	}
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = cliEnviron(c.t, c.env)
	cmd.Dir = c.dir
	if cmd.Dir == "" {
		cmd.Dir = c.t.TempDir()
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// cliEnviron is the test process's environment without KUBECONFIG,
// KONLEASE_* and the in-cluster variables, with HOME in an empty
// directory, plus extra: koncli finds a cluster only where a test names
// one.
func cliEnviron(t *testing.T, extra []string) []string {
	var out []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case k == "KUBECONFIG", k == "HOME", strings.HasPrefix(k, "KONLEASE_"), strings.HasPrefix(k, "KUBERNETES_SERVICE_"):
			continue
		}
		out = append(out, kv)
	}
	out = append(out, "HOME="+t.TempDir())
	return append(out, extra...)
}

// cliTestName shortens arguments for a subtest name.
func cliTestName(args []string) string {
	var parts []string
	for _, a := range args {
		if len(a) > 40 {
			a = fmt.Sprintf("<%d bytes>", len(a))
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// cliSignalName is how shells name a signal.
func cliSignalName(sig syscall.Signal) string {
	return map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP"}[sig]
}

// cliResult is a finished koncli invocation.
type cliResult struct {
	args           []string
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r cliResult) String() string {
	return fmt.Sprintf("koncli %s: exit %d after %s\nstdout: %q\nstderr: %q", strings.Join(r.args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
}

// run runs koncli to completion.
func (c *cli) run(args ...string) cliResult {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.t.Context(), cliTimeout)
	defer cancel()
	cmd := c.command(ctx, args)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := cliResult{args: args, stdout: out.String(), stderr: errOut.String(), took: time.Since(start)}
	r.code = exitCodeOf(c.t, cmd, err)
	return r
}

// exitCodeOf is the exit status as a shell reports it: 128+n for a
// process killed by signal n.
func exitCodeOf(t testing.TB, cmd *exec.Cmd, err error) int {
	t.Helper()
	if cmd.ProcessState == nil {
		t.Fatalf("%s did not run: %v", cmd.Path, err)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return cmd.ProcessState.ExitCode()
}

// expectCLI fails the test unless r exited with code and its stdout and
// stderr contain the given substrings.
func expectCLI(t *testing.T, r cliResult, code int, stdout, stderr string) {
	t.Helper()
	if r.code != code || !strings.Contains(r.stdout, stdout) || !strings.Contains(r.stderr, stderr) {
		t.Errorf("got %s\nwant exit %d, stdout containing %q, stderr containing %q", r, code, stdout, stderr)
	}
}

// expectCLIError fails the test unless r failed with code and exactly one
// stderr line "error: ..." containing each of wants, and nothing on stdout.
func expectCLIError(t *testing.T, r cliResult, code int, wants ...string) {
	t.Helper()
	lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
	var errLines []string
	for _, l := range lines {
		if strings.HasPrefix(l, "error: ") {
			errLines = append(errLines, l)
		}
	}
	ok := r.code == code && len(errLines) == 1 && r.stdout == ""
	for _, w := range wants {
		ok = ok && len(errLines) == 1 && strings.Contains(errLines[0], w)
	}
	if !ok {
		t.Errorf("got %s\nwant exit %d, no stdout, one stderr line \"error: ...\" containing %q", r, code, wants)
	}
}

// cliProc is koncli running in the background.
type cliProc struct {
	t              *testing.T
	cmd            *exec.Cmd
	args           []string
	stdout, stderr *watchedBuffer
	exited         chan struct{}
	res            cliResult
}

// start starts koncli; stdin is empty (not a terminal).
func (c *cli) start(args ...string) *cliProc {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	cmd := c.command(ctx, args)
	p := &cliProc{t: c.t, cmd: cmd, args: args, stdout: newWatchedBuffer(), stderr: newWatchedBuffer(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		cancel()
		c.t.Fatalf("start koncli %s: %v", strings.Join(args, " "), err)
	}
	go func() {
		defer cancel()
		err := cmd.Wait()
		p.res = cliResult{args: args, stdout: p.stdout.String(), stderr: p.stderr.String(), took: time.Since(start)}
		p.res.code = -1
		if cmd.ProcessState != nil {
			p.res.code = exitCodeOf(c.t, cmd, err)
		}
		close(p.exited)
	}()
	c.t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
	})
	return p
}

// waitStderr waits until stderr contains s; it fails the test if koncli
// exits or the time runs out first.
func (p *cliProc) waitStderr(s string) { p.t.Helper(); p.waitFor(p.stderr, "stderr", s) }

// waitStdout waits until stdout contains s.
func (p *cliProc) waitStdout(s string) { p.t.Helper(); p.waitFor(p.stdout, "stdout", s) }

func (p *cliProc) waitFor(b *watchedBuffer, name, s string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.t.Context(), cliTimeout)
	defer cancel()
	if err := b.waitFor(ctx, p.exited, s); err != nil {
		p.t.Fatalf("koncli %s: waiting for %q on %s: %v\nstdout: %q\nstderr: %q", strings.Join(p.args, " "), s, name, err, p.stdout.String(), p.stderr.String())
	}
}

// signal sends sig to koncli.
func (p *cliProc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %s: %v", sig, err)
	}
}

// wait waits for koncli to exit.
func (p *cliProc) wait() cliResult {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.res
	case <-time.After(cliTimeout):
		p.t.Fatalf("koncli %s did not exit within %s\nstderr: %q", strings.Join(p.args, " "), cliTimeout, p.stderr.String())
		return cliResult{}
	}
}

// watchedBuffer is a buffer whose readers can wait for content.
type watchedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	changed chan struct{}
}

func newWatchedBuffer() *watchedBuffer { return &watchedBuffer{changed: make(chan struct{})} }

func (b *watchedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
	return b.buf.Write(p)
}

func (b *watchedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor waits until the content contains s, the writer exits or ctx
// ends.
func (b *watchedBuffer) waitFor(ctx context.Context, exited <-chan struct{}, s string) error {
	for {
		b.mu.Lock()
		found, ch := strings.Contains(b.buf.String(), s), b.changed
		b.mu.Unlock()
		if found {
			return nil
		}
		select {
		case <-ch:
		case <-exited:
			if strings.Contains(b.String(), s) {
				return nil
			}
			return errors.New("koncli exited")
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// adminKubeconfigIn writes an admin kubeconfig whose context uses ns.
func adminKubeconfigIn(t *testing.T, ns string) string {
	t.Helper()
	return env.WriteKubeconfig(t, env.Config(), ns)
}

// leaseVersions maps the name of every Lease in ns to its resourceVersion:
// compared before and after, it proves that a command changed nothing.
func leaseVersions(t *testing.T, ns string) map[string]string {
	t.Helper()
	list, err := admin(t).CoordinationV1().Leases(ns).List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list leases in %s: %v", ns, err)
	}
	out := map[string]string{}
	for _, l := range list.Items {
		out[l.Name] = l.ResourceVersion
	}
	return out
}

func expectUnchanged(t *testing.T, ns string, before map[string]string, what string) {
	t.Helper()
	if after := leaseVersions(t, ns); !maps.Equal(before, after) {
		t.Errorf("%s changed Leases: before %v, after %v", what, before, after)
	}
}

// mutexStatus reads a mutex as admin, through the library.
func mutexStatus(t *testing.T, ns, name string) lock.Status {
	t.Helper()
	st, err := newClient(t, env.Config()).Get(t.Context(), ns, name)
	if err != nil {
		t.Fatalf("get mutex %s/%s: %v", ns, name, err)
	}
	return st
}

// createLeaderLease creates a Lease as leader election writes it: no
// konlease annotations, so konlease must never touch it.
func createLeaderLease(t *testing.T, ns, name string) {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	_, err := admin(t).CoordinationV1().Leases(ns).Create(t.Context(), &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To("leader-1"), LeaseDurationSeconds: ptr.To[int32](15),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To[int32](3),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create leader-election lease: %v", err)
	}
}

// closedPortURL is an https URL on loopback where nothing listens.
func closedPortURL(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return "https://" + addr
}

// unreachableKubeconfig is a kubeconfig for a server that is not there.
func unreachableKubeconfig(t *testing.T) (path, server string) {
	t.Helper()
	cfg := env.Config()
	cfg.Host = closedPortURL(t)
	return env.WriteKubeconfig(t, cfg, "default"), cfg.Host
}

// foreignCA returns a PEM CA certificate that signed nothing the API server
// presents.
func foreignCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "not the cluster CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// twoContextKubeconfig writes an admin kubeconfig with contexts ctx-a (the
// current one, namespace nsA) and ctx-b (namespace nsB).
func twoContextKubeconfig(t *testing.T, nsA, nsB string) string {
	t.Helper()
	path := env.WriteKubeconfig(t, env.Config(), nsA)
	kc, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cur := kc.Contexts[kc.CurrentContext]
	a, b := cur.DeepCopy(), cur.DeepCopy()
	a.Namespace, b.Namespace = nsA, nsB
	kc.Contexts = map[string]*clientcmdapi.Context{"ctx-a": a, "ctx-b": b}
	kc.CurrentContext = "ctx-a"
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// roleVerbs are the verbs on leases that examples/rbac/role.yaml grants.
func roleVerbs(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(root, "examples", "rbac", "role.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the Role koncli documents: %v", err)
	}
	var role rbacv1.Role
	if err := yaml.UnmarshalStrict(data, &role); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var verbs []string
	for _, r := range role.Rules {
		if slices.Contains(r.APIGroups, "coordination.k8s.io") && slices.Contains(r.Resources, "leases") {
			verbs = append(verbs, r.Verbs...)
		}
	}
	if len(verbs) == 0 {
		t.Fatalf("%s grants no verbs on leases", path)
	}
	return verbs
}
