package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"
)

// process is one control plane binary. The exported fields are persisted in
// the state file so that a detached control plane can be stopped by another
// process (Attach).
type process struct {
	Name    string   `json:"name"`
	Binary  string   `json:"binary"`
	Args    []string `json:"args"`
	LogPath string   `json:"log"`
	// PID and StartTicks identify the running instance; StartTicks (field 22
	// of /proc/<pid>/stat) guards against signalling a recycled PID.
	PID        int    `json:"pid,omitempty"`
	StartTicks uint64 `json:"startTicks,omitempty"`
	// Sandbox starts the process as the init of new PID, mount, network
	// and UTS namespaces (the node's sandbox), and with SIGTERM rather
	// than SIGKILL as the parent-death signal, so that it can clean up
	// what the kernel does not (see package e2e/internal/sandbox).
	Sandbox bool `json:"sandbox,omitempty"`

	// exited is closed when the child started by this process has been
	// reaped; nil when the process was adopted from a state file.
	exited chan struct{}
	// waitErr is the result of cmd.Wait, valid once exited is closed.
	waitErr error
}

// start launches the binary with stdout and stderr appended to LogPath.
// With detach the child gets its own session and survives its parent;
// otherwise it gets its own process group (so Stop can signal it as a whole)
// and is killed by the kernel when the parent dies.
func (p *process) start(detach bool) error {
	if p.running() {
		return fmt.Errorf("%s is already running (pid %d)", p.Name, p.PID)
	}
	logFile, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.Name, err)
	}
	// The child inherits the descriptor; ours is not needed after Start.
	defer logFile.Close()
	fmt.Fprintf(logFile, "---- harness: starting %s at %s\n", p.Name, time.Now().Format(time.RFC3339Nano))

	cmd := exec.Command(p.Binary, p.Args...)
	// *os.File outputs are passed to the child as is, so no copying goroutine
	// ties the child's output to this process's lifetime.
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = childEnv()
	var clone uintptr
	deathSignal := syscall.SIGKILL
	if p.Sandbox {
		clone = syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWNET | syscall.CLONE_NEWUTS
		deathSignal = syscall.SIGTERM
	}
	if detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Cloneflags: clone}
		err = cmd.Start()
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: deathSignal, Cloneflags: clone}
		err = startOnLockedThread(cmd)
	}
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	p.PID = cmd.Process.Pid
	// The child cannot have been reaped yet (Wait starts below), so its
	// /proc entry exists even if it already died; an error leaves 0, which
	// only makes a later Attach treat the process as gone.
	p.StartTicks, _ = startTicks(p.PID)
	exited := make(chan struct{})
	p.exited = exited
	go func() {
		p.waitErr = cmd.Wait()
		close(exited)
	}()
	return nil
}

// running reports whether the recorded instance is alive.
func (p *process) running() bool {
	if p.PID == 0 {
		return false
	}
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	return p.isOurs()
}

// isOurs reports whether PID still names the instance recorded in the state
// file: same start time, same command line, and not a zombie.
func (p *process) isOurs() bool {
	st, err := readStat(p.PID)
	if err != nil || st.state == 'Z' || st.startTicks != p.StartTicks {
		return false
	}
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p.PID))
	if err != nil {
		return false
	}
	argv := strings.Split(strings.TrimSuffix(string(raw), "\x00"), "\x00")
	return len(argv) > 0 && slices.Equal(argv[1:], p.Args)
}

// exitErr describes why a child that should be running is not.
func (p *process) exitErr() error {
	if p.exited != nil {
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited: %v", p.Name, p.waitErr)
		default:
			return nil
		}
	}
	if !p.isOurs() {
		return fmt.Errorf("%s (pid %d) is not running", p.Name, p.PID)
	}
	return nil
}

