// Package run implements the run commands: `koncli mutex run` and
// `koncli semaphore run`, which differ only in their Kind.
package run

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"golang.org/x/term"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// Environment variables the command gets.
const (
	EnvMutex  = "KONLEASE_MUTEX"
	EnvHolder = "KONLEASE_HOLDER"
	EnvToken  = "KONLEASE_TOKEN"
)

// DefaultGracePeriod is how long a command that must stop because the lock
// was lost has between SIGTERM and SIGKILL.
const DefaultGracePeriod = 10 * time.Second

type flagpole struct {
	cmdutil.AcquireFlags
	grace string
	// kindOpts turns the kind's own flags into options (Kind.AddFlags).
	kindOpts func() ([]lock.Option, error)
}

// Kind is what the run command of a mutex and that of a semaphore differ
// in; the rest (waiting, signals, the process group, stopping CMD when the
// hold is lost, the final release) is this package's, for both.
type Kind struct {
	// Noun is "mutex" or "semaphore", in messages and flag help.
	Noun string
	// Env names the variable that gives CMD the NAMESPACE/NAME.
	Env string
	// Short, Long and Example are the command's help.
	Short, Long, Example string
	// Complete completes NAME.
	Complete func(f *cmdutil.Factory) cobra.CompletionFunc
	// Acquire takes it as cmdutil.Acquire does; env is what CMD gets
	// besides the name, holder and token.
	Acquire func(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w cmdutil.Wait, opts ...lock.Option) (h cmdutil.Hold, env []string, err error)
	// AddFlags, if set, adds flags of the kind's own to the command; the
	// function it returns turns them into options, or a usage error.
	AddFlags func(cmd *cobra.Command) func() ([]lock.Option, error)
	// Busy says when --if-busy applies (cmdutil.BusyMutex, ...).
	Busy string
	// Unlocking is the release, in messages: "unlocking" or "releasing".
	Unlocking string
	// Release is the command that releases it by hand, for messages:
	// "koncli mutex unlock".
	Release string
}

// Mutex is the kind of 'koncli mutex run'.
var Mutex = Kind{
	Noun: "mutex", Env: EnvMutex, Short: "Run a command while holding a mutex", Long: mutexLong, Example: mutexExample,
	Complete: cmdutil.CompleteMutexNames, Busy: cmdutil.BusyMutex, Unlocking: "unlocking", Release: "koncli mutex unlock",
	Acquire: func(ctx context.Context, log logr.Logger, c *lock.Client, namespace, name string, w cmdutil.Wait, opts ...lock.Option) (cmdutil.Hold, []string, error) {
		m, err := cmdutil.Acquire(ctx, log, c, namespace, name, w, opts...)
		if err != nil {
			return nil, nil, err
		}
		if st, held := m.Status(); held && st.TookOverFrom != "" {
			log.Info(fmt.Sprintf("took over mutex %s from %q, whose TTL had run out (token %d)", cmdutil.Ref(namespace, name), st.TookOverFrom, st.Token))
		}
		return cmdutil.MutexHold{Mutex: m}, nil, nil
	},
}

// NewCommand returns 'koncli mutex run'.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	return New(streams, f, Mutex)
}

// New returns the run command of kind k.
func New(streams genericiooptions.IOStreams, f *cmdutil.Factory, k Kind) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:     "run NAME [--holder H] [--timeout D] [--ttl D] [--grace-period D] [--if-busy fail|skip] [-E N] [flags] -- CMD [ARGS...]",
		Short:   k.Short,
		Long:    k.Long,
		Example: k.Example,
		Args: func(cmd *cobra.Command, args []string) error {
			return checkArgs(cmd, args)
		},
		ValidArgsFunction: k.Complete(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, k, flags, args[0], args[1:])
		},
	}
	cmd.Flags().StringVar(&flags.Holder, "holder", "", "holder identity (default: the host name, koncli's process id and a random suffix)")
	cmd.Flags().StringVar(&flags.Timeout, "timeout", "", fmt.Sprintf(`how long to wait for the %s, a Go duration ("30s"); 0: one attempt; default: wait until acquired`, k.Noun))
	cmd.Flags().StringVar(&flags.TTL, "ttl", "", fmt.Sprintf(`the TTL the %s must have, from 1s to 8760h: a missing one is created with it, one with another TTL is refused; default: its own TTL`, k.Noun))
	flags.Busy.AddFlags(cmd, k.Busy)
	if k.AddFlags != nil {
		flags.kindOpts = k.AddFlags(cmd)
	}
	cmd.Flags().StringVar(&flags.grace, "grace-period", DefaultGracePeriod.String(), "after the hold is lost, how long CMD has between SIGTERM and SIGKILL")
	return cmd
}

