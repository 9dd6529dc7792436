package semaphore

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type deleteFlags struct {
	force          bool
	ignoreNotFound bool
}

// NewDeleteCommand returns 'koncli semaphore delete'.
func NewDeleteCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &deleteFlags{}
	cmd := &cobra.Command{
		Use:   "delete NAME... [--force] [--ignore-not-found]",
		Short: "Delete semaphores",
		Long: `Delete the semaphore NAME (or each NAME): its Lease, its slots' Leases and,
for a fair semaphore, its queue.

A semaphore with a slot held is not deleted unless --force is given (slots
whose TTL has run out do not count); with --force, koncli says whom it
evicted, and holders still running under 'koncli semaphore run' are told
they lost their slots. A Lease that is not a semaphore is never deleted.
Deleting restarts the slots' fencing tokens.

--ignore-not-found makes a NAME that does not exist a success. With
several NAMEs each is deleted on its own.

Exit status:
  0  deleted (each NAME)
  1  error: a slot is held (without --force), it does not exist (without
     --ignore-not-found), the Lease is not a semaphore, RBAC refused, the
     API server could not be reached, ...
  2  usage error: invalid NAME; nothing was sent`,
		Example: `  # Delete an idle semaphore
  koncli semaphore delete crawler

  # Delete it even though slots are held, evicting the holders
  koncli semaphore delete crawler --force`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.Usagef("%q needs NAME", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: cmdutil.CompleteSemaphoreNamesMulti(f),
		RunE: func(cmd *cobra.Command, names []string) error {
			for _, name := range names {
				if err := cmdutil.ValidateName(name); err != nil {
					return err
				}
			}
			ns, c, err := f.Target()
			if err != nil {
				return err
			}
			return cmdutil.DeleteEach(f.Logger(), "semaphore", ns, names, flags.ignoreNotFound, func(name string) (string, error) {
				st, err := c.DeleteSemaphore(cmd.Context(), ns, name, flags.force)
				return deletedSemaphore(cmdutil.Ref(ns, name), st), err
			})
		},
	}
	cmd.Flags().BoolVar(&flags.force, "force", false, "delete a semaphore even if slots are held, evicting their holders")
	cmd.Flags().BoolVar(&flags.ignoreNotFound, "ignore-not-found", false, "treat a semaphore that does not exist as deleted")
	return cmd
}

// deletedSemaphore says what was deleted, and whom that evicted.
func deletedSemaphore(ref string, st lock.SemaphoreStatus) string {
	var evicted []string
	for _, h := range st.Holders {
		if h.Phase == lock.PhaseLocked {
			evicted = append(evicted, fmt.Sprintf("%q (slot %d, token %d)", h.Holder, h.Slot, h.Token))
		}
	}
	if len(evicted) == 0 {
		return fmt.Sprintf("deleted semaphore %s", ref)
	}
	return fmt.Sprintf("deleted semaphore %s; evicted %s", ref, strings.Join(evicted, ", "))
}
