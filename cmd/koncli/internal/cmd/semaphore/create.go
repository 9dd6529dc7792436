package semaphore

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
	"github.com/konlease/konlease/ttl"
)

type createFlags struct {
	limit  string
	ttl    string
	fair   bool
	update bool
}

// NewCreateCommand returns 'koncli semaphore create'.
func NewCreateCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &createFlags{}
	cmd := &cobra.Command{
		Use:   "create NAME --limit N [--ttl DURATION] [--fair] [--update]",
		Short: "Create a semaphore with its limit, optionally with a TTL or fair",
		Long: fmt.Sprintf(`Create the semaphore NAME with --limit N slots (1 to %d): its own
Lease, labelled konlease.io/kind=Semaphore, and one Lease per slot. Nobody
holds it when it is created.

Without --ttl a slot stays held until its holder releases it, even if the
holder crashed (then an operator runs 'koncli semaphore release NAME
--force HOLDER'). With --ttl a slot whose holder stops renewing is free
again once the TTL has run out. The TTL is a Go duration from 1s to 8760h.

--fair makes a fair semaphore: waiters queue in the order in which they
began to wait, and a release hands the slot to the first of them. It needs
the verbs list, create and delete on leases (see examples/rbac).

Creating a semaphore that exists on the same terms succeeds and changes
nothing. On other terms create fails and changes nothing, unless --update
is given: the limit may then change at any time (lowering it evicts
nobody: new holders wait until the holders of the slots beyond the new
limit have released them), the TTL and fairness only while nobody holds a
slot or waits. --update keeps what is not given ('--ttl none' removes the
TTL).

A Lease of the same name that is not a semaphore is never modified.

Exit status:
  0  the semaphore exists on the requested terms
  1  error: it exists on other terms (without --update), it is held (a
     TTL or fairness --update), the Lease is not a semaphore, or the API
     server refused or could not be reached
  2  usage error: invalid NAME, --limit or --ttl, no --limit without
     --update, --update without --limit, --ttl or --fair; nothing was
     sent`, lock.MaxLimit),
		Example: `  # At most two nodes in maintenance at once; a crashed holder's slot is
  # free again after 10 minutes
  koncli semaphore create node-maintenance --limit 2 --ttl 10m

  # Raise the limit of an existing semaphore, even while it is held
  koncli semaphore create node-maintenance --limit 3 --update

  # A fair semaphore: waiters take the slots in the order they asked
  koncli semaphore create api-quota --limit 5 --fair`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteSemaphoreNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return createE(cmd, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.limit, "limit", "", fmt.Sprintf("the most holders at once, 1 to %d (required, unless --update keeps the current one)", lock.MaxLimit))
	cmd.Flags().StringVar(&flags.ttl, "ttl", "", `TTL of every hold, a Go duration from 1s to 8760h ("30s", "5m"), or "none"; default: no TTL`)
	cmd.Flags().BoolVar(&flags.fair, "fair", false, "make a fair semaphore: waiters queue in FIFO order and a release hands the slot to the first")
	cmd.Flags().BoolVar(&flags.update, "update", false, "change the limit, TTL or fairness of an existing semaphore, keeping what is not given")
	return cmd
}

func createE(cmd *cobra.Command, f *cmdutil.Factory, flags *createFlags, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	limitSet, ttlSet, fairSet := cmd.Flags().Changed("limit"), cmd.Flags().Changed("ttl"), cmd.Flags().Changed("fair")
	if !limitSet && !flags.update {
		return cmdutil.Usagef("a semaphore needs its limit: pass --limit N (1 to %d)", lock.MaxLimit)
	}
	if flags.update && !limitSet && !ttlSet && !fairSet {
		return cmdutil.Usagef("--update changes what --limit, --ttl or --fair give: pass at least one of them")
	}
	opts := lock.SemaphoreOptions{Fair: flags.fair, Update: flags.update}
	if limitSet {
		n, err := cmdutil.ParseLimit(flags.limit)
		if err != nil {
			return err
		}
		opts.Limit = n
	}
	if ttlSet && flags.ttl != "none" {
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
	if flags.update && (!limitSet || !ttlSet || !fairSet) {
		// --update keeps what it is not given.
		cur, err := c.GetSemaphore(cmd.Context(), ns, name)
		switch {
		case err == nil:
			if !limitSet {
				opts.Limit = cur.Limit
			}
			if !ttlSet {
				opts.TTL = cur.TTL
			}
			if !fairSet {
				opts.Fair = cur.Fair
			}
		case errors.Is(err, lock.ErrNotFound) && !limitSet:
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; a new semaphore needs --limit", err)}
		case !errors.Is(err, lock.ErrNotFound):
			return err
		}
	}
	st, created, err := c.CreateSemaphore(cmd.Context(), ns, name, opts)
	if err != nil {
		switch {
		case errors.Is(err, lock.ErrLimitConflict), errors.Is(err, lock.ErrTTLConflict), errors.Is(err, lock.ErrFairnessConflict):
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; pass --update to change it", err)}
		case errors.Is(err, lock.ErrLocked):
			return &cmdutil.RuntimeError{Err: fmt.Errorf("%w; the TTL and fairness change only while nobody holds a slot or waits", err)}
		}
		return err
	}
	terms := fmt.Sprintf("limit %d", st.Limit)
	if st.TTL > 0 {
		terms += ", TTL " + ttl.Format(st.TTL)
	} else {
		terms += ", no TTL"
	}
	if st.Fair {
		terms += ", fair"
	}
	what := "exists"
	switch {
	case created:
		what = "created"
	case flags.update:
		what = "is up to date"
	}
	f.Logger().Info(fmt.Sprintf("semaphore %s %s (%s; %d held)", cmdutil.Ref(ns, name), what, terms, len(st.Holders)))
	return nil
}