// mutexLong is the help of 'koncli mutex run'.
const mutexLong = `Acquire the mutex NAME, run CMD with its arguments while holding it, and
unlock it when CMD exits, however it exits. This is the safe way to run a
critical section from a shell, a Job or a CronJob.

Acquiring works as for 'koncli mutex lock': without --timeout run waits until
the mutex is free; --timeout 0 makes one attempt; --timeout 30s waits up to
30 seconds. --ttl is the TTL the mutex must have: a missing mutex is created
with it, and one with another TTL (or none) is refused with status 1,
running nothing; without --ttl the mutex's own TTL applies. While it waits
longer than a second it says on stderr whom it waits for. If the mutex is
not acquired, CMD is not run.

A short outage of the API server does not fail the run. Transient failures
(connection refused or reset, timeouts, 429, 5xx) are retried with backoff:
while acquiring, until --timeout runs out, or for 30 seconds without a
single success when there is no --timeout or it is 0; when CMD has
finished, the unlock is retried for 30 seconds (or --grace-period, if
longer) before run gives up, reports status 1 and leaves the mutex to its
TTL or to 'koncli mutex unlock'. While the unlock is retried, a TTL is still
renewed.

The default holder identity is the host name (in a pod, the pod's name),
koncli's process id and a random suffix, so that several runs on one host
are different holders and queue up for the mutex, and a restarted
container (often process id 1 again) is not mistaken for its dead
predecessor, whose lock it then waits out like anyone else.

While CMD runs, koncli renews the mutex's TTL (if it has one) and watches
the Lease. CMD gets stdin, stdout and stderr as they are, and in its
environment:

  KONLEASE_MUTEX   NAMESPACE/NAME
  KONLEASE_HOLDER  the holder identity
  KONLEASE_TOKEN   the fencing token of this acquisition: it grows with
                   every acquisition, so a resource that remembers the
                   largest token it saw can refuse writes from a holder
                   that lost the lock without knowing

SIGINT, SIGTERM and SIGHUP sent to koncli are forwarded to CMD, and koncli
waits for CMD to exit. CMD runs in its own process group: signals go to the
whole group, and whatever CMD leaves running in it is killed when CMD
exits, before the mutex is unlocked. Except when stdin is a terminal: then
CMD stays in the terminal's foreground process group (to be able to read
it), gets Ctrl-C and hangups from the terminal itself, and koncli forwards
only SIGTERM, to CMD alone.

If the lock is lost while CMD runs (an operator force-unlocked or deleted
the mutex, or renewals failed until the TTL would run out), CMD gets
SIGTERM, then SIGKILL after --grace-period, and koncli exits with status 4:
CMD's work may have overlapped another holder's.

Skipping: --if-busy=skip makes a mutex held by someone else (once
--timeout has run out; at once with --timeout 0) a success: CMD is not run,
koncli says "skipped: ..." on stderr, naming the holder, and exits 0. A
CronJob's run that finds the previous one still running is then a Job that
succeeded, not a failed one:

  koncli mutex run daily-job --timeout 0 --if-busy=skip -- run-daily-job

--if-busy=skip is the readable form of -E 0. Only a busy mutex is skipped:
every other failure (RBAC, an unreachable API server, a mutex with another
TTL, this holder holding it already) still fails with its own status.

Telling koncli's own outcomes from CMD's: koncli's codes 1 to 5 can also be
CMD's own. Before CMD runs, koncli's failures come with a line "error: ..."
on stderr, and CMD has not run; choose a code CMD never uses for "held by
someone else" with --conflict-exit-code (-E, as flock(1) has it), e.g. -E 75
(EX_TEMPFAIL), or skip with --if-busy=skip (-E 0). Status 4 and an unlock
failure after CMD come with an "error: ..." line too; CMD's own status is
passed on without one.

Jobs: run the work under the lock in one container,

  command: [koncli, mutex, run, db-migration, --timeout, 5m, --, ./migrate]

rather than locking in an init container and unlocking in a sidecar: a
sidecar runs in parallel with the main container, so it unlocks while the
migration still runs, and a crashed pod never unlocks at all.

Exit status:
  0      CMD exited with status 0 and the mutex was unlocked; or, with
         --if-busy=skip (-E 0), another holder holds it and CMD was not
         run
  1      error before CMD ran (the Lease is not a mutex, RBAC, API server
         unreachable, ...), or CMD succeeded but unlocking failed
  2      usage error: invalid NAME or flags, no -- CMD, --if-busy=skip with
         -E N; nothing was sent
  3      not acquired: another holder holds it and --timeout ran out (or
         was 0); CMD was not run (-E N makes this N, --if-busy=skip 0)
  4      the lock was lost while CMD ran; CMD was stopped
  5      not acquired: this holder identity holds it already; CMD was not
         run
  126    CMD could not be executed
  127    CMD was not found
  128+n  CMD was killed by signal n (143 for SIGTERM)
  N      CMD exited with status N
  130    interrupted by SIGINT (143: SIGTERM, 129: SIGHUP) while waiting
         for the mutex; CMD was not run`

