package sandbox

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// stopGrace is how long each process may take to exit after SIGTERM.
	stopGrace = 10 * time.Second
	// waitForTimeout bounds the wait for a process's WaitFor endpoints.
	waitForTimeout = 3 * time.Minute
	// uplinkTimeout bounds the wait for the harness to move the uplink in.
	uplinkTimeout = time.Minute
	// reapTimeout bounds the wait for SIGKILLed processes to be reaped.
	reapTimeout = 10 * time.Second
)

// Init is the init process of a sandbox.
type Init struct {
	spec *Spec
	logf func(string, ...any)

	mu      sync.Mutex
	running map[int]string // pid -> process name, for the processes of the spec
	order   []int          // pids in start order
	exited  chan string    // a process of the spec exited on its own
	cgroups []string       // cgroups of the processes killed at the end
}

// Run sets the sandbox up, starts the processes and waits until it is asked
// to stop (SIGTERM, SIGINT) or a process exits on its own; then it stops
// everything and cleans up. It must run as PID 1 of new PID, mount, network
// and UTS namespaces. The error says why the sandbox ended, if not on
// request.
func Run(spec *Spec, logger *log.Logger) error {
	if os.Getpid() != 1 {
		return fmt.Errorf("must run as PID 1 of a new PID namespace (pid %d): started by the harness, not by hand", os.Getpid())
	}
	in := &Init{spec: spec, logf: logger.Printf, running: map[int]string{}, exited: make(chan string, len(spec.Processes))}

	// Signals first: a SIGTERM that arrives during the set-up must still
	// lead to a clean-up.
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	children := make(chan os.Signal, 1)
	signal.Notify(children, syscall.SIGCHLD)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go in.reap(ctx, children)

	started := make(chan error, 1)
	go func() { started <- in.setUpAndStart(ctx) }()

	var runErr error
	setUpDone := false
	select {
	case sig := <-stop:
		in.logf("%v: stopping", sig)
	case err := <-started:
		setUpDone = true
		if err != nil {
			runErr = err
			break
		}
		in.logf("all processes started")
		select {
		case sig := <-stop:
			in.logf("%v: stopping", sig)
		case name := <-in.exited:
			runErr = fmt.Errorf("%s exited on its own", name)
		}
	case name := <-in.exited:
		runErr = fmt.Errorf("%s exited on its own", name)
	}
	if runErr != nil {
		in.logf("stopping: %v", runErr)
	}
	// Cancelling ends a wait in setUpAndStart, which then starts nothing
	// more; it must be over before the processes are stopped.
	cancel()
	if !setUpDone {
		if err := <-started; err != nil && !errors.Is(err, context.Canceled) {
			in.logf("set-up interrupted: %v", err)
		}
	}
	in.stopAll()
	if err := in.cleanUp(); err != nil {
		runErr = errors.Join(runErr, err)
	}
	return runErr
}

// setUpAndStart prepares the namespaces and starts the processes in order.
func (in *Init) setUpAndStart(ctx context.Context) error {
	if err := setUpMounts(in.spec); err != nil {
		return err
	}
	if err := syscall.Sethostname([]byte(in.spec.Hostname)); err != nil {
		return fmt.Errorf("set host name: %w", err)
	}
	if err := setUpNetwork(ctx, in.spec.Network); err != nil {
		return err
	}
	in.logf("network ready: %s on %s, uplink %s", in.spec.Network.Address, in.spec.Network.Bridge, in.spec.Network.Uplink)
	for _, p := range in.spec.Processes {
		if err := ctx.Err(); err != nil {
			return err
		}
		for _, ep := range p.WaitFor {
			if err := waitDial(ctx, ep); err != nil {
				return fmt.Errorf("before starting %s: %w", p.Name, err)
			}
		}
		if err := in.start(p); err != nil {
			return err
		}
	}
	return nil
}

// start launches p in its own process group, so that a signal meant for the
// init (the harness signals its process group) does not reach it directly.
func (in *Init) start(p Process) error {
	logFile, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("open %s log: %w", p.Name, err)
	}
	defer logFile.Close()
	fmt.Fprintf(logFile, "---- sandbox: starting %s at %s\n", p.Name, time.Now().Format(time.RFC3339Nano))
	// The reaper must see every exit, so the process is started without
	// exec.Cmd, whose Wait would compete with it for the exit status.
	in.mu.Lock()
	defer in.mu.Unlock()
	proc, err := os.StartProcess(p.Path, append([]string{p.Path}, p.Args...), &os.ProcAttr{
		Dir:   "/",
		Env:   os.Environ(),
		Files: []*os.File{nil, logFile, logFile},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	in.running[proc.Pid] = p.Name
	in.order = append(in.order, proc.Pid)
	in.logf("started %s (pid %d)", p.Name, proc.Pid)
	return nil
}

// reap collects every child that exits: as PID 1 the init inherits every
// orphan of the namespace (containerd's shims re-parent to it).
func (in *Init) reap(ctx context.Context, children <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-children:
		}
		in.reapNow()
	}
}

