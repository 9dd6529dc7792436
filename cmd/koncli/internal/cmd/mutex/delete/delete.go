// Package delete implements `koncli mutex delete`.
package delete

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	force bool
}

// NewCommand returns the delete command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "delete NAME [--force]",
		Short: "Delete a mutex",
		Long: `Delete the mutex NAME, that is its Lease.

A locked mutex is not deleted unless --force is given (a mutex whose
holder's TTL has run out counts as unlocked). Its holder, if it still runs
under 'koncli mutex run', is told it lost the lock. Deleting restarts the
fencing token: a mutex created again under the same name counts from 1, so
resources that check tokens must be told.

A Lease that is not a mutex (a leader-election Lease, say) is never
deleted, not even with --force.

Exit status:
  0  deleted
  1  error: it is locked (without --force), it does not exist, the Lease
     is not a mutex, RBAC refused, the API server could not be reached, ...
  2  usage error: invalid NAME; nothing was sent`,
		Example: `  # Delete an unlocked mutex
  koncli mutex delete critical-section

  # Delete it even though it is locked
  koncli mutex delete critical-section --force`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().BoolVar(&flags.force, "force", false, "delete the mutex even if it is locked")
	return cmd
}

func runE(cmd *cobra.Command, _ genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	if err := c.Delete(cmd.Context(), ns, name, lock.DeleteOptions{Force: flags.force}); err != nil {
		if errors.Is(err, lock.ErrLocked) {
			// A refusal to delete, not a failed acquisition.
			return &cmdutil.RuntimeError{Err: err}
		}
		return err
	}
	f.Logger().Info(fmt.Sprintf("deleted mutex %s", cmdutil.Ref(ns, name)))
	return nil
}
