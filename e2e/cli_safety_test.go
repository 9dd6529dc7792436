//go:build e2e

package e2e

// Tests for what a new user's session found could let a critical section
// run unprotected or leave a mutex stuck without an error: a --ttl that
// disagrees with the mutex, an outage at the start or the end, and the
// eval form of lock. Outages are made with the harness's proxy.

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/konlease/konlease/e2e/harness"
	"github.com/konlease/konlease/lock"
)

// TestCLITTLMustMatch: an explicit --ttl that disagrees with the mutex is
// refused, changing nothing and running nothing.
func TestCLITTLMustMatch(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "migr"), 0, "", "created")
	expectCLI(t, c.run("mutex", "create", "short", "--ttl", "2s"), 0, "", "created")

	marker := filepath.Join(t.TempDir(), "ran")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"run --ttl on a mutex without TTL", []string{"mutex", "run", "migr", "--ttl", "3s", "--", "touch", marker}, "has TTL none, not 3s"},
		{"lock --ttl on a mutex without TTL", []string{"mutex", "lock", "migr", "--ttl", "3s", "--timeout", "0"}, "has TTL none, not 3s"},
		{"lock --ttl 2h on a 2s mutex", []string{"mutex", "lock", "short", "--ttl", "2h"}, "has TTL 2s, not 2h"},
		{"run --ttl 1m on a 2s mutex", []string{"mutex", "run", "short", "--ttl", "1m", "--", "touch", marker}, "has TTL 2s, not 1m"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := leaseVersions(t, ns)
			expectCLIError(t, c.run(tc.args...), 1, tc.want, "--update")
			expectUnchanged(t, ns, before, tc.name)
			if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the command ran despite the refusal (stat: %v)", err)
			}
		})
	}
	// A matching --ttl locks; a missing mutex is created with it; without
	// --ttl the mutex's own TTL applies.
	expectCLI(t, c.run("mutex", "lock", "short", "--ttl", "2s", "--holder", "a", "--timeout", "0"), 0, "KONLEASE_TOKEN=1", "TTL 2s")
	expectCLI(t, c.run("mutex", "run", "fresh", "--ttl", "5s", "--", "true"), 0, "", "")
	if st := mutexStatus(t, ns, "fresh"); st.TTL != 5*time.Second {
		t.Errorf("run --ttl 5s created %+v, want TTL 5s", st)
	}
	expectCLI(t, c.run("mutex", "run", "migr", "--", "true"), 0, "", "")
}

