//go:build e2e

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/konlease/konlease/lock"
)

// TestCLIRunExitCodes: run passes CMD's exit status on, hands CMD the
// mutex, holder and token, and always unlocks.
func TestCLIRunExitCodes(t *testing.T) {
	t.Parallel()
	host, err := os.Hostname()
	if err != nil {
		t.Skip("no host name:", err)
	}
	dir := t.TempDir()
	notExecutable := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(notExecutable, []byte("#!/bin/sh\necho hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		cmd    []string
		code   int
		stdout string
		stderr string
	}{
		{"status 0", []string{"sh", "-c", "exit 0"}, 0, "", ""},
		{"status 1", []string{"sh", "-c", "exit 1"}, 1, "", ""},
		{"status 42", []string{"sh", "-c", "echo out; echo err >&2; exit 42"}, 42, "out\n", "err\n"},
		{"environment", []string{"sh", "-c", `echo "$KONLEASE_MUTEX|$KONLEASE_HOLDER|$KONLEASE_TOKEN"`}, 0, "NS/m|" + host + "-PID-RAND|1\n", ""},
		{"empty stdin", []string{"sh", "-c", "read -r line || line=EOF; echo got $line"}, 0, "got EOF\n", ""},
		{"killed by SIGKILL", []string{"sh", "-c", "kill -KILL $$"}, 137, "", ""},
		{"killed by SIGTERM", []string{"sh", "-c", "kill -TERM $$"}, 143, "", ""},
		{"not found", []string{"no-such-command-konlease"}, 127, "", `error: command "no-such-command-konlease" not found`},
		{"not executable", []string{notExecutable}, 126, "", "error: cannot execute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newCLI(t, adminKubeconfigIn(t, ns))
			p := c.start(append([]string{"mutex", "run", "m", "--"}, tc.cmd...)...)
			r := p.wait()
			want := strings.NewReplacer("NS", ns, "PID", strconv.Itoa(p.cmd.Process.Pid)).Replace(tc.stdout)
			// The default holder ends in random hex, so that a restarted
			// container (same host, same pid) is a new holder.
			wantRE := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(want), "RAND", "[0-9a-f]{6}") + "$")
			if r.code != tc.code || !wantRE.MatchString(r.stdout) || !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("got %s\nwant exit %d, stdout %q, stderr containing %q", r, tc.code, want, tc.stderr)
			}
			// The child's own failures print nothing more from koncli.
			if tc.code != 0 && tc.code < 126 && strings.Contains(r.stderr, "error:") {
				t.Errorf("koncli added an error line to the command's status %d: %q", tc.code, r.stderr)
			}
			if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked || st.Token != 1 {
				t.Errorf("after run: %+v, want Unlocked after one acquisition", st)
			}
		})
	}
}

// TestCLIRunStdin: the command reads koncli's stdin.
func TestCLIRunStdin(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	cmd := c.command(t.Context(), []string{"mutex", "run", "m", "--", "sh", "-c", "read -r line; echo got $line"})
	cmd.Stdin = strings.NewReader("hello\n")
	out, err := cmd.Output()
	if err != nil || string(out) != "got hello\n" {
		t.Errorf("run with stdin: %q, %v; want the command to read it", out, err)
	}
}

// TestCLIRunNotAcquired: CMD never runs when the mutex is not acquired;
// a signal while waiting exits 128+n with nothing locked.
func TestCLIRunNotAcquired(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	marker := filepath.Join(t.TempDir(), "ran")
	touch := []string{"--", "sh", "-c", "touch " + marker}
	expectCLI(t, c.run("mutex", "lock", "m", "--holder", "w1"), 0, "", "")
	before := leaseVersions(t, ns)

	expectCLIError(t, c.run(append([]string{"mutex", "run", "m", "--timeout", "0"}, touch...)...), 3, `locked by "w1"`)
	expectCLIError(t, c.run(append([]string{"mutex", "run", "m", "--timeout", "1500ms"}, touch...)...), 3, "not acquired within 1.5s")
	p := c.start(append([]string{"mutex", "run", "m"}, touch...)...)
	p.waitStderr(`waiting for mutex ` + ns + `/m: locked by "w1"`)
	p.signal(syscall.SIGTERM)
	expectCLIError(t, p.wait(), 143, "interrupted by SIGTERM", "nothing was locked")

	if _, err := os.Stat(marker); !os.IsNotExist(err) {
		t.Errorf("the command ran without the mutex (stat: %v)", err)
	}
	expectUnchanged(t, ns, before, "runs that did not acquire")
}

// TestCLIRunForwardsSignals: SIGTERM, SIGINT and SIGHUP sent to koncli reach CMD,
// koncli waits for CMD, exits with its status, and unlocks.
func TestCLIRunForwardsSignals(t *testing.T) {
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		t.Run(cliSignalName(sig), func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newCLI(t, adminKubeconfigIn(t, ns))
			name := strings.TrimPrefix(cliSignalName(sig), "SIG")
			script := fmt.Sprintf(`trap 'echo "got %s"; exit 7' %s; echo ready; while :; do sleep 1; done`, name, name)
			p := c.start("mutex", "run", "m", "--", "sh", "-c", script)
			p.waitStdout("ready\n")
			p.signal(sig)
			r := p.wait()
			if r.code != 7 || r.stdout != fmt.Sprintf("ready\ngot %s\n", name) {
				t.Errorf("got %s\nwant the command to report %s and exit 7", r, name)
			}
			if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked {
				t.Errorf("after the command exited: %+v, want Unlocked", st)
			}
		})
	}
}

