// Package delete implements `koncli mutex delete`.
package delete

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	force          bool
	ignoreNotFound bool
}

// NewCommand returns the delete command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "delete NAME... [--force] [--ignore-not-found]",
		Short: "Delete mutexes",
		Long: `Delete the mutex NAME (or each NAME), that is its Lease.

A locked mutex is not deleted unless --force is given (a mutex whose
holder's TTL has run out counts as unlocked); with --force, koncli says
whom it evicted. The evicted holder, if it still runs under
'koncli mutex run', is told it lost the lock. Deleting restarts the
fencing token: a mutex created again under the same name counts from 1,
so resources that check tokens must be told.

A Lease that is not a mutex (a leader-election Lease, say) is never
deleted, not even with --force.

--ignore-not-found makes a NAME that does not exist a success, as in
kubectl delete, so that a cleanup script can run twice.

With several NAMEs each is deleted on its own: a refusal or failure of one
is reported, and the others are still deleted.

Exit status:
  0  deleted (each NAME)
  1  error: a mutex is locked (without --force), does not exist (without
     --ignore-not-found), the Lease is not a mutex, RBAC refused, the API
     server could not be reached, ...
  2  usage error: invalid NAME; nothing was sent`,
		Example: `  # Delete an unlocked mutex
  koncli mutex delete critical-section

  # Delete it even though it is locked
  koncli mutex delete critical-section --force

  # Clean up, whether or not they exist
  koncli mutex delete db-migration daily-job --ignore-not-found`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.Usagef("%q needs NAME", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: cmdutil.CompleteMutexNamesMulti(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, f, flags, args)
		},
	}
	cmd.Flags().BoolVar(&flags.force, "force", false, "delete a mutex even if it is locked, evicting its holder")
	cmd.Flags().BoolVar(&flags.ignoreNotFound, "ignore-not-found", false, "treat a mutex that does not exist as deleted")
	return cmd
}

func runE(cmd *cobra.Command, f *cmdutil.Factory, flags *flagpole, names []string) error {
	for _, name := range names {
		if err := cmdutil.ValidateName(name); err != nil {
			return err
		}
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	return cmdutil.DeleteEach(f.Logger(), "mutex", ns, names, flags.ignoreNotFound, func(name string) (string, error) {
		st, err := c.Delete(cmd.Context(), ns, name, lock.DeleteOptions{Force: flags.force})
		return deleted(cmdutil.Ref(ns, name), st), err
	})
}

// deleted says what was deleted, and whom that evicted.
func deleted(ref string, st lock.Status) string {
	switch {
	case st.Holder == "":
		return fmt.Sprintf("deleted mutex %s", ref)
	case st.Phase == lock.PhaseExpired:
		return fmt.Sprintf("deleted mutex %s; its last holder %s had let its TTL run out", ref, cmdutil.HoldDescription(st))
	}
	return fmt.Sprintf("deleted mutex %s; evicted %s", ref, cmdutil.HoldDescription(st))
}
