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
	fair   bool
	update bool
}

// NewCommand returns the create command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "create NAME [--ttl DURATION] [--fair] [--update]",
		Short: "Create a mutex, optionally with a TTL or fair",
		Long: `Create the mutex NAME: a coordination.k8s.io/v1 Lease labelled
konlease.io/kind=Mutex and annotated konlease.io/unlock=explicit. It is
created unlocked.

Without --ttl the mutex has no TTL: once locked it stays locked until its
holder unlocks it, even if the holder crashed (then an operator runs
'koncli mutex unlock NAME --force'). With --ttl a lock whose holder stops
renewing is released when the TTL has run out. The TTL is a Go duration
from 1s to 8760h (one year): "30s", "5m", "1h30m".

--fair makes a fair mutex: its waiters queue, in the order in which they
began to wait, across processes and machines; a release hands the mutex to
the first of them directly, waking nobody else; nobody barges past the
queue ('lock --timeout 0' fails while anyone waits, even at the instant of
a release). A waiter that gives up leaves the queue at once; one whose
process dies is passed over about 10 seconds after its last renewal. Fair
mode needs the verbs list, create and delete on leases besides get and
update (see examples/rbac). Without --fair, waiters race for each release.

Creating a mutex that exists with the same TTL and fairness succeeds and
changes nothing, so create is safe in scripts and init containers. If it
exists with another TTL or fairness, create fails and changes nothing,
unless --update is given: then they are changed to --ttl and --fair, but
only while the mutex is unlocked (its holder renews on the TTL it locked
with), and fairness only while nobody waits. --update needs --ttl or
--fair, and keeps what is not given, so that it never removes a TTL by
omission: '--ttl none' removes it on purpose ('--ttl none' without
--update is the same as no --ttl), '--fair=false' makes a fair mutex
racing again.

A Lease of the same name that is not a mutex (a leader-election Lease, say)
is never modified: create fails.

The mutex need not be created beforehand: 'koncli mutex lock' and
'koncli mutex run' create it when it does not exist.

Exit status:
  0  the mutex exists with the requested TTL and fairness
  1  error: it exists with another TTL or fairness (without --update), it
     is locked or has waiters (with --update), the Lease is not a mutex,
     or the API server refused or could not be reached
  2  usage error: invalid NAME or --ttl, --update without --ttl or
     --fair; nothing was sent`,
		Example: `  # Create a mutex without TTL (it is unlocked only by unlock)
  koncli mutex create critical-section

  # Create a mutex with a TTL (a crashed holder's lock runs out after 5 minutes)
  koncli mutex create critical-section --ttl 5m

  # Change the TTL of an existing, unlocked mutex
  koncli mutex create critical-section --ttl 10m --update

  # Remove its TTL
  koncli mutex create critical-section --ttl none --update

  # A fair mutex: a DaemonSet's pods take turns in the order they asked
  koncli mutex create node-maintenance --fair --ttl 10m

  # Make an existing, unlocked mutex fair, keeping its TTL
  koncli mutex create critical-section --fair --update

  # In another namespace
  koncli mutex create db-migration -n payments`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.ttl, "ttl", "", `TTL of the mutex, a Go duration from 1s to 8760h ("30s", "5m"), or "none"; default: no TTL`)
	cmd.Flags().BoolVar(&flags.fair, "fair", false, "make a fair mutex: waiters queue in FIFO order and a release hands it to the first")
	cmd.Flags().BoolVar(&flags.update, "update", false, "change the TTL (--ttl) or fairness (--fair) of an existing mutex, keeping what is not given (only while it is unlocked)")
	return cmd
}

func runE(cmd *cobra.Command, _ genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	opts := lock.CreateOptions{UpdateTTL: flags.update, Fair: flags.fair}
	ttlSet, fairSet := cmd.Flags().Changed("ttl"), cmd.Flags().Changed("fair")
	if flags.update && !ttlSet && !fairSet {
		// Without --ttl, --update would set "no TTL": a TTL dropped by
		// omission is a crashed holder's lock that never runs out.
		return cmdutil.Usagef("--update changes the TTL to the one --ttl gives, or the fairness --fair gives: pass --ttl DURATION (--ttl none removes the TTL), or --fair / --fair=false")
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
	if flags.update && (!ttlSet || !fairSet) {
		// --update keeps what it is not given.
		cur, err := c.Get(cmd.Context(), ns, name)
		switch {
		case err == nil && !ttlSet:
			opts.TTL = cur.TTL
		case err == nil:
			opts.Fair = cur.Fair
		case !errors.Is(err, lock.ErrNotFound):
			return err
		}
	}
	st, created, err := c.Create(cmd.Context(), ns, name, opts)
	if err != nil {
		if errors.Is(err, lock.ErrTTLConflict) {
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; pass --update to change the TTL", err)}
		}
		if errors.Is(err, lock.ErrFairnessConflict) {
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; pass --update to change it, while nobody waits", err)}
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
	if st.Fair {
		ttlText += ", fair"
	}
	what := "exists"
	if created {
		what = "created"
	}
	f.Logger().Info(fmt.Sprintf("mutex %s %s (%s, %s)", cmdutil.Ref(ns, name), what, ttlText, st.Phase))
	return nil
}
