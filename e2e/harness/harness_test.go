package harness

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/cert"
)

// childModeEnv makes the test binary act as a child process for the process
// tests instead of running tests.
const childModeEnv = "KONLEASE_HARNESS_TEST_CHILD"

func TestMain(m *testing.M) {
	switch os.Getenv(childModeEnv) {
	case "":
		code := m.Run()
		os.Exit(reportLeaks(code, LeakOptions()))
	case "exit":
		fmt.Println("child started")
		os.Exit(3)
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
		fallthrough
	default:
		fmt.Println("child started")
		select {}
	}
}

// childProcess returns a process running this test binary in the given mode.
func childProcess(t *testing.T, mode string) *process {
	t.Helper()
	t.Setenv(childModeEnv, mode)
	self, err := os.Executable()
	if err != nil {
		t.Fatalf("os.Executable: %v", err)
	}
	return &process{
		Name:    "child-" + mode,
		Binary:  self,
		Args:    []string{"--mode=" + mode, "--dir=" + t.TempDir()},
		LogPath: filepath.Join(t.TempDir(), "child.log"),
	}
}

func startChild(t *testing.T, p *process, detach bool) {
	t.Helper()
	if err := p.start(detach); err != nil {
		t.Fatalf("start: %v", err)
	}
	t.Cleanup(func() {
		if err := p.kill(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	// Signals sent before the child has set up its handlers would test
	// nothing; it prints its banner once they are in place.
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		return strings.Contains(p.logTail(5), "child started"), nil
	})
	if err != nil {
		t.Fatalf("child did not start: %v; log: %s", err, p.logTail(5))
	}
}

func TestProcessStop(t *testing.T) {
	tests := []struct {
		mode        string
		grace       time.Duration
		minDuration time.Duration // SIGKILL only after the grace
	}{
		{mode: "sleep", grace: 10 * time.Second},
		{mode: "ignore-term", grace: 300 * time.Millisecond, minDuration: 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			p := childProcess(t, tt.mode)
			startChild(t, p, false)
			if !p.running() {
				t.Fatalf("running() = false after start, want true")
			}
			pid := p.PID
			begin := time.Now()
			if err := p.stop(t.Context(), tt.grace); err != nil {
				t.Fatalf("stop: %v", err)
			}
			if took := time.Since(begin); took < tt.minDuration || took > tt.grace+killWait {
				t.Errorf("stop took %s, want between %s and %s", took, tt.minDuration, tt.grace+killWait)
			}
			if p.running() || p.PID != 0 {
				t.Errorf("after stop: running() = %v, PID = %d; want false, 0", p.running(), p.PID)
			}
			if _, err := readStat(pid); err == nil {
				t.Errorf("/proc/%d still exists after stop (not reaped)", pid)
			}
		})
	}
}

func TestProcessExitIsReported(t *testing.T) {
	p := childProcess(t, "exit")
	startChild(t, p, false)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("child did not exit")
	}
	err := p.exitErr()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("exitErr() = %v, want it to mention exit status 3", err)
	}
	if got := p.logTail(5); !strings.Contains(got, "child started") {
		t.Errorf("logTail = %q, want it to contain the child's output", got)
	}
}