// mutexExample are the examples of 'koncli mutex run'.
const mutexExample = `  # Run a migration under a mutex, waiting up to 5 minutes for it
  koncli mutex run db-migration --timeout 5m -- ./migrate --to latest

  # Skip instead of waiting when someone else holds it: exit 0, as a
  # CronJob's skipped run should
  koncli mutex run daily-job --timeout 0 --if-busy=skip -- run-daily-job

  # The same, but a skip exits 75 (EX_TEMPFAIL), to tell it from CMD's statuses
  koncli mutex run daily-job --timeout 0 -E 75 -- run-daily-job

  # Pass the fencing token on to the protected resource
  koncli mutex run shared-file -- sh -c 'write-file --fencing-token "$KONLEASE_TOKEN"'

  # A TTL, renewed while the command runs: if koncli dies, the lock is free
  # again a minute later
  koncli mutex run backup --ttl 1m -- ./backup.sh`

// checkArgs requires NAME, then --, then at least the command.
func checkArgs(cmd *cobra.Command, args []string) error {
	dash := cmd.ArgsLenAtDash()
	switch {
	case dash < 0 && len(args) == 0:
		return cmdutil.Usagef("%q needs NAME -- CMD [ARGS...]", cmd.CommandPath())
	case dash < 0:
		line := append(append([]string{cmd.CommandPath(), args[0]}, cmdutil.SetFlags(cmd)...), "--")
		for _, a := range args[1:] {
			line = append(line, cmdutil.ShellQuote(a))
		}
		return cmdutil.Usagef("%q needs -- between NAME and the command, as in: %s", cmd.CommandPath(), strings.Join(line, " "))
	case dash == 0:
		return cmdutil.Usagef("%q needs NAME before --", cmd.CommandPath())
	case dash > 1:
		return cmdutil.Usagef("%q takes only NAME before --; unexpected %q", cmd.CommandPath(), args[1])
	case len(args) == 1:
		return cmdutil.Usagef("%q needs a command after --", cmd.CommandPath())
	}
	return nil
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, k Kind, flags *flagpole, name string, command []string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	a, err := flags.Parse(cmd, runSuffix())
	if err != nil {
		return err
	}
	grace, err := cmdutil.ParseDuration("grace-period", flags.grace)
	if err != nil {
		return err
	}
	holder, wait, busyCode, opts := a.Holder, a.Wait, a.BusyCode, a.Options
	if flags.kindOpts != nil {
		more, err := flags.kindOpts()
		if err != nil {
			return err
		}
		opts = append(opts, more...)
	}
	// The final unlock retries for at least the grace period a pod's
	// kubelet gives, and never less than the library's retry timeout.
	opts = append(opts, lock.WithRetryTimeout(max(grace, lock.DefaultRetryTimeout)))
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	log := f.Logger()

	// One channel receives the stop signals for the whole command: first
	// a goroutine turns a signal into cancelling the wait for the lock,
	// then the loop below forwards signals to CMD. Only one of them reads
	// at a time, so no signal is lost between the two.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, cmdutil.StopSignals...)
	defer signal.Stop(sigs)
	lockCtx, cancelLock := context.WithCancelCause(cmd.Context())
	defer cancelLock(nil)
	acquired := make(chan struct{})
	watcherDone := make(chan struct{})
	go func() {
		defer close(watcherDone)
		select {
		case s := <-sigs:
			cancelLock(&cmdutil.SignalError{Signal: s})
		case <-acquired:
		}
	}()
	m, env, err := k.Acquire(lockCtx, log, c, ns, name, wait, opts...)
	close(acquired)
	<-watcherDone
	if err != nil {
		return cmdutil.Busy(err, busyCode)
	}
	ref := cmdutil.Ref(ns, name)
	log.V(1).Info("acquired, running the command", k.Noun, ref, "holder", holder, "token", m.Token(), "command", command)

	r := &runner{log: log, kind: k, ref: ref, grace: grace}
	state, runErr := r.run(m, streams, command, sigs, holder, env)
	unlockErr := unlock(cmd.Context(), m, grace)
	return r.result(m, state, runErr, unlockErr)
}