// TestRequiredTTL is the library's side of TestCLITTLMustMatch.
func TestRequiredTTL(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newClient(t, env.Config())
	if _, _, err := c.Create(t.Context(), ns, "m", lock.CreateOptions{TTL: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	before := leaseVersions(t, ns)
	for _, d := range []time.Duration{0, 5 * time.Second} {
		m := newMutex(t, c, ns, "m", lock.WithRequiredTTL(d))
		for name, acquire := range map[string]func(context.Context) error{"Lock": m.Lock, "TryLock": m.TryLock} {
			if err := acquire(t.Context()); !errors.Is(err, lock.ErrTTLConflict) {
				t.Errorf("%s with WithRequiredTTL(%s) on a 10s mutex: got %v, want ErrTTLConflict", name, d, err)
			}
		}
	}
	expectUnchanged(t, ns, before, "a required TTL that differs")
	// WithTTL is a hint for creation only; WithRequiredTTL that matches locks.
	for _, opt := range []lock.Option{lock.WithTTL(time.Second), lock.WithRequiredTTL(10 * time.Second)} {
		m := newMutex(t, c, ns, "m", opt)
		if err := m.TryLock(t.Context()); err != nil {
			t.Fatalf("TryLock: %v", err)
		}
		if err := m.Unlock(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCLIOutageRetried: a few seconds without the API server neither fail
// an acquisition within its --timeout nor leave run's finished section
// locked.
func TestCLIOutageRetried(t *testing.T) {
	t.Parallel()
	if !env.Local() {
		t.Skip("needs the local control plane's address behind a proxy")
	}
	t.Run("lock while refused", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		p := newProxy(t)
		c := newCLI(t, env.WriteKubeconfig(t, p.Config(env.Config()), ns))
		p.Refuse()
		k := c.start("mutex", "lock", "m", "--holder", "w1", "--timeout", "1m")
		k.waitStderr("retrying")
		if err := p.Accept(); err != nil {
			t.Fatal(err)
		}
		expectCLI(t, k.wait(), 0, "KONLEASE_HOLDER=w1", "locked mutex")
		if st := mutexStatus(t, ns, "m"); st.Holder != "w1" {
			t.Errorf("after the outage: %+v, want held by w1", st)
		}
	})
	t.Run("lock times out while refused", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		p := newProxy(t)
		c := newCLI(t, env.WriteKubeconfig(t, p.Config(env.Config()), ns))
		p.Refuse()
		r := c.run("mutex", "lock", "m", "--timeout", "2s")
		// Not exit 3: nobody may hold it; the server was away.
		expectCLIError(t, r, 1, "gave up retrying", "connection refused")
		if r.took < 2*time.Second {
			t.Errorf("gave up after %s, before its --timeout of 2s", r.took)
		}
	})
	t.Run("run's unlock while refused", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		p := newProxy(t)
		c := newCLI(t, env.WriteKubeconfig(t, p.Config(env.Config()), ns))
		fifo := filepath.Join(t.TempDir(), "finish")
		if err := syscall.Mkfifo(fifo, 0o600); err != nil {
			t.Fatal(err)
		}
		// CMD ends when the test opens and closes the FIFO.
		k := c.start("mutex", "run", "m", "--holder", "runner", "--", "sh", "-c", `echo started; cat "$0" >/dev/null`, fifo)
		k.waitStdout("started")
		p.Refuse()
		finish(t, fifo)
		k.waitStderr("retrying")
		if err := p.Accept(); err != nil {
			t.Fatal(err)
		}
		expectCLI(t, k.wait(), 0, "started", "")
		if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked {
			t.Errorf("after run: %+v, want Unlocked", st)
		}
	})
}

// TestWithUnlockRetried: With's final Unlock survives an outage as fn
// returns.
func TestWithUnlockRetried(t *testing.T) {
	t.Parallel()
	if !env.Local() {
		t.Skip("needs the local control plane's address behind a proxy")
	}
	ns := env.Namespace(t)
	p := newProxy(t)
	retrying := make(chan struct{}, 1)
	log := funcr.New(func(_, args string) {
		if strings.Contains(args, "retrying") {
			select {
			case retrying <- struct{}{}:
			default:
			}
		}
	}, funcr.Options{})
	c := newClient(t, p.Config(env.Config()), lock.WithLogger(log))
	m := newMutex(t, c, ns, "m", lock.WithHolder("with"))
	accepted := make(chan error, 1)
	go func() {
		<-retrying
		accepted <- p.Accept()
	}()
	err := m.With(t.Context(), func(context.Context) error {
		p.Refuse()
		return nil
	})
	if err != nil {
		t.Fatalf("With: %v", err)
	}
	if err := <-accepted; err != nil {
		t.Fatal(err)
	}
	if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked {
		t.Errorf("after With: %+v, want Unlocked", st)
	}
}

// TestCLIEvalFormChecksStatus runs the form that lock's --help documents,
// under set -e, against a mutex someone else holds: the script must stop
// before its critical section. The form README and --help showed before,
// eval "$(koncli mutex lock ...)", walks in; that is checked too, so that
// the test shows why the form matters.
func TestCLIEvalFormChecksStatus(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	kubeconfig := adminKubeconfigIn(t, ns)
	c := newCLI(t, kubeconfig)
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "other"), 0, "KONLEASE_TOKEN=1", "")

	help := c.run("mutex", "lock", "--help").stdout
	var form []string
	for _, line := range strings.Split(help, "\n") {
		if l := strings.TrimSpace(line); strings.HasPrefix(l, "vars=$(koncli mutex lock ") || l == `eval "$vars"` {
			form = append(form, l)
		}
	}
	if len(form) < 2 {
		t.Fatalf("lock --help shows no checked eval form (vars=$(koncli mutex lock ...) || exit; eval \"$vars\"):\n%s", help)
	}
	readme := readRepoFile(t, "README.md")
	if !strings.Contains(readme, "vars=$(koncli mutex lock ") || !strings.Contains(readme, ") || exit\neval \"$vars\"") ||
		strings.Contains(readme, `eval "$(koncli mutex lock`) {
		t.Errorf("README must show the checked form (%q, then %q) and not the unchecked eval \"$(koncli mutex lock ...)\"", form[0], form[1])
	}
	documented := strings.ReplaceAll(form[0], " NAME)", " m --holder me --timeout 0)") + "\n" + form[1]
	for _, tc := range []struct {
		name, form string
		enters     bool
	}{
		{"documented form", documented, false},
		{"unchecked eval", `eval "$(koncli mutex lock m --holder me --timeout 0)"`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			script := "set -e\n" + tc.form + "\necho entered the critical section\n"
			cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
			cmd.Env = cliEnviron(t, []string{"KUBECONFIG=" + kubeconfig, "PATH=" + filepath.Dir(koncliBinary(t)) + ":" + os.Getenv("PATH")})
			out, _ := cmd.Output()
			if entered := strings.Contains(string(out), "entered"); entered != tc.enters {
				t.Errorf("%s under set -e against a held mutex: entered = %v, want %v (exit %d)", tc.name, entered, tc.enters, cmd.ProcessState.ExitCode())
			}
			if !tc.enters && cmd.ProcessState.ExitCode() != 3 {
				t.Errorf("%s: exit %d, want 3 (not acquired)", tc.name, cmd.ProcessState.ExitCode())
			}
		})
	}
}

