//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	"github.com/konlease/konlease/lock"
)

// TestCLIHelp: every command's --help exits 0 and documents the exit codes
// that command can end with.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	all := []string{"0", "1", "2", "3", "4", "126", "127", "128+n"}
	for _, tc := range []struct {
		args  []string
		codes []string
	}{
		{nil, all},
		{[]string{"--help"}, all},
		{[]string{"mutex", "--help"}, all},
		{[]string{"mutex", "create", "--help"}, []string{"0", "1", "2"}},
		{[]string{"mutex", "lock", "--help"}, []string{"0", "1", "2", "3", "130", "143"}},
		{[]string{"mutex", "unlock", "--help"}, []string{"0", "1", "2"}},
		{[]string{"mutex", "run", "--help"}, []string{"0", "1", "2", "3", "4", "126", "127", "128+n", "N"}},
		{[]string{"mutex", "list", "--help"}, []string{"0", "1", "2"}},
		{[]string{"mutex", "get", "--help"}, []string{"0", "1", "2"}},
		{[]string{"mutex", "delete", "--help"}, []string{"0", "1", "2"}},
		{[]string{"version", "--help"}, []string{"0", "2"}},
		{[]string{"completion", "--help"}, []string{"0", "2"}},
	} {
		t.Run(strings.Join(append([]string{"koncli"}, tc.args...), " "), func(t *testing.T) {
			t.Parallel()
			r := c.run(tc.args...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("got %s\nwant exit 0 and nothing on stderr", r)
			}
			_, section, ok := strings.Cut(r.stdout, "\nExit status:\n")
			if !ok {
				t.Fatalf("help has no Exit status section:\n%s", r.stdout)
			}
			for _, code := range tc.codes {
				if !regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(code) + ` `).MatchString(section) {
					t.Errorf("Exit status section does not list %s:\n%s", code, section)
				}
			}
		})
	}
}

// TestCLIVersionAndCompletion: version prints one line; completion scripts
// generate; mutex names complete from the cluster, and an unreachable
// cluster gives no completions rather than an error.
func TestCLIVersionAndCompletion(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	r := c.run("version")
	if r.code != 0 || !regexp.MustCompile(`^koncli \S+ go\S+ \w+/\w+\n$`).MatchString(r.stdout) {
		t.Errorf("version: %s", r)
	}
	for shell, marker := range map[string]string{"bash": "# bash completion V2 for koncli", "zsh": "#compdef koncli", "fish": "# fish completion for koncli"} {
		r := c.run("completion", shell)
		if r.code != 0 || !strings.HasPrefix(r.stdout, marker) {
			t.Errorf("completion %s: exit %d, stdout starts %q; want %q", shell, r.code, r.stdout[:min(len(r.stdout), 60)], marker)
		}
	}
	expectCLIError(t, c.run("completion", "tcsh"), 2, `unknown shell "tcsh"`)

	ns := env.Namespace(t)
	createLeaderLease(t, ns, "leader")
	k := newCLI(t, adminKubeconfigIn(t, ns))
	for _, name := range []string{"alpha", "beta", "gamma"} {
		expectCLI(t, k.run("mutex", "create", name), 0, "", "")
	}
	// cobra's hidden __complete is what the shell scripts call.
	r = k.run("__complete", "mutex", "lock", "")
	if r.code != 0 || r.stdout != "alpha\tUnlocked\nbeta\tUnlocked\ngamma\tUnlocked\n:4\n" {
		t.Errorf("completing mutex names: %s\nwant alpha, beta, gamma (not the leader-election Lease) and directive 4", r)
	}
	r = k.run("__complete", "mutex", "unlock", "b")
	if r.code != 0 || r.stdout != "beta\tUnlocked\n:4\n" {
		t.Errorf("completing %q: %s", "b", r)
	}
	bad, _ := unreachableKubeconfig(t)
	r = newCLI(t, bad).run("__complete", "mutex", "get", "")
	if r.code != 0 || r.stdout != ":4\n" {
		t.Errorf("completing against an unreachable server: %s\nwant no names, exit 0", r)
	}
}

// TestCLIPlugin: invoked as kubectl-mutex, the root command is the mutex
// command, so `kubectl mutex lock NAME` works.
func TestCLIPlugin(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	link := filepath.Join(t.TempDir(), "kubectl-mutex")
	if err := os.Symlink(koncliBinary(t), link); err != nil {
		t.Fatal(err)
	}
	c := newCLI(t, adminKubeconfigIn(t, ns))
	c.bin = link
	r := c.run("--help")
	if r.code != 0 || !strings.Contains(r.stdout, "kubectl mutex [command]") || strings.Contains(r.stdout, "koncli mutex") {
		t.Errorf("kubectl-mutex --help: %s\nwant usage naming \"kubectl mutex\" throughout", r)
	}
	expectCLI(t, c.run("lock", "plugged", "--holder", "p1", "--timeout", "0"), 0, "KONLEASE_HOLDER=p1\n", "")
	expectCLI(t, c.run("list"), 0, "plugged", "")
	expectCLI(t, c.run("unlock", "plugged", "--holder", "p1"), 0, "", "unlocked")
	expectCLIError(t, c.run("mutex", "list"), 2, `unknown command "mutex" for "kubectl mutex"`)
}