// runner runs CMD and stops it when the lock is lost.
type runner struct {
	log   logr.Logger
	kind  Kind
	ref   string
	grace time.Duration
	// lost: Done closed while CMD ran.
	lost error
}

// exitResult is how CMD ended.
type exitResult struct {
	state *os.ProcessState
	err   error
}

// run starts CMD, forwards signals to it, stops it if the lock is lost and
// waits for it. It returns a start error as *cmdutil.ExecError.
func (r *runner) run(m cmdutil.Hold, streams genericiooptions.IOStreams, command []string, sigs <-chan os.Signal, holder string, env []string) (*os.ProcessState, error) {
	child := exec.Command(command[0], command[1:]...)
	child.Stdin, child.Stdout, child.Stderr = streams.In, streams.Out, streams.ErrOut
	child.Env = append(append(os.Environ(), env...),
		r.kind.Env+"="+cmdutil.Ref(m.Namespace(), m.Name()),
		EnvHolder+"="+holder,
		EnvToken+"="+strconv.FormatInt(m.Token(), 10),
	)
	// A command that reads the terminal must stay in its foreground
	// process group, or it stops with SIGTTIN; the terminal then delivers
	// Ctrl-C to it directly. Otherwise its own group lets koncli signal
	// everything it started.
	ownGroup := !isTerminal(streams.In)
	child.SysProcAttr = sysProcAttr(ownGroup)

	select {
	case <-m.Done():
		// Lost between acquiring and now (force-unlocked at once): CMD
		// must not start without the lock.
		return nil, &cmdutil.RuntimeError{Err: fmt.Errorf("%s %s was lost before the command started; it was not run: %w", r.kind.Noun, r.ref, m.Err())}
	default:
	}
	started := make(chan error, 1)
	exited := make(chan exitResult, 1)
	go func() {
		// The parent-death signal (Linux) is tied to the thread that forked
		// the child, so that thread must live until the child is gone.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := child.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		err := child.Wait()
		exited <- exitResult{state: child.ProcessState, err: err}
	}()
	if err := <-started; err != nil {
		return nil, execError(command[0], err)
	}

	done := m.Done()
	var kill <-chan time.Time
	var killTimer *time.Timer
	defer func() {
		if killTimer != nil {
			killTimer.Stop()
		}
	}()
	for {
		select {
		case s := <-sigs:
			sig, _ := s.(syscall.Signal)
			if (sig == syscall.SIGINT || sig == syscall.SIGHUP) && !ownGroup {
				r.log.V(1).Info("not forwarding the signal: the terminal delivered it to the command too", "signal", cmdutil.SignalName(s))
				continue
			}
			r.log.V(1).Info("forwarding signal to the command", "signal", cmdutil.SignalName(s))
			if err := signalChild(child.Process, ownGroup, sig); err != nil {
				r.log.V(1).Info("forwarding the signal failed", "error", err.Error())
			}
		case <-done:
			done = nil
			r.lost = m.Err()
			if r.lost == nil {
				// Done closes only on Unlock or loss, and nothing unlocks
				// while CMD runs; treat anything else as a loss too.
				r.lost = &lock.LostError{Namespace: m.Namespace(), Name: m.Name(), Reason: "its hold ended"}
			}
			// The reason is said once, in the error run ends with.
			r.log.Info(fmt.Sprintf("lost %s %s while the command runs; sending SIGTERM to the command, SIGKILL in %s", r.kind.Noun, r.ref, r.grace))
			if err := signalChild(child.Process, ownGroup, syscall.SIGTERM); err != nil {
				r.log.V(1).Info("SIGTERM to the command failed", "error", err.Error())
			}
			killTimer = time.NewTimer(r.grace)
			kill = killTimer.C
		case <-kill:
			kill = nil
			r.log.Info(fmt.Sprintf("the command did not exit within %s of SIGTERM; sending SIGKILL", r.grace))
			if err := signalChild(child.Process, ownGroup, syscall.SIGKILL); err != nil {
				r.log.V(1).Info("SIGKILL to the command failed", "error", err.Error())
			}
		case res := <-exited:
			if ownGroup {
				// Nothing CMD started may go on working once the lock is
				// released: the critical section ends here.
				_ = signalChild(child.Process, true, syscall.SIGKILL)
			}
			if r.lost == nil {
				// Loss and exit at the same moment: be conservative.
				r.lost = lostErr(m)
			}
			if res.state == nil {
				return nil, fmt.Errorf("waiting for the command: %w", res.err)
			}
			return res.state, nil
		}
	}
}