// TestAdoptedProcess checks the path used by Attach: a process known only
// from the state file is recognised by PID, start time and command line,
// and stopped by signals alone.
func TestAdoptedProcess(t *testing.T) {
	p := childProcess(t, "sleep")
	startChild(t, p, true)
	raw, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var adopted process
	if err := json.Unmarshal(raw, &adopted); err != nil {
		t.Fatal(err)
	}
	if !adopted.running() {
		t.Fatalf("adopted.running() = false, want true (state %s)", raw)
	}

	impostor := adopted
	impostor.Args = append([]string{"--other"}, adopted.Args...)
	if impostor.running() {
		t.Errorf("process with the same PID but other arguments is taken as ours")
	}
	impostor = adopted
	impostor.StartTicks++
	if impostor.running() {
		t.Errorf("process with the same PID but another start time is taken as ours")
	}

	if err := adopted.stop(t.Context(), 10*time.Second); err != nil {
		t.Fatalf("stop adopted: %v", err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("child still running after the adopted handle stopped it")
	}
}

func TestReadStat(t *testing.T) {
	st, err := readStat(os.Getpid())
	if err != nil {
		t.Fatalf("readStat(self): %v", err)
	}
	if st.startTicks == 0 || !strings.ContainsRune("RS", rune(st.state)) {
		t.Errorf("readStat(self) = %+v, want running or sleeping with a start time", st)
	}
	if _, err := readStat(1 << 30); err == nil {
		t.Errorf("readStat of a nonexistent PID: got no error")
	}
}

func TestModuleOf(t *testing.T) {
	tests := []struct {
		content string
		want    string
		wantErr bool
	}{
		{content: "module github.com/konlease/konlease\n\ngo 1.26.0\n", want: modulePath},
		{content: "// comment\nmodule \"github.com/konlease/konlease\" // trailing\n", want: modulePath},
		{content: "module github.com/konlease/konlease/tools\n", want: modulePath + "/tools"},
		{content: "modules x\ngo 1.26\n", wantErr: true},
	}
	for i, tt := range tests {
		path := filepath.Join(t.TempDir(), "go.mod")
		if err := os.WriteFile(path, []byte(tt.content), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := moduleOf(path)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("case %d: moduleOf(%q) = %q, %v; want %q, error %v", i, tt.content, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestRepoRoot(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("RepoRoot from the package directory: %v", err)
	}
	if mod, err := moduleOf(filepath.Join(root, "go.mod")); err != nil || mod != modulePath {
		t.Errorf("RepoRoot() = %s whose module is %q (%v), want %s", root, mod, err, modulePath)
	}
	t.Chdir(t.TempDir())
	if got, err := RepoRoot(); err == nil {
		t.Errorf("RepoRoot outside the repository = %s, want an error", got)
	}
}

func TestBinDirMissingBinaries(t *testing.T) {
	_, err := Options{BinDir: t.TempDir()}.binDir()
	if err == nil || !strings.Contains(err.Error(), "make controlplane") {
		t.Errorf("binDir with no binaries: got %v, want an error telling to run make controlplane", err)
	}
}

func TestExternalKubeconfigSelection(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		env  string
		want string
	}{
		{name: "none", want: ""},
		{name: "option", opts: Options{Kubeconfig: "opt"}, env: "env", want: "opt"},
		{name: "env", env: "env", want: "env"},
		{name: "detach ignores env", opts: Options{Detach: true}, env: "env", want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(EnvKubeconfig, tt.env)
			t.Setenv("KUBECONFIG", "ambient") // must never be picked up
			if got := tt.opts.externalKubeconfig(); got != tt.want {
				t.Errorf("externalKubeconfig() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestFaultControlNeedsLocal(t *testing.T) {
	e := &Env{} // external
	for name, f := range map[string]func(context.Context) error{
		"StopAPIServer": e.StopAPIServer, "StartAPIServer": e.StartAPIServer,
		"RestartAPIServer": e.RestartAPIServer, "KillAPIServer": e.KillAPIServer,
		"StopEtcd": e.StopEtcd, "StartEtcd": e.StartEtcd,
		"RestartEtcd": e.RestartEtcd, "KillEtcd": e.KillEtcd,
	} {
		if err := f(t.Context()); !errors.Is(err, ErrExternal) {
			t.Errorf("%s on an external cluster: got %v, want ErrExternal", name, err)
		}
	}
	if err := e.Stop(); err != nil {
		t.Errorf("Stop on an external cluster: %v", err)
	}
}

func TestStartExternalUnreachable(t *testing.T) {
	ports, err := freePorts(1) // closed again: nothing listens there
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := &rest.Config{Host: loopbackURL("https", ports[0]), BearerToken: "x"}
	if err := writeKubeconfigFile(path, cfg, "default"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := Start(ctx, Options{Kubeconfig: path}); err == nil || !strings.Contains(err.Error(), "reach cluster") {
		t.Errorf("Start against a closed port: got %v, want a reach cluster error", err)
	}
}

func TestKubeconfigRoundTrip(t *testing.T) {
	p, err := writePKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	want := &rest.Config{
		Host:            "https://127.0.0.1:6443",
		BearerToken:     "secret-token",
		TLSClientConfig: rest.TLSClientConfig{CAData: p.caPEM},
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := writeKubeconfigFile(path, want, "team-a"); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("kubeconfig mode = %v (%v), want 0600: it holds a token", fi.Mode().Perm(), err)
	}
	loaded := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		&clientcmd.ClientConfigLoadingRules{ExplicitPath: path}, &clientcmd.ConfigOverrides{})
	got, err := loaded.ClientConfig()
	if err != nil {
		t.Fatalf("load written kubeconfig: %v", err)
	}
	if got.Host != want.Host || got.BearerToken != want.BearerToken || string(got.CAData) != string(want.CAData) || got.Insecure {
		t.Errorf("loaded config = host %q token %q CA %d bytes insecure %v; want host %q token %q CA %d bytes, secure",
			got.Host, got.BearerToken, len(got.CAData), got.Insecure, want.Host, want.BearerToken, len(want.CAData))
	}
	if ns, _, err := loaded.Namespace(); err != nil || ns != "team-a" {
		t.Errorf("context namespace = %q (%v), want %q", ns, err, "team-a")
	}
}

func TestPKIServingCertVerifies(t *testing.T) {
	p, err := writePKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(p.certFile)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := cert.ParseCertsPEM(raw)
	if err != nil {
		t.Fatal(err)
	}
	roots, err := cert.NewPoolFromBytes(p.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		if _, err := certs[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
}

func TestFreePortsDistinct(t *testing.T) {
	ports, err := freePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0] == ports[1] || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Errorf("freePorts(3) = %v, want distinct ports", ports)
	}
}