// TestCLISeedExamples runs the command lines of the original Mutex
// documentation as written, in order, and checks what each one did.
func TestCLISeedExamples(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	t.Run("create, lock, unlock, list", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newCLI(t, adminKubeconfigIn(t, ns))
		ref := ns + "/critical-section"

		// Create mutex without TTL (manual unlock required)
		expectCLI(t, c.run("mutex", "create", "critical-section"), 0, "", "mutex "+ref+" created (no TTL, Unlocked)")
		expectCLI(t, c.run("mutex", "create", "critical-section"), 0, "", "mutex "+ref+" exists (no TTL, Unlocked)")

		// Lock with default holder (hostname)
		r := c.run("mutex", "lock", "critical-section")
		expectCLI(t, r, 0, "KONLEASE_MUTEX="+ref+"\n", fmt.Sprintf("locked mutex %s as %q (token 1)", ref, host))
		if st := mutexStatus(t, ns, "critical-section"); st.Holder != host || st.Phase != lock.PhaseLocked || st.TTL != 0 {
			t.Errorf("after lock: %+v, want Locked by %q without TTL", st, host)
		}

		// List Mutexes
		r = c.run("mutex", "list")
		if r.code != 0 || !regexp.MustCompile(`(?m)^critical-section +`+regexp.QuoteMeta(host)+` +Locked +<none> +\S+ +<none>$`).MatchString(r.stdout) {
			t.Errorf("list: %s", r)
		}

		// Unlock what the default holder locked.
		expectCLI(t, c.run("mutex", "unlock", "critical-section"), 0, "", "unlocked mutex "+ref)

		// Lock with custom holder
		expectCLI(t, c.run("mutex", "lock", "critical-section", "--holder", "worker-1"), 0, "KONLEASE_HOLDER=worker-1\nKONLEASE_TOKEN=2\n", "")

		// Lock with timeout (wait up to 30s): it waits for worker-1 ...
		waiter := c.start("mutex", "lock", "critical-section", "--timeout", "30s")
		waiter.waitStderr(fmt.Sprintf("waiting for mutex %s: locked by \"worker-1\"", ref))

		// Unlock (must be the holder)
		expectCLI(t, c.run("mutex", "unlock", "critical-section", "--holder", "worker-1"), 0, "", "")

		// ... and gets it once worker-1 unlocked.
		expectCLI(t, waiter.wait(), 0, "KONLEASE_HOLDER="+host+"\nKONLEASE_TOKEN=3\n", "")
	})
	t.Run("create with TTL", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newCLI(t, adminKubeconfigIn(t, ns))
		// Create mutex with TTL (auto-unlock after 5 minutes)
		expectCLI(t, c.run("mutex", "create", "critical-section", "--ttl", "5m"), 0, "", "(TTL 5m0s, Unlocked)")
		if st := mutexStatus(t, ns, "critical-section"); st.TTL != 5*time.Minute {
			t.Errorf("TTL %s, want 5m", st.TTL)
		}
	})
}

// cronJobScript is the CronJob script of the original documentation,
// verbatim.
const cronJobScript = `#!/bin/bash
if koncli mutex lock daily-job --holder $HOSTNAME --timeout 0; then
    run-daily-job
    koncli mutex unlock daily-job --holder $HOSTNAME
else
    echo "Job already running, skipping"
fi
`

// runDailyJob stands in for the job: it says it started, and finishes when
// the test writes a line to its stdin.
const runDailyJob = `#!/bin/sh
echo "daily job started on $HOSTNAME"
read -r _
echo "daily job done on $HOSTNAME"
`