// lossReason is how a hold was lost, as a clause.
func lossReason(err error) string {
	var le *lock.LostError
	if errors.As(err, &le) {
		return le.Reason
	}
	return err.Error()
}

// lostErr is m's loss, if its hold was lost.
func lostErr(m cmdutil.Hold) error {
	if err := m.Err(); errors.Is(err, lock.ErrLost) {
		return err
	}
	return nil
}

// unlock releases the mutex or slot with a fresh context, whatever happened to
// koncli's own: CMD has exited. Transient failures are retried for the
// retry timeout or the grace period, whichever is longer, so that an API
// server away for a few seconds does not leave it held.
func unlock(parent context.Context, m cmdutil.Hold, grace time.Duration) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), max(grace, lock.DefaultRetryTimeout))
	defer cancel()
	return m.Release(ctx)
}

// result turns how CMD ended, and how unlocking went, into koncli's error.
func (r *runner) result(m cmdutil.Hold, state *os.ProcessState, runErr, unlockErr error) error {
	if r.lost != nil {
		if unlockErr != nil {
			// Expected: the Lease no longer names this hold.
			r.log.V(1).Info("release after the loss", "result", unlockErr.Error())
		}
		return &cmdutil.MessageError{
			Msg: fmt.Sprintf("lost %s %s while the command ran: %s; its work may have overlapped another holder's", r.kind.Noun, r.ref, lossReason(r.lost)),
			Err: r.lost,
		}
	}
	if runErr != nil {
		// CMD did not run (or koncli could not wait for it); the unlock
		// only cleans up after the acquisition.
		if unlockErr != nil && !errors.Is(unlockErr, lock.ErrNotHeld) {
			r.log.Info(fmt.Sprintf("error: %s %s %s failed; it stays held by %q until released or its TTL runs out: %v", r.kind.Unlocking, r.kind.Noun, r.ref, m.Holder(), unlockErr))
		}
		return runErr
	}
	if unlockErr != nil {
		if errors.Is(unlockErr, lock.ErrNotHeld) {
			// Lost after CMD had finished: CMD ran entirely under the lock
			// (Done closes before anyone else may take over).
			r.log.Info(fmt.Sprintf("%s %s was lost after the command finished; nothing to release: %v", r.kind.Noun, r.ref, unlockErr))
			unlockErr = nil
		} else {
			unlockErr = fmt.Errorf("the command finished, but %s %s %s failed; it stays held by %q until released (%s %s --holder %q) or its TTL runs out: %w",
				r.kind.Unlocking, r.kind.Noun, r.ref, m.Holder(), r.kind.Release, m.Name(), m.Holder(), unlockErr)
		}
	}
	ws, _ := state.Sys().(syscall.WaitStatus)
	var childErr error
	switch {
	case ws.Signaled():
		childErr = &cmdutil.ChildExitError{Signal: ws.Signal()}
	case state.ExitCode() != 0:
		childErr = &cmdutil.ChildExitError{Code: state.ExitCode()}
	}
	switch {
	case unlockErr == nil:
		return childErr
	case childErr == nil:
		return unlockErr
	default:
		// CMD's own status says more than the unlock failure; report both.
		r.log.Info("error: " + unlockErr.Error())
		return childErr
	}
}

// execError classifies a failure to start CMD as shells do: 127 when it
// does not exist, 126 when it exists but cannot be executed.
func execError(path string, err error) error {
	notFound := errors.Is(err, exec.ErrNotFound) || errors.Is(err, fs.ErrNotExist)
	return &cmdutil.ExecError{Path: path, NotFound: notFound, Err: err}
}

// isTerminal reports whether in is a terminal.
func isTerminal(in any) bool {
	f, ok := in.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// runSuffix makes run's default identity unique per process: the pid for
// people reading `list`, and random bytes because a restarted container
// usually gets the same pid (1) in the same pod.
func runSuffix() string {
	var b [3]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+).
	return strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}
