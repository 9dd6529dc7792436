package semaphore

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type releaseFlags struct {
	holder string
	force  string
}

// NewReleaseCommand returns 'koncli semaphore release'.
func NewReleaseCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &releaseFlags{}
	cmd := &cobra.Command{
		Use:   "release NAME [--holder H | --force HOLDER]",
		Short: "Give back a slot of a semaphore (only its holder may, or an operator with --force)",
		Long: `Give back the slot of the semaphore NAME that the holder identity --holder
holds (default: the host name, as for 'koncli semaphore acquire').

Only the holder may release its slot: if it holds none, release fails,
says who holds the slots, and changes nothing. It never releases a slot
that another holder acquired in the meantime. Transient failures of the
API server are retried for 30 seconds.

--force HOLDER releases the slot that HOLDER holds, whoever asks: for
operators, for a holder that crashed holding a slot of a semaphore without
TTL. The evicted holder, if it still runs under 'koncli semaphore run', is
told it lost its slot: its command is stopped and run exits with status
4. Forcing the release of a holder that holds nothing changes nothing and
succeeds.

Exit status:
  0  released, or, with --force, HOLDER held no slot
  1  error: this holder holds no slot, the semaphore does not exist, the
     Lease is not a semaphore, RBAC refused, the API server could not be
     reached, ...
  2  usage error: invalid NAME, --holder or --force, --holder with
     --force; nothing was sent`,
		Example: `  # Give back what 'koncli semaphore acquire crawler --holder worker-1' took
  koncli semaphore release crawler --holder worker-1

  # Evict a crashed holder (an operator's last resort)
  koncli semaphore release crawler --force worker-1`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteSemaphoreNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return releaseE(cmd, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.holder, "holder", "", "holder identity that holds the slot (default: the host name; in a pod, the pod name)")
	cmd.Flags().StringVar(&flags.force, "force", "", "release the slot that this holder identity holds, whoever asks")
	return cmd
}

func releaseE(cmd *cobra.Command, f *cmdutil.Factory, flags *releaseFlags, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	holderSet, forced := cmd.Flags().Changed("holder"), cmd.Flags().Changed("force")
	if forced && holderSet {
		return cmdutil.Usagef("--force HOLDER names the holder to evict; it takes no --holder")
	}
	var holder string
	var err error
	if forced {
		holder, err = cmdutil.Holder(flags.force, true, "")
	} else {
		holder, err = cmdutil.Holder(flags.holder, holderSet, "")
	}
	if err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ref := cmdutil.Ref(ns, name)
	log := f.Logger()
	if forced {
		before, err := c.ForceReleaseSemaphore(cmd.Context(), ns, name, holder)
		if err != nil {
			return err
		}
		if before.Holder == "" {
			log.Info(fmt.Sprintf("%q held no slot of semaphore %s; nothing changed", holder, ref))
			return nil
		}
		log.Info(fmt.Sprintf("force-released slot %d of semaphore %s: evicted %q (token %d, %s since %s)",
			before.Slot, ref, before.Holder, before.Token, before.Phase, cmdutil.FormatTime(before.LockedAt)))
		return nil
	}
	s, err := c.NewSemaphore(ns, name, lock.WithHolder(holder), cmdutil.RetryNotify(log, "semaphore", ns, name))
	if err != nil {
		return err
	}
	if err := s.Release(cmd.Context()); err != nil {
		var nh *lock.NotHeldError
		if errors.As(err, &nh) && nh.Exists {
			return fmt.Errorf("%w (only the holder may release its slot; --force HOLDER releases HOLDER's)", err)
		}
		return err
	}
	log.Info(fmt.Sprintf("released semaphore %s (holder %q)", ref, holder))
	return nil
}