// TestCLISeedCronJobScript runs the documentation's CronJob script twice at
// once: one run does the job, the other skips it. Pods of a CronJob have
// different host names; two runs on one host share the identity, and the
// second is refused as already holding the mutex, so it skips too.
func TestCLISeedCronJobScript(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, hostA, hostB string }{
		{"two pods", "daily-job-28451-abcde", "daily-job-28452-fghij"},
		{"one host", "node-1", "node-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			script := filepath.Join(dir, "cronjob.sh")
			if err := os.MkdirAll(bin, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(koncliBinary(t), filepath.Join(bin, "koncli")); err != nil {
				t.Fatal(err)
			}
			for path, content := range map[string]string{filepath.Join(bin, "run-daily-job"): runDailyJob, script: cronJobScript} {
				if err := os.WriteFile(path, []byte(content), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// The script names no cluster: KUBECONFIG does, as in a shell.
			environ := cliEnviron(t, []string{"KUBECONFIG=" + adminKubeconfigIn(t, ns), "PATH=" + bin + ":" + os.Getenv("PATH")})
			startJob := func(host string) (*exec.Cmd, io.WriteCloser, *watchedBuffer, *watchedBuffer, chan struct{}) {
				cmd := exec.Command("bash", script)
				cmd.Env = append(environ, "HOSTNAME="+host)
				cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
				stdin, err := cmd.StdinPipe()
				if err != nil {
					t.Fatal(err)
				}
				out, errOut := newWatchedBuffer(), newWatchedBuffer()
				cmd.Stdout, cmd.Stderr = out, errOut
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				exited := make(chan struct{})
				go func() { _ = cmd.Wait(); close(exited) }()
				t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
				return cmd, stdin, out, errOut, exited
			}
			waitOut := func(b, errOut *watchedBuffer, exited chan struct{}, s string) {
				t.Helper()
				if err := b.waitFor(t.Context(), exited, s); err != nil {
					t.Fatalf("waiting for %q: %v\nstdout: %q\nstderr: %q", s, err, b.String(), errOut.String())
				}
			}

			a, aIn, aOut, aErr, aExited := startJob(tc.hostA)
			waitOut(aOut, aErr, aExited, "daily job started on "+tc.hostA)

			b, bIn, bOut, bErr, bExited := startJob(tc.hostB)
			_ = bIn.Close()
			<-bExited
			if b.ProcessState.ExitCode() != 0 || !strings.Contains(bOut.String(), "Job already running, skipping") || strings.Contains(bOut.String(), "daily job started") {
				t.Errorf("second run: exit %d\nstdout: %q\nstderr: %q\nwant it to skip", b.ProcessState.ExitCode(), bOut.String(), bErr.String())
			}
			if !strings.Contains(bErr.String(), "error: not acquired") {
				t.Errorf("second run's stderr %q does not say why it skipped", bErr.String())
			}

			if _, err := io.WriteString(aIn, "done\n"); err != nil {
				t.Fatal(err)
			}
			<-aExited
			if a.ProcessState.ExitCode() != 0 || !strings.Contains(aOut.String(), "daily job done on "+tc.hostA) {
				t.Errorf("first run: exit %d\nstdout: %q\nstderr: %q", a.ProcessState.ExitCode(), aOut.String(), aErr.String())
			}
			if st := mutexStatus(t, ns, "daily-job"); st.Phase != lock.PhaseUnlocked {
				t.Errorf("after the job: %+v, want Unlocked", st)
			}

			// The next run finds the mutex free and does the job.
			_, cIn, cOut, cErr, cExited := startJob(tc.hostB)
			waitOut(cOut, cErr, cExited, "daily job started on "+tc.hostB)
			_, _ = io.WriteString(cIn, "done\n")
			waitOut(cOut, cErr, cExited, "daily job done on "+tc.hostB)
		})
	}
}

// TestCLILock covers lock's outcomes and its exit codes 0, 3, 130, 143.
func TestCLILock(t *testing.T) {
	t.Parallel()
	setup := func(t *testing.T) (*cli, string) {
		t.Helper()
		ns := env.Namespace(t)
		return newCLI(t, adminKubeconfigIn(t, ns)), ns
	}

	t.Run("output and tokens", func(t *testing.T) {
		t.Parallel()
		c, ns := setup(t)
		r := c.run("mutex", "lock", "m", "--holder", "w1")
		if want := fmt.Sprintf("KONLEASE_MUTEX=%s/m\nKONLEASE_HOLDER=w1\nKONLEASE_TOKEN=1\n", ns); r.code != 0 || r.stdout != want {
			t.Errorf("got %s\nwant stdout %q", r, want)
		}
		expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", "")
		r = c.run("mutex", "lock", "m", "--holder", "two words")
		if want := fmt.Sprintf("KONLEASE_MUTEX=%s/m\nKONLEASE_HOLDER='two words'\nKONLEASE_TOKEN=2\n", ns); r.code != 0 || r.stdout != want {
			t.Errorf("got %s\nwant stdout %q", r, want)
		}
	})

	t.Run("not acquired", func(t *testing.T) {
		t.Parallel()
		c, ns := setup(t)
		expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
		before := leaseVersions(t, ns)

		r := c.run("mutex", "lock", "m", "--holder", "w2", "--timeout", "0")
		expectCLIError(t, r, 3, `not acquired in a single attempt (--timeout 0)`, `locked by "w1"`)
		if r.took > 10*time.Second {
			t.Errorf("--timeout 0 took %s", r.took)
		}

		r = c.run("mutex", "lock", "m", "--holder", "w2", "--timeout", "2s")
		expectCLI(t, r, 3, "", "waiting for mutex "+ns+`/m: locked by "w1"`)
		expectCLI(t, r, 3, "", "giving up at")
		expectCLI(t, r, 3, "", "error: not acquired within 2s: mutex "+ns+`/m is locked by "w1"`)
		if r.took < 2*time.Second {
			t.Errorf("--timeout 2s gave up after %s", r.took)
		}

		// The same identity twice would deadlock: refused at once.
		expectCLIError(t, c.run("mutex", "lock", "m", "--holder", "w1"), 5, "holds it already")
		expectUnchanged(t, ns, before, "failed locks")
	})

	t.Run("reports the holder it waits for, and changes", func(t *testing.T) {
		t.Parallel()
		c, ns := setup(t)
		expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1", "--ttl", "1h"), 0, "", "TTL 1h0m0s: it expires at")
		waiter := c.start("mutex", "lock", "m", "--holder", "waiter")
		waiter.waitStderr(`waiting for mutex ` + ns + `/m: locked by "w1"`)
		waiter.waitStderr(`its TTL runs out at `)

		// The Lease changes hands without being free in between (as a
		// takeover does); the waiter says whom it waits for now.
		leases := admin(t).CoordinationV1().Leases(ns)
		l := getLease(t, ns, "m")
		now := metav1.NewMicroTime(time.Now())
		l.Spec.HolderIdentity, l.Spec.AcquireTime, l.Spec.RenewTime = ptr.To("w2"), &now, &now
		l.Spec.LeaseTransitions = ptr.To(*l.Spec.LeaseTransitions + 1)
		if _, err := leases.Update(t.Context(), l, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waiter.waitStderr(`waiting for mutex ` + ns + `/m: locked by "w2"`)

		expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w2"), 0, "", "")
		expectCLI(t, waiter.wait(), 0, "KONLEASE_HOLDER=waiter\nKONLEASE_TOKEN=3\n", "")
	})

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		t.Run("interrupted by "+cliSignalName(sig), func(t *testing.T) {
			t.Parallel()
			c, ns := setup(t)
			expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
			before := leaseVersions(t, ns)
			waiter := c.start("mutex", "lock", "m", "--holder", "waiter")
			waiter.waitStderr("waiting for mutex")
			waiter.signal(sig)
			r := waiter.wait()
			expectCLIError(t, r, 128+int(sig), "interrupted by SIG", "nothing was locked")
			expectUnchanged(t, ns, before, "an interrupted lock")
		})
	}

	t.Run("TTL counts from the lock", func(t *testing.T) {
		t.Parallel()
		c, ns := setup(t)
		// A missing mutex is created with --ttl; koncli exits holding it and
		// nobody renews, so the TTL runs out and a waiter takes over.
		expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1", "--ttl", "2s"), 0, "", "TTL 2s: it expires at")
		if st := mutexStatus(t, ns, "m"); st.TTL != 2*time.Second || st.Holder != "w1" {
			t.Errorf("after lock --ttl 2s: %+v", st)
		}
		r := c.run("mutex", "lock", "m", "--holder", "w2", "--timeout", "30s")
		expectCLI(t, r, 0, "KONLEASE_HOLDER=w2\nKONLEASE_TOKEN=2\n", "")
	})
}

// TestCLIUnlock: only the holder unlocks; --force evicts and says whom.
func TestCLIUnlock(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	ref := ns + "/m"
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")

	before := leaseVersions(t, ns)
	expectCLIError(t, c.run("mutex", "unlock", "m", "--holder", "w2"), 1, `holder "w2" does not hold it (it is held by "w1"), nothing changed`, "--force")
	expectCLIError(t, c.run("mutex", "unlock", "missing", "--holder", "w1"), 1, "does not exist")
	expectUnchanged(t, ns, before, "unlock by a non-holder")

	expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", fmt.Sprintf(`unlocked mutex %s (holder "w1")`, ref))
	if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked || st.Token != 1 {
		t.Errorf("after unlock: %+v, want Unlocked keeping token 1", st)
	}
	before = leaseVersions(t, ns)
	expectCLIError(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 1, "(it is unlocked)")
	expectUnchanged(t, ns, before, "unlocking an unlocked mutex")

	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w3"), 0, "", "")
	expectCLI(t, c.run("mutex", "unlock", "m", "--force"), 0, "", fmt.Sprintf(`force-unlocked mutex %s: evicted "w3" (token 2, Locked since `, ref))
	before = leaseVersions(t, ns)
	expectCLI(t, c.run("mutex", "unlock", "m", "--force"), 0, "", "was not locked; nothing changed")
	expectUnchanged(t, ns, before, "force-unlocking an unlocked mutex")
}

// TestCLICreate: idempotent with the same TTL, refuses another TTL unless
// --update, and --update only while unlocked.
func TestCLICreate(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "30s"), 0, "", "(TTL 30s, Unlocked)")
	before := leaseVersions(t, ns)
	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "30s"), 0, "", "")
	expectCLIError(t, c.run("mutex", "create", "m", "--ttl", "1m"), 1, "exists with TTL 30s, not 1m0s (nothing changed)", "--update")
	expectCLIError(t, c.run("mutex", "create", "m"), 1, "exists with TTL 30s, not none")
	expectUnchanged(t, ns, before, "create with the same or another TTL")

	expectCLI(t, c.run("mutex", "create", "m", "--ttl", "1m", "--update"), 0, "", "(TTL 1m0s, Unlocked)")
	if st := mutexStatus(t, ns, "m"); st.TTL != time.Minute {
		t.Errorf("TTL after --update: %s, want 1m", st.TTL)
	}
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
	before = leaseVersions(t, ns)
	expectCLIError(t, c.run("mutex", "create", "m", "--ttl", "5m", "--update"), 1, `while "w1" holds it`, "unlock it first")
	expectUnchanged(t, ns, before, "create --update on a locked mutex")
}