// TestCLIRunLockLost: when the mutex is force-unlocked under a running
// command, the command gets SIGTERM (then SIGKILL after the grace period)
// and koncli exits 4.
func TestCLIRunLockLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		script  string
		grace   string
		minTook time.Duration
		stdout  string
	}{
		{"command stops on SIGTERM", `trap 'echo "got TERM"; exit 0' TERM; echo ready; while :; do sleep 1; done`, "10s", 0, "ready\ngot TERM\n"},
		{"command ignores SIGTERM", `trap 'echo "ignoring TERM"' TERM; echo ready; while :; do sleep 1; done`, "1s", time.Second, "ready\nignoring TERM\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := env.Namespace(t)
			c := newCLI(t, adminKubeconfigIn(t, ns))
			p := c.start("mutex", "run", "m", "--holder", "runner", "--ttl", "30s", "--grace-period", tc.grace, "--", "sh", "-c", tc.script)
			p.waitStdout("ready\n")
			// Taken before the eviction is written: koncli learns of it
			// from its watch, often before the unlock process has exited,
			// so a time taken after that exit is no lower bound.
			evicted := time.Now()
			expectCLI(t, c.run("mutex", "unlock", "m", "--force"), 0, "", `evicted "runner"`)
			r := p.wait()
			expectCLI(t, r, 4, tc.stdout, "error: lost mutex "+ns+"/m while the command ran: it was force-unlocked;")
			if n := strings.Count(r.stderr, "force-unlocked"); n != 1 {
				t.Errorf("the loss's reason is said %d times, want once:\n%s", n, r.stderr)
			}
			if took := time.Since(evicted); took < tc.minTook {
				t.Errorf("koncli exited %s after the eviction, before the grace period of %s", took, tc.grace)
			}
			if st := mutexStatus(t, ns, "m"); st.Phase != lock.PhaseUnlocked {
				t.Errorf("after the loss: %+v, want Unlocked", st)
			}
		})
	}
}

// TestCLIRunMutualExclusion: concurrent `koncli mutex run` processes with
// their default (per-process) identities never overlap: the command claims
// a file with O_EXCL (the shell's noclobber), as criticalSection does for
// the library's processes, and logs its token; tokens grow in the order
// the sections ran.
func TestCLIRunMutualExclusion(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	dir := t.TempDir()
	section := `set -C
if ! echo "$KONLEASE_HOLDER" > "$0/inside"; then
    echo "OVERLAP: $KONLEASE_HOLDER entered while $(cat "$0/inside") was inside" >&2
    exit 99
fi
echo "$KONLEASE_TOKEN $KONLEASE_HOLDER" >> "$0/log"
sleep 0.1
rm "$0/inside"`
	const procs, rounds = 4, 3
	var wg sync.WaitGroup
	results := make(chan cliResult, procs*rounds)
	for range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				results <- c.run("mutex", "run", "shared", "--timeout", "90s", "--", "sh", "-c", section, dir)
			}
		}()
	}
	wg.Wait()
	close(results)
	for r := range results {
		if r.code != 0 {
			t.Errorf("run: %s", r)
		}
	}
	data, err := os.ReadFile(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != procs*rounds {
		t.Fatalf("critical sections logged: %d, want %d:\n%s", len(lines), procs*rounds, data)
	}
	holders := map[string]bool{}
	prev := int64(0)
	for i, line := range lines {
		tokText, holder, _ := strings.Cut(line, " ")
		tok, err := strconv.ParseInt(tokText, 10, 64)
		if err != nil || tok <= prev {
			t.Fatalf("log line %d %q: token not larger than %d before it (%v)", i, line, prev, err)
		}
		prev = tok
		holders[holder] = true
	}
	if len(holders) != procs*rounds {
		t.Errorf("holder identities: %d distinct, want one per run (%d)", len(holders), procs*rounds)
	}
}

// TestCLIRunJob is the seed's db-migration Job done right: one container
// runs the migration under the lock; a second pod's run waits for it.
func TestCLIRunJob(t *testing.T) {
	t.Parallel()
	ns := env.Namespace(t)
	c := newCLI(t, adminKubeconfigIn(t, ns))
	dir := t.TempDir()
	migrate := filepath.Join(dir, "migrate")
	script := "#!/bin/sh\necho \"migrating as $KONLEASE_HOLDER\"\nread -r _\necho migrated\n"
	if err := os.WriteFile(migrate, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	first := c.with()
	first.dir = dir
	// The container command: koncli mutex run db-migration --timeout 5m -- ./migrate
	cmd := first.command(t.Context(), []string{"mutex", "run", "db-migration", "--holder", "pod-1", "--timeout", "5m", "--", "./migrate"})
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := newWatchedBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })
	if err := out.waitFor(t.Context(), exited, "migrating as pod-1\n"); err != nil {
		t.Fatalf("first migration: %v\n%s", err, out.String())
	}

	second := c.with()
	second.dir = dir
	p := second.start("mutex", "run", "db-migration", "--holder", "pod-2", "--timeout", "5m", "--", "./migrate")
	p.waitStderr(`locked by "pod-1"`)
	if got := p.stdout.String(); got != "" {
		t.Errorf("second migration started while the first ran: %q", got)
	}
	_, _ = stdin.Write([]byte("go\n"))
	<-exited
	if cmd.ProcessState.ExitCode() != 0 || !strings.Contains(out.String(), "migrated\n") {
		t.Errorf("first migration: exit %d\n%s", cmd.ProcessState.ExitCode(), out.String())
	}
	// The second one's stdin is empty, so its read returns at once.
	expectCLI(t, p.wait(), 0, "migrating as pod-2\nmigrated\n", "")
	if st := mutexStatus(t, ns, "db-migration"); st.Phase != lock.PhaseUnlocked || st.Token != 2 {
		t.Errorf("after both migrations: %+v, want Unlocked after two acquisitions", st)
	}
}