// TestCLINotAcquiredCodes: "this holder holds it already" has its own
// code, and --conflict-exit-code replaces the code for "someone else holds
// it" only.
func TestCLINotAcquiredCodes(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "KONLEASE_TOKEN=1", "")
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"--holder", "w1", "--timeout", "0"}, 5, "holds it already"},
		{[]string{"--holder", "w1", "--timeout", "0", "-E", "75"}, 5, "holds it already"},
		{[]string{"--holder", "w2", "--timeout", "0"}, 3, `locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "0", "--conflict-exit-code", "75"}, 75, `locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "0", "-E", "0"}, 0, `skipped: not acquired in a single attempt (--timeout 0): mutex NS/m is locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "0", "-E", "256"}, 2, "0 to 255"},
		// --if-busy=skip is the readable -E 0; it skips a busy mutex only.
		{[]string{"--holder", "w2", "--timeout", "0", "--if-busy=skip"}, 0, `skipped: not acquired in a single attempt (--timeout 0): mutex NS/m is locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "300ms", "--if-busy", "skip", "-E", "0"}, 0, `skipped: not acquired within 300ms`},
		{[]string{"--holder", "w1", "--timeout", "0", "--if-busy=skip"}, 5, "holds it already"},
		{[]string{"--holder", "w2", "--timeout", "0", "--if-busy=fail"}, 3, `locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "0", "--if-busy=fail", "-E", "75"}, 75, `locked by "w1"`},
		{[]string{"--holder", "w2", "--timeout", "0", "--if-busy=skip", "-E", "75"}, 2, "--if-busy=skip exits 0 when another holder holds the mutex, and -E 75 exits 75"},
		{[]string{"--holder", "w2", "--timeout", "0", "--if-busy=wait"}, 2, `invalid --if-busy "wait": want "fail" or "skip"`},
	} {
		for _, verb := range []string{"lock", "run"} {
			args := append([]string{"mutex", verb, "m"}, tc.args...)
			if verb == "run" {
				args = append(args, "--", "echo", "ran")
			}
			t.Run(cliTestName(args), func(t *testing.T) {
				r := c.run(args...)
				expectCLI(t, r, tc.code, "", strings.ReplaceAll(tc.stderr, "NS/", ns+"/"))
				if r.stdout != "" {
					t.Errorf("not acquired, but stdout is %q", r.stdout)
				}
				if tc.code == 0 && strings.Contains(r.stderr, "error:") {
					t.Errorf("-E 0: a busy mutex is not an error, but stderr says %q", r.stderr)
				}
			})
		}
	}
}

// TestCLIUnlockAfterExpiry: unlocking a hold whose TTL had run out says so
// (exit 0), and taking such a hold over names the previous holder.
func TestCLIUnlockAfterExpiry(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	for _, name := range []string{"a", "b"} {
		expectCLI(t, c.run("mutex", "lock", name, "--holder", "w1", "--ttl", "1s"), 0, "KONLEASE_TOKEN=1", "")
	}
	// lock does not renew: the TTL runs out a second after the lock, which
	// is what this test is about. Wait until the server says so.
	for _, name := range []string{"a", "b"} {
		if err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			return mutexStatus(t, ns, name).Phase == lock.PhaseExpired, nil
		}); err != nil {
			t.Fatalf("mutex %s never expired: %v", name, err)
		}
	}
	r := c.run("mutex", "unlock", "a", "--holder", "w1")
	expectCLI(t, r, 0, "", "its TTL had run out at ")
	expectCLI(t, c.run("mutex", "lock", "b", "--holder", "w2", "--timeout", "0"), 0, "KONLEASE_TOKEN=2", `taking it over from "w1"`)
	// A live hold unlocks without the warning.
	expectCLI(t, c.run("mutex", "lock", "c", "--holder", "w1"), 0, "", "")
	if r := c.run("mutex", "unlock", "c", "--holder", "w1"); r.code != 0 || strings.Contains(r.stderr, "TTL had run out") {
		t.Errorf("unlock of a live hold: %s", r)
	}
}

// newProxy starts a proxy in front of the local API server for one test.
func newProxy(t *testing.T) *harness.Proxy {
	t.Helper()
	p, err := env.NewProxy()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// finish opens and closes the FIFO path, which ends a reader waiting on it.
func finish(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readRepoFile reads a file of the repository.
func readRepoFile(t *testing.T, rel string) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestCLILockSkipForm runs the --if-busy=skip form that lock's --help
// documents: 0 means locked or skipped, and the script tells them apart by
// stdout. Against a held mutex it must skip its critical section and exit
// 0; against a free one, enter it holding the lock.
func TestCLILockSkipForm(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	kubeconfig := adminKubeconfigIn(t, ns)
	c := newCLI(t, kubeconfig)
	help := strings.Split(c.run("mutex", "lock", "--help").stdout, "\n")
	i := slices.IndexFunc(help, func(l string) bool { return strings.Contains(l, "--if-busy=skip) || exit") })
	if i < 0 || i+2 >= len(help) {
		t.Fatalf("lock --help shows no --if-busy=skip form:\n%s", strings.Join(help, "\n"))
	}
	form := strings.TrimSpace(help[i]) + "\n" + strings.TrimSpace(help[i+1]) + "\n" + strings.TrimSpace(help[i+2])
	script := "set -e\n" + strings.ReplaceAll(form, "daily-job", "m --holder me") + "\necho \"entered with token $KONLEASE_TOKEN\"\n"
	run := func() (string, int) {
		cmd := exec.CommandContext(t.Context(), "sh", "-c", script)
		cmd.Env = cliEnviron(t, []string{"KUBECONFIG=" + kubeconfig, "PATH=" + filepath.Dir(koncliBinary(t)) + ":" + os.Getenv("PATH")})
		out, _ := cmd.Output()
		return string(out), cmd.ProcessState.ExitCode()
	}
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "other"), 0, "", "")
	if out, code := run(); code != 0 || strings.Contains(out, "entered") {
		t.Errorf("the documented skip form against a held mutex: exit %d, output %q; want 0 without entering", code, out)
	}
	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "other"), 0, "", "")
	if out, code := run(); code != 0 || out != "entered with token 2\n" {
		t.Errorf("the documented skip form against a free mutex: exit %d, output %q; want it to enter with token 2", code, out)
	}
	if st := mutexStatus(t, ns, "m"); st.Holder != "me" {
		t.Errorf("after entering: holder %q, want me", st.Holder)
	}
}