// TestCLIListAndGet: the table, its wide and all-namespaces forms, JSON,
// YAML and names; only mutex Leases appear.
func TestCLIListAndGet(t *testing.T) {
	t.Parallel()
	nsA, nsB := env.Namespace(t), env.Namespace(t)
	a, b := newCLI(t, adminKubeconfigIn(t, nsA)), newCLI(t, adminKubeconfigIn(t, nsB))
	createLeaderLease(t, nsA, "leader")
	expectCLI(t, a.run("mutex", "lock", "held", "--holder", "w1", "--ttl", "10m"), 0, "", "")
	expectCLI(t, a.run("mutex", "create", "idle"), 0, "", "")
	expectCLI(t, b.run("mutex", "lock", "other", "--holder", "w2"), 0, "", "")

	r := a.run("mutex", "list")
	want := regexp.MustCompile(`^NAME +HOLDER +PHASE +TTL +LOCKED +EXPIRES\n` +
		`held +w1 +Locked +10m0s +\d+s +in (9m(\d+s)?|10m)\n` +
		`idle +<none> +Unlocked +<none> +<none> +<none>\n$`)
	if r.code != 0 || !want.MatchString(r.stdout) {
		t.Errorf("list: %s\nwant to match %s", r, want)
	}

	r = a.run("mutex", "list", "-A", "-o", "wide")
	for _, row := range []string{
		`(?m)^NAMESPACE +NAME +HOLDER +PHASE +TTL +LOCKED +EXPIRES +RENEWED +TOKEN +FAIR +WAITERS +REASON$`,
		`(?m)^` + nsA + ` +held +w1 +Locked +10m0s +\S+ +in \S+ +\S+ +1 +false +0 +<none>$`,
		`(?m)^` + nsA + ` +idle +<none> +Unlocked +<none> +<none> +<none> +<none> +0 +false +0 +<none>$`,
		`(?m)^` + nsB + ` +other +w2 +Locked +<none> +\S+ +<none> +\S+ +1 +false +0 +<none>$`,
	} {
		if r.code != 0 || !regexp.MustCompile(row).MatchString(r.stdout) {
			t.Errorf("list -A -o wide: %s\nwant a line matching %s", r, row)
		}
	}
	// Other tests' Leases may show up in -A, and a reason may say
	// "leader-election": look for the row.
	if regexp.MustCompile(`(?m)^` + nsA + ` +leader `).MatchString(r.stdout) {
		t.Errorf("list -A shows the leader-election Lease:\n%s", r.stdout)
	}

	expectCLI(t, a.run("mutex", "list", "-o", "name"), 0, "held\nidle\n", "")
	r = a.run("mutex", "list", "-o", "json")
	var list struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 2 || field(list.Items[0], "metadata", "name") != "held" || field(list.Items[1], "status", "phase") != "Unlocked" {
		t.Errorf("list -o json: %v\n%s", err, r)
	}
	r = a.run("mutex", "list", "-o", "yaml")
	if err := yaml.Unmarshal([]byte(r.stdout), &list); err != nil || len(list.Items) != 2 {
		t.Errorf("list -o yaml: %v\n%s", err, r)
	}

	// get: YAML by default, the seed's Mutex resource: metadata, spec.ttl,
	// status with the seed's fields plus renewedAt and token; RFC 3339 UTC
	// times; nothing empty.
	r = a.run("mutex", "get", "held")
	var got map[string]any
	if err := yaml.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("get: %v\n%s", err, r)
	}
	rfc3339 := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$`)
	status, _ := got["status"].(map[string]any)
	if len(got) != 5 || got["apiVersion"] != "konlease.io/v1alpha1" || got["kind"] != "Mutex" ||
		field(got, "metadata", "name") != "held" || field(got, "metadata", "namespace") != nsA || field(got, "spec", "ttl") != "10m0s" ||
		len(status) != 6 || status["holder"] != "w1" || status["phase"] != "Locked" || status["token"] != float64(1) ||
		!rfc3339.MatchString(fmt.Sprint(status["lockedAt"])) || !rfc3339.MatchString(fmt.Sprint(status["renewedAt"])) || !rfc3339.MatchString(fmt.Sprint(status["expiresAt"])) {
		t.Errorf("get held:\n%s", r.stdout)
	}
	r = a.run("mutex", "get", "idle", "-o", "json")
	got = nil
	err := json.Unmarshal([]byte(r.stdout), &got)
	status, _ = got["status"].(map[string]any)
	spec, _ := got["spec"].(map[string]any)
	if err != nil || len(status) != 1 || status["phase"] != "Unlocked" || spec == nil || len(spec) != 0 {
		t.Errorf("get idle -o json: want only status.phase and an empty spec: %v\n%s", err, r)
	}
	expectCLIError(t, a.run("mutex", "get", "missing"), 1, "not found")
	expectCLIError(t, a.run("mutex", "get", "leader"), 1, "is not a konlease mutex")
	r = newCLI(t, adminKubeconfigIn(t, env.Namespace(t))).run("mutex", "list")
	expectCLI(t, r, 0, "", "No mutexes found in namespace")
	if r.stdout != "" {
		t.Errorf("empty list printed %q on stdout", r.stdout)
	}
}

// TestCLIDelete: an unlocked mutex goes; a locked one only with --force; a
// Lease that is not a mutex never.
func TestCLIDelete(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	createLeaderLease(t, ns, "leader")
	expectCLI(t, c.run("mutex", "create", "idle"), 0, "", "")
	expectCLI(t, c.run("mutex", "lock", "held", "--holder", "w1"), 0, "", "")

	before := leaseVersions(t, ns)
	expectCLIError(t, c.run("mutex", "delete", "held"), 1, "refusing to delete a locked mutex", `"w1"`)
	expectCLIError(t, c.run("mutex", "delete", "leader"), 1, "is not a konlease mutex")
	expectCLIError(t, c.run("mutex", "delete", "leader", "--force"), 1, "is not a konlease mutex")
	expectUnchanged(t, ns, before, "refused deletes")

	expectCLI(t, c.run("mutex", "delete", "idle"), 0, "", "deleted mutex "+ns+"/idle")
	expectCLI(t, c.run("mutex", "delete", "held", "--force"), 0, "", "deleted mutex "+ns+"/held")
	if got := leaseVersions(t, ns); len(got) != 1 || got["leader"] == "" {
		t.Errorf("Leases left: %v, want only the leader-election one", got)
	}
	expectCLIError(t, c.run("mutex", "delete", "idle"), 1, "not found")
}

// TestCLIBadInputs: each invalid input gets exit code 2, one clear error
// line and a pointer to --help, and no Lease changes; operations on a
// Lease that is not a mutex fail with 1 and leave it alone.
func TestCLIBadInputs(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	kc := adminKubeconfigIn(t, ns)
	c := newCLI(t, kc)
	createLeaderLease(t, ns, "leader")
	expectCLI(t, c.run("mutex", "create", "existing", "--ttl", "30s"), 0, "", "")
	expectCLI(t, c.run("mutex", "lock", "held", "--holder", "w1"), 0, "", "")
	before := leaseVersions(t, ns)

	usage := []struct {
		args []string
		want string
	}{
		{[]string{"mutex", "lock", "Bad_Name"}, `invalid mutex name "Bad_Name": a lowercase RFC 1123 subdomain`},
		{[]string{"mutex", "create", "-dash"}, `unknown shorthand flag: 'd' in -dash`},
		{[]string{"mutex", "create", "trailing-"}, `invalid mutex name "trailing-"`},
		{[]string{"mutex", "get", strings.Repeat("a", 254)}, `must be no more than 253 characters`},
		{[]string{"mutex", "unlock", "UPPER", "--holder", "w1"}, `invalid mutex name "UPPER"`},
		{[]string{"mutex", "create", "existing", "--ttl", "0"}, `invalid --ttl "0": is zero; a TTL must be at least 1s`},
		{[]string{"mutex", "create", "existing", "--ttl", "-1s"}, `invalid --ttl "-1s": is negative`},
		{[]string{"mutex", "create", "existing", "--ttl", "abc"}, `invalid --ttl "abc": not a Go duration`},
		{[]string{"mutex", "create", "existing", "--ttl", "500ms"}, `invalid --ttl "500ms": below the minimum of 1s`},
		{[]string{"mutex", "create", "existing", "--ttl", "100000h"}, `invalid --ttl "100000h": above the maximum of 8760h`},
		{[]string{"mutex", "lock", "new", "--ttl", "30"}, `invalid --ttl "30": missing unit; did you mean "30s"?`},
		{[]string{"mutex", "lock", "existing", "--timeout", "abc"}, `invalid --timeout "abc": not a Go duration`},
		{[]string{"mutex", "lock", "existing", "--timeout", "-1s"}, `invalid --timeout "-1s": must not be negative`},
		{[]string{"mutex", "run", "existing", "--timeout", "abc", "--", "true"}, `invalid --timeout "abc"`},
		{[]string{"mutex", "run", "existing", "--ttl", "0", "--", "true"}, `invalid --ttl "0"`},
		{[]string{"mutex", "lock", "existing", "--holder", ""}, `holder identity is empty`},
		{[]string{"mutex", "unlock", "held", "--holder", "w1 "}, `has leading or trailing white space`},
		{[]string{"mutex", "lock", "existing", "--holder", strings.Repeat("h", 254)}, `at most 253 allowed`},
		{[]string{"mutex", "lock", "-n", "Bad_NS", "existing"}, `invalid namespace "Bad_NS"`},
		{[]string{"mutex", "lock"}, `needs NAME`},
		{[]string{"mutex", "lock", "a", "b"}, `unexpected "b"`},
		{[]string{"mutex", "lock", "existing", "--bogus"}, `unknown flag: --bogus`},
		{[]string{"mutex", "frob"}, `unknown command "frob" for "koncli mutex"`},
		{[]string{"mutex", "delete", "held", "--force", "--holder", "w1"}, `unknown flag: --holder`},
		{[]string{"mutex", "list", "-o", "xml"}, `invalid -o "xml"`},
	}
	for _, tc := range usage {
		t.Run(cliTestName(tc.args), func(t *testing.T) {
			r := c.run(tc.args...)
			expectCLIError(t, r, 2, tc.want)
			if !strings.HasSuffix(r.stderr, "' for usage.\n") {
				t.Errorf("stderr %q does not end pointing at --help", r.stderr)
			}
		})
	}
	// The same inputs are refused against a server that is not there:
	// nothing was going to be sent.
	bad, _ := unreachableKubeconfig(t)
	for _, tc := range usage[:6] {
		if r := newCLI(t, bad).run(tc.args...); r.code != 2 {
			t.Errorf("against an unreachable server: %s\nwant exit 2", r)
		}
	}

	// A leader-election Lease is never touched.
	for _, args := range [][]string{
		{"mutex", "lock", "leader", "--timeout", "0"},
		{"mutex", "lock", "leader"},
		{"mutex", "unlock", "leader", "--holder", "leader-1"},
		{"mutex", "unlock", "leader", "--force"},
		{"mutex", "create", "leader"},
		{"mutex", "get", "leader"},
		{"mutex", "delete", "leader", "--force"},
		{"mutex", "run", "leader", "--", "true"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			expectCLIError(t, c.run(args...), 1, "lease "+ns+"/leader is not a konlease mutex", "never modifies it")
		})
	}
	expectUnchanged(t, ns, before, "bad inputs")
}

// TestCLIConnection: -n, --context, --kubeconfig and KUBECONFIG select
// what they should; an unreachable server, an untrusted certificate and bad
// credentials each get exit code 1 and a message that says what is wrong.
func TestCLIConnection(t *testing.T) {
	t.Parallel()
	nsA, nsB, nsC := env.Namespace(t), env.Namespace(t), env.Namespace(t)
	two := twoContextKubeconfig(t, nsA, nsB)
	holderIn := func(ns, name string) string {
		t.Helper()
		l, err := admin(t).CoordinationV1().Leases(ns).Get(t.Context(), name, metav1.GetOptions{})
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return holderOf(l)
	}
	c := newCLI(t, two)
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "current-context"), 0, "KONLEASE_MUTEX="+nsA+"/m\n", "")
	expectCLI(t, c.run("--context", "ctx-b", "mutex", "lock", "m", "--holder", "context-b"), 0, "KONLEASE_MUTEX="+nsB+"/m\n", "")
	expectCLI(t, c.run("mutex", "lock", "m", "-n", nsC, "--holder", "flag-n"), 0, "KONLEASE_MUTEX="+nsC+"/m\n", "")
	// -n wins over --context's namespace.
	expectCLI(t, c.run("mutex", "get", "m", "--context", "ctx-b", "-n", nsC, "-o", "json"), 0, `"holder": "flag-n"`, "")
	for ns, want := range map[string]string{nsA: "current-context", nsB: "context-b", nsC: "flag-n"} {
		if got := holderIn(ns, "m"); got != want {
			t.Errorf("holder of %s/m: %q, want %q", ns, got, want)
		}
	}

	// KUBECONFIG, and --kubeconfig over it.
	unreachable, server := unreachableKubeconfig(t)
	viaEnv := newCLI(t, "").with("KUBECONFIG=" + adminKubeconfigIn(t, nsB))
	expectCLI(t, viaEnv.run("mutex", "get", "m"), 0, "holder: context-b", "")
	viaEnv = newCLI(t, adminKubeconfigIn(t, nsC)).with("KUBECONFIG=" + unreachable)
	expectCLI(t, viaEnv.run("mutex", "get", "m"), 0, "holder: flag-n", "")
	// Without any: no cluster (HOME is empty), and koncli says so.
	expectCLIError(t, newCLI(t, "").run("mutex", "list"), 1, "no Kubernetes configuration found", "--kubeconfig")

	before := leaseVersions(t, nsA)
	r := newCLI(t, unreachable).run("mutex", "lock", "m", "--timeout", "5s")
	expectCLIError(t, r, 1, "cannot reach the Kubernetes API server at "+server, "connection refused", "--kubeconfig, --context or --server")
	r = newCLI(t, two).run("mutex", "list", "--server", server)
	expectCLIError(t, r, 1, "cannot reach the Kubernetes API server at "+server)

	cfg := env.Config()
	cfg.CAFile, cfg.CAData = "", foreignCA(t)
	r = newCLI(t, env.WriteKubeconfig(t, cfg, nsA)).run("mutex", "unlock", "m", "--holder", "current-context")
	expectCLIError(t, r, 1, "cannot verify the TLS certificate of the Kubernetes API server at "+cfg.Host, "certificate-authority")

	r = newCLI(t, two).run("mutex", "unlock", "m", "--holder", "current-context", "--token", "not-a-token")
	expectCLIError(t, r, 1, "rejected koncli's credentials (401 Unauthorized)")
	expectUnchanged(t, nsA, before, "failed connections")
}

// TestCLIRBAC: an identity with exactly the Role of examples/rbac can do
// everything; one with only the required verbs can lock a mutex created
// for it; a missing verb gets an error that names it and the Role.
func TestCLIRBAC(t *testing.T) {
	t.Parallel()
	t.Run("examples/rbac/role.yaml", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		c := newCLI(t, env.WriteKubeconfig(t, env.Identity(t, ns, roleVerbs(t)...), ns))
		expectCLI(t, c.run("mutex", "create", "m", "--ttl", "30s"), 0, "", "")
		expectCLI(t, c.run("mutex", "create", "m", "--ttl", "1m", "--update"), 0, "", "")
		expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "KONLEASE_TOKEN=1", "")
		waiter := c.start("mutex", "lock", "m", "--holder", "w2", "--timeout", "60s")
		waiter.waitStderr(`locked by "w1"`)
		expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", "")
		expectCLI(t, waiter.wait(), 0, "KONLEASE_HOLDER=w2", "")
		expectCLI(t, c.run("mutex", "list"), 0, "w2", "")
		expectCLI(t, c.run("mutex", "get", "m"), 0, "holder: w2", "")
		expectCLI(t, c.run("mutex", "unlock", "m", "--force"), 0, "", `evicted "w2"`)
		expectCLI(t, c.run("mutex", "run", "m", "--", "sh", "-c", `echo "token $KONLEASE_TOKEN"`), 0, "token 3\n", "")
		expectCLI(t, c.run("mutex", "run", "fresh", "--ttl", "10s", "--", "true"), 0, "", "")
		expectCLI(t, c.run("__complete", "mutex", "get", ""), 0, "fresh\tUnlocked\nm\tUnlocked\n", "")
		expectCLI(t, c.run("mutex", "delete", "m"), 0, "", "")
	})
	t.Run("required verbs only", func(t *testing.T) {
		t.Parallel()
		ns := env.Namespace(t)
		expectCLI(t, newCLI(t, adminKubeconfigIn(t, ns)).run("mutex", "create", "m"), 0, "", "")
		c := newCLI(t, env.WriteKubeconfig(t, env.Identity(t, ns, "get", "update"), ns))
		expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
		// Without watch, a waiter polls.
		waiter := c.start("mutex", "lock", "m", "--holder", "w2", "--timeout", "60s")
		waiter.waitStderr(`locked by "w1"`)
		expectCLI(t, c.run("mutex", "unlock", "m", "--holder", "w1"), 0, "", "")
		expectCLI(t, waiter.wait(), 0, "KONLEASE_HOLDER=w2", "")

		before := leaseVersions(t, ns)
		for _, tc := range []struct {
			args []string
			verb string
		}{
			{[]string{"mutex", "create", "other"}, "create"},
			{[]string{"mutex", "lock", "other", "--timeout", "0"}, "create"},
			{[]string{"mutex", "list"}, "list"},
			{[]string{"mutex", "delete", "m", "--force"}, "delete"},
		} {
			expectCLIError(t, c.run(tc.args...), 1, fmt.Sprintf("not allowed to %s leases.coordination.k8s.io", tc.verb), "examples/rbac/role.yaml")
		}
		expectUnchanged(t, ns, before, "forbidden commands")
	})
}
