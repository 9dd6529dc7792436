// Package unlock implements `koncli mutex unlock`.
package unlock

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	holder string
	force  bool
}

// NewCommand returns the unlock command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "unlock NAME [--holder H | --force]",
		Short: "Release a mutex (only its holder may, or an operator with --force)",
		Long: `Release the mutex NAME held by the holder identity --holder (default: the
host name, which in a pod is the pod's name, as for 'koncli mutex lock').

Only the holder may unlock: if the mutex is held by someone else, or is not
locked at all, unlock fails, names the actual holder and changes nothing.
If the holder's TTL had run out before the unlock (nobody took the mutex
over, but anyone could have), unlock releases it, exits 0, and says on
stderr when the TTL ran out: the critical section may have run unprotected
since then. Transient failures of the API server are retried for 30
seconds.
It never releases a lock that another holder acquired in the meantime.
Unlocking keeps the mutex (and its fencing token); 'koncli mutex delete'
removes it.

--force releases the mutex whoever holds it, and says whom it evicted.
This is for operators, for a holder that crashed holding a mutex without
TTL. The evicted holder, if it still runs under 'koncli mutex run', is
told it lost the lock: its command is stopped and run exits with status
4. Force-unlocking an unlocked mutex changes nothing and succeeds.

Exit status:
  0  released (also when its TTL had run out; stderr then says so), or,
     with --force, it was not locked
  1  error: this holder does not hold it, it does not exist, the Lease is
     not a mutex, RBAC refused, the API server could not be reached, ...
  2  usage error: invalid NAME or --holder, --holder with --force; nothing
     was sent`,
		Example: `  # Unlock (must be the holder)
  koncli mutex unlock critical-section --holder worker-1

  # Unlock what 'koncli mutex lock critical-section' locked on this host
  koncli mutex unlock critical-section

  # Evict whoever holds it (an operator's last resort)
  koncli mutex unlock critical-section --force`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVar(&flags.holder, "holder", "", "holder identity that holds the mutex (default: the host name; in a pod, the pod name)")
	cmd.Flags().BoolVar(&flags.force, "force", false, "release the mutex whoever holds it")
	return cmd
}

func runE(cmd *cobra.Command, _ genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	holderSet := cmd.Flags().Changed("holder")
	if flags.force && holderSet {
		return cmdutil.Usagef("--force releases the mutex whoever holds it; it takes no --holder")
	}
	var holder string
	if !flags.force {
		var err error
		if holder, err = cmdutil.Holder(flags.holder, holderSet, ""); err != nil {
			return err
		}
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ref := cmdutil.Ref(ns, name)
	log := f.Logger()
	if flags.force {
		before, err := c.ForceUnlock(cmd.Context(), ns, name)
		if err != nil {
			return err
		}
		if before.Holder == "" {
			log.Info(fmt.Sprintf("mutex %s was not locked; nothing changed", ref))
			return nil
		}
		log.Info(fmt.Sprintf("force-unlocked mutex %s: evicted %q (token %d, %s since %s)",
			ref, before.Holder, before.Token, before.Phase, cmdutil.FormatTime(before.LockedAt)))
		return nil
	}
	m, err := c.NewMutex(ns, name, lock.WithHolder(holder), cmdutil.RetryNotify(log, "mutex", ns, name))
	if err != nil {
		return err
	}
	before, err := m.UnlockStatus(cmd.Context())
	if err != nil {
		var nh *lock.NotHeldError
		if errors.As(err, &nh) && nh.Current != "" && nh.Current != holder {
			// Someone else holds it: the message names them; add the way out.
			return fmt.Errorf("%w (only the holder may unlock; --force releases it whoever holds it)", err)
		}
		return err
	}
	if before.Phase == lock.PhaseExpired {
		log.Info(fmt.Sprintf("unlocked mutex %s (holder %q), but its TTL had run out at %s: nobody took it over, but anyone could have, so what ran since then was not protected by the lock",
			ref, holder, cmdutil.FormatTime(before.ExpiresAt)))
		return nil
	}
	log.Info(fmt.Sprintf("unlocked mutex %s (holder %q)", ref, holder))
	return nil
}
