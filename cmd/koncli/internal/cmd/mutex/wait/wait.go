// Package wait implements `koncli mutex wait`.
package wait

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// The conditions of --for.
const (
	ForUnlocked = "unlocked"
	ForLocked   = "locked"
)

type flagpole struct {
	forCond string
	timeout string
}

// NewCommand returns the wait command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "wait NAME --for unlocked|locked [--timeout D]",
		Short: "Wait until a mutex is unlocked or locked, without locking it",
		Long: `Wait until the mutex NAME is in the state --for names, and exit 0; or exit
3 when --timeout runs out first. wait only watches: it takes no lock,
writes nothing, and needs only the get and watch verbs on leases (without
watch, it polls every 2 seconds).

  --for unlocked  nobody holds the mutex: its phase is Unlocked, or
                  Expired (its holder's TTL has provably run out, so
                  anyone may take it over), or it was deleted while wait
                  watched
  --for locked    a holder holds it (phase Locked)

A condition that holds already ends wait at once. Without --timeout, wait
waits until the condition holds or koncli is interrupted; --timeout 0
looks once; --timeout 30s waits up to 30 seconds.

Nothing is reserved by waiting: when wait says the mutex is unlocked,
someone else may lock it the next moment. To take the mutex when it
is free, use 'koncli mutex lock' or 'koncli mutex run', which wait
themselves; wait is for scripts that must know, not hold: a deployment
that waits until a migration's lock is released, a check that a job is
running.

On success wait says on stderr what it saw ("mutex NS/NAME is unlocked");
stdout stays empty.

Exit status:
  0    the condition holds
  1    error: the mutex does not exist, the Lease is not a mutex, RBAC
       refused, the API server could not be reached, ...
  2    usage error: invalid NAME, --for or --timeout; nothing was sent
  3    --timeout ran out before the condition held
  130  interrupted by SIGINT (143: SIGTERM, 129: SIGHUP)`,
		Example: `  # Start the application once the migration has released its lock
  koncli mutex wait db-migration --for unlocked --timeout 10m && ./start-app

  # Is the nightly job running? (exit 0: yes, 3: no)
  koncli mutex wait daily-job --for locked --timeout 0`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.forCond, "for", "", `the condition to wait for: "unlocked" or "locked" (required)`)
	cmd.Flags().StringVar(&flags.timeout, "timeout", "", `how long to wait, a Go duration ("30s"); 0: look once; default: until the condition holds`)
	_ = cmd.RegisterFlagCompletionFunc("for", cobra.FixedCompletions([]string{ForUnlocked, ForLocked}, cobra.ShellCompDirectiveNoFileComp))
	return cmd
}

// holds reports whether ev satisfies the condition cond.
func holds(cond string, ev lock.WatchEvent) bool {
	if cond == ForLocked {
		return !ev.Deleted && ev.Status.Phase == lock.PhaseLocked
	}
	return ev.Deleted || ev.Status.Phase == lock.PhaseUnlocked || ev.Status.Phase == lock.PhaseExpired
}

// errHolds ends the watch once the condition holds; errLooked ends the
// single look of --timeout 0.
var (
	errHolds  = errors.New("the condition holds")
	errLooked = errors.New("looked once")
)

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	cond := strings.ToLower(flags.forCond)
	switch {
	case !cmd.Flags().Changed("for"):
		return cmdutil.Usagef(`%q needs --for unlocked or --for locked`, cmd.CommandPath())
	case cond != ForUnlocked && cond != ForLocked:
		return cmdutil.Usagef(`invalid --for %q: want "unlocked" or "locked"`, flags.forCond)
	}
	wait, err := cmdutil.WaitFromFlag(flags.timeout, cmd.Flags().Changed("timeout"))
	if err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ref := cmdutil.Ref(ns, name)
	ctx, stop := cmdutil.SignalContext(cmd.Context())
	defer stop()
	var last lock.WatchEvent
	check := func(ev lock.WatchEvent) error {
		last = ev
		if holds(cond, ev) {
			return errHolds
		}
		return nil
	}
	if !wait.Forever && wait.Timeout == 0 {
		// One look: the watch's first report, the mutex as it is now.
		err := c.Watch(ctx, ns, name, func(ev lock.WatchEvent) error {
			if err := check(ev); err != nil {
				return err
			}
			return errLooked
		})
		if errors.Is(err, errLooked) {
			err = nil
		}
		return result(f, ref, cond, wait, last, err)
	}
	wctx := ctx
	if !wait.Forever {
		var cancel context.CancelFunc
		wctx, cancel = context.WithTimeout(ctx, wait.Timeout)
		defer cancel()
	}
	err = c.Watch(wctx, ns, name, check)
	if se := cmdutil.Interrupted(ctx); se != nil {
		return &cmdutil.SignalError{Signal: se.Signal, Err: fmt.Errorf("while waiting for mutex %s to be %s", ref, cond)}
	}
	if errors.Is(err, context.DeadlineExceeded) && wctx.Err() != nil {
		err = nil // timed out: the last state says how
	}
	return result(f, ref, cond, wait, last, err)
}

// result turns how the wait ended into koncli's outcome: err is errHolds,
// nil for a timeout (last is then the state seen last), or a failure.
func result(f *cmdutil.Factory, ref, cond string, wait cmdutil.Wait, last lock.WatchEvent, err error) error {
	switch {
	case errors.Is(err, errHolds):
		f.Logger().Info(fmt.Sprintf("mutex %s is %s", ref, describe(last)))
		return nil
	case err != nil:
		return err
	}
	within := fmt.Sprintf("within %s", wait.Timeout)
	if wait.Timeout == 0 {
		within = "(--timeout 0)"
	}
	return &cmdutil.TimeoutError{Err: fmt.Errorf("mutex %s is not %s %s: it is %s", ref, cond, within, describe(last))}
}

// describe says what a state is, for messages.
func describe(ev lock.WatchEvent) string {
	st := ev.Status
	switch {
	case ev.Deleted:
		return "deleted"
	case st.Phase == lock.PhaseExpired:
		return fmt.Sprintf("unlocked: the TTL of its holder %q has run out (token %d)", st.Holder, st.Token)
	case st.Holder != "":
		msg := fmt.Sprintf("locked by %q since %s (token %d)", st.Holder, cmdutil.FormatTime(st.LockedAt), st.Token)
		if !st.ExpiresAt.IsZero() {
			msg += ", until " + cmdutil.FormatTime(st.ExpiresAt) + " unless renewed"
		}
		return msg
	}
	msg := "unlocked"
	if len(st.Waiters) > 0 {
		msg += fmt.Sprintf(", with %d waiters queued", len(st.Waiters))
	}
	return msg
}
