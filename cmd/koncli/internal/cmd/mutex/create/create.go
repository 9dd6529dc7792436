// Package create implements `koncli mutex create`.
package create

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

// noTTL is the --ttl value that asks for no TTL explicitly.
const noTTL = "none"

type flagpole struct {
	ttl    string
	update bool
}

// NewCommand returns the create command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "create NAME [--ttl DURATION] [--update]",
		Short: "Create a mutex, optionally with a TTL",
		Long: `Create the mutex NAME: a coordination.k8s.io/v1 Lease labelled
konlease.io/kind=Mutex and annotated konlease.io/unlock=explicit. It is
created unlocked.

Without --ttl the mutex has no TTL: once locked it stays locked until its
holder unlocks it, even if the holder crashed (then an operator runs
'koncli mutex unlock NAME --force'). With --ttl a lock whose holder stops
renewing is released when the TTL has run out. The TTL is a Go duration
from 1s to 8760h (one year): "30s", "5m", "1h30m".

Creating a mutex that exists with the same TTL succeeds and changes
nothing, so create is safe in scripts and init containers. If it exists
with another TTL, create fails and changes nothing, unless --update is
given: then the TTL is changed to --ttl, but only while the mutex is
unlocked (its holder renews on the TTL it locked with). --update needs
--ttl, so that it never removes a TTL by omission: '--ttl none' removes it
on purpose ('--ttl none' without --update is the same as no --ttl).

A Lease of the same name that is not a mutex (a leader-election Lease, say)
is never modified: create fails.

The mutex need not be created beforehand: 'koncli mutex lock' and
'koncli mutex run' create it when it does not exist.

Exit status:
  0  the mutex exists with the requested TTL
  1  error: it exists with another TTL (without --update), it is locked
     (with --update), the Lease is not a mutex, or the API server refused
     or could not be reached
  2  usage error: invalid NAME or --ttl, --update without --ttl;
     nothing was sent`,
		Example: `  # Create a mutex without TTL (it is unlocked only by unlock)
  koncli mutex create critical-section

  # Create a mutex with a TTL (a crashed holder's lock runs out after 5 minutes)
  koncli mutex create critical-section --ttl 5m

  # Change the TTL of an existing, unlocked mutex
  koncli mutex create critical-section --ttl 10m --update

  # Remove its TTL
  koncli mutex create critical-section --ttl none --update

  # In another namespace
  koncli mutex create db-migration -n payments`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.ttl, "ttl", "", `TTL of the mutex, a Go duration from 1s to 8760h ("30s", "5m"), or "none"; default: no TTL`)
	cmd.Flags().BoolVar(&flags.update, "update", false, "change the TTL of an existing mutex to --ttl (only while it is unlocked)")
	return cmd
}

func runE(cmd *cobra.Command, _ genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	opts := lock.CreateOptions{UpdateTTL: flags.update}
	ttlSet := cmd.Flags().Changed("ttl")
	if flags.update && !ttlSet {
		// Without --ttl, --update would set "no TTL": a TTL dropped by
		// omission is a crashed holder's lock that never runs out.
		return cmdutil.Usagef("--update changes the TTL to the one --ttl gives: pass --ttl DURATION, or --ttl none to remove the TTL")
	}
	if ttlSet && flags.ttl != noTTL {
		d, err := cmdutil.ParseTTL(flags.ttl)
		if err != nil {
			return err
		}
		opts.TTL = d
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	st, created, err := c.Create(cmd.Context(), ns, name, opts)
	if err != nil {
		if errors.Is(err, lock.ErrTTLConflict) {
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; pass --update to change the TTL", err)}
		}
		if errors.Is(err, lock.ErrLocked) {
			// --update on a locked mutex: a refusal, not a failed acquisition.
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; unlock it first", err)}
		}
		return err
	}
	ttlText := "no TTL"
	if st.TTL > 0 {
		ttlText = "TTL " + ttl.Format(st.TTL)
	}
	what := "exists"
	if created {
		what = "created"
	}
	f.Logger().Info(fmt.Sprintf("mutex %s %s (%s, %s)", cmdutil.Ref(ns, name), what, ttlText, st.Phase))
	return nil
}