// stop sends SIGTERM to the process group, then SIGKILL after grace (or at
// once when ctx ends), and waits until the process is gone. Stopping a
// stopped process is a no-op.
func (p *process) stop(ctx context.Context, grace time.Duration) error {
	if !p.running() {
		p.PID, p.StartTicks = 0, 0
		return nil
	}
	// The child leads its own process group (Setpgid or Setsid), so -PID
	// reaches it and anything it may have spawned.
	if err := syscall.Kill(-p.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGTERM %s (pid %d): %w", p.Name, p.PID, err)
	}
	if !p.waitGone(ctx, grace) {
		if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("SIGKILL %s (pid %d): %w", p.Name, p.PID, err)
		}
		// A SIGKILLed process is gone within moments; ctx no longer applies.
		if !p.waitGone(context.Background(), killWait) {
			return fmt.Errorf("%s (pid %d) still running after SIGKILL", p.Name, p.PID)
		}
	}
	p.PID, p.StartTicks = 0, 0
	return nil
}

// kill sends SIGKILL to the process group and waits until it is gone.
func (p *process) kill(ctx context.Context) error {
	if !p.running() {
		p.PID, p.StartTicks = 0, 0
		return nil
	}
	if err := syscall.Kill(-p.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("SIGKILL %s (pid %d): %w", p.Name, p.PID, err)
	}
	if !p.waitGone(ctx, killWait) {
		return fmt.Errorf("%s (pid %d) still running after SIGKILL", p.Name, p.PID)
	}
	p.PID, p.StartTicks = 0, 0
	return nil
}

// killWait bounds the wait for a SIGKILLed process to disappear.
const killWait = 10 * time.Second

// waitGone waits up to d, or until ctx ends, for the process to exit.
func (p *process) waitGone(ctx context.Context, d time.Duration) bool {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if p.exited != nil {
		select {
		case <-p.exited:
			return true
		case <-ctx.Done():
			return false
		}
	}
	// Not our child: it is reaped by whoever adopted it, so poll /proc.
	err := wait.PollUntilContextCancel(ctx, 20*time.Millisecond, true, func(ctx context.Context) (bool, error) {
		return !p.isOurs(), nil
	})
	return err == nil
}

// logTail returns up to the last n lines of the process log, for errors.
func (p *process) logTail(n int) string {
	return fileTail(p.LogPath, n)
}

func fileTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	defer f.Close()
	const maxBytes = 16 << 10
	if fi, err := f.Stat(); err == nil && fi.Size() > maxBytes {
		if _, err := f.Seek(-maxBytes, io.SeekEnd); err != nil {
			return fmt.Sprintf("(cannot read log: %v)", err)
		}
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment of the children minus ETCD_* variables, which
// etcd reads as flags and which would silently change the test cluster.
func childEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "ETCD_")
	})
}

type procStat struct {
	state      byte
	startTicks uint64
}

func readStat(pid int) (procStat, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, err
	}
	// The command name (field 2) is in parentheses and may contain spaces,
	// so fields are counted after the last ')'.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	fields := strings.Fields(string(raw[i+1:]))
	// fields[0] is field 3 (state); field 22 (starttime) is fields[19].
	if len(fields) < 20 || len(fields[0]) != 1 {
		return procStat{}, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	ticks, err := strconv.ParseUint(fields[19], 10, 64)
	if err != nil {
		return procStat{}, fmt.Errorf("parse start time in /proc/%d/stat: %w", pid, err)
	}
	return procStat{state: fields[0][0], startTicks: ticks}, nil
}

func startTicks(pid int) (uint64, error) {
	st, err := readStat(pid)
	return st.startTicks, err
}

// Pdeathsig is delivered when the *thread* that forked the child exits, not
// the process (prctl(2); golang/go#27505). The Go runtime may end a thread,
// e.g. when a goroutine exits while locked to it, which would kill a healthy
// etcd in the middle of a test. So children with Pdeathsig are forked from
// one goroutine locked to its thread for the life of the process.
var (
	spawnOnce sync.Once
	spawnCh   chan spawnRequest
)

type spawnRequest struct {
	cmd  *exec.Cmd
	done chan error
}

func startOnLockedThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan spawnRequest)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread must outlive every child
			for req := range spawnCh {
				req.done <- req.cmd.Start()
			}
		}()
	})
	done := make(chan error, 1)
	spawnCh <- spawnRequest{cmd: cmd, done: done}
	return <-done
}