// execMu keeps the reaper from collecting the exit of a command that
// exec.Cmd waits for (ip, during the set-up): Wait4(-1) would take it, and
// the command would fail with ECHILD.
var execMu sync.RWMutex

// reapNow collects the children that have exited, without blocking, and
// reports whether none are left.
func (in *Init) reapNow() (none bool) {
	execMu.Lock()
	defer execMu.Unlock()
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if errors.Is(err, syscall.ECHILD) {
			return true
		}
		if err != nil || pid <= 0 {
			return false
		}
		in.mu.Lock()
		name, ours := in.running[pid]
		delete(in.running, pid)
		in.mu.Unlock()
		if ours {
			in.logf("%s (pid %d) exited: %s", name, pid, describe(ws))
			select {
			case in.exited <- name:
			default:
			}
		}
	}
}

func describe(ws syscall.WaitStatus) string {
	if ws.Signaled() {
		return "killed by " + ws.Signal().String()
	}
	return fmt.Sprintf("exit status %d", ws.ExitStatus())
}

// stopAll stops the processes of the spec in reverse order (kubelet before
// containerd), each with SIGTERM and after stopGrace SIGKILL, then kills
// whatever is left in the namespace (shims, containers) and reaps it.
func (in *Init) stopAll() {
	in.mu.Lock()
	order := append([]int(nil), in.order...)
	in.mu.Unlock()
	for i := len(order) - 1; i >= 0; i-- {
		pid := order[i]
		if !in.isRunning(pid) {
			continue
		}
		name := in.nameOf(pid)
		_ = syscall.Kill(-pid, syscall.SIGTERM)
		if !in.waitExit(pid, stopGrace) {
			in.logf("%s (pid %d) did not stop within %s: SIGKILL", name, pid, stopGrace)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			in.waitExit(pid, reapTimeout)
		}
	}
	// The containers' cgroups outlive them (runc removes them on a clean
	// delete only); note them while the processes are there.
	in.cgroups = processCgroups()
	// kill(-1) from PID 1 reaches every other process of the namespace,
	// those in nested PID namespaces (containers) included.
	if err := syscall.Kill(-1, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		in.logf("kill all: %v", err)
	}
	deadline := time.Now().Add(reapTimeout)
	for !in.reapNow() {
		if time.Now().After(deadline) {
			in.logf("processes still not reaped after %s", reapTimeout)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	in.logf("all processes stopped")
}

func (in *Init) isRunning(pid int) bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	_, ok := in.running[pid]
	return ok
}

func (in *Init) nameOf(pid int) string {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.running[pid]
}

// waitExit waits up to d for pid to be reaped.
func (in *Init) waitExit(pid int, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for in.isRunning(pid) {
		if time.Now().After(deadline) {
			return false
		}
		in.reapNow()
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// cleanUp removes what outlives the processes: mounts under the state
// directory (they would go with the namespace, but the directory is removed
// first), the state directory, and the containers' cgroups.
func (in *Init) cleanUp() error {
	var errs []error
	if err := unmountUnder(in.spec.StateDir); err != nil {
		errs = append(errs, err)
	}
	if err := os.RemoveAll(in.spec.StateDir); err != nil {
		errs = append(errs, fmt.Errorf("remove state: %w", err))
	}
	if err := removeCgroups(in.cgroups); err != nil {
		errs = append(errs, err)
	}
	if stayed := removeEmptyCgroups(in.spec.CgroupParents); len(stayed) > 0 {
		in.logf("cgroups left to other runs: %s", strings.Join(stayed, "; "))
	}
	if len(errs) == 0 {
		in.logf("cleaned up")
	}
	return errors.Join(errs...)
}

// waitDial dials ep until it accepts a connection.
func waitDial(ctx context.Context, ep Endpoint) error {
	ctx, cancel := context.WithTimeout(ctx, waitForTimeout)
	defer cancel()
	var d net.Dialer
	for {
		attempt, cancelAttempt := context.WithTimeout(ctx, 2*time.Second)
		c, err := d.DialContext(attempt, ep.Network, ep.Address)
		cancelAttempt()
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s %s not reachable: %w (last: %v)", ep.Network, ep.Address, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ip runs an iproute2 command.
func ip(args ...string) error {
	execMu.RLock()
	defer execMu.RUnlock()
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// setUpNetwork brings lo up, waits for the uplink, and attaches it to a new
// bridge that carries the node's address.
func setUpNetwork(ctx context.Context, n Network) error {
	if err := ip("link", "set", "lo", "up"); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, uplinkTimeout)
	defer cancel()
	for {
		if _, err := net.InterfaceByName(n.Uplink); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("uplink %s never appeared in the sandbox: %w", n.Uplink, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	for _, args := range [][]string{
		{"link", "add", "name", n.Bridge, "type", "bridge"},
		{"link", "set", n.Uplink, "master", n.Bridge},
		{"addr", "add", n.Address, "dev", n.Bridge},
		{"link", "set", n.Uplink, "up"},
		{"link", "set", n.Bridge, "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}
