// Package semaphore implements `koncli semaphore`, the group of semaphore
// commands: one file per command, each with its NewXCommand.
package semaphore

import (
	"fmt"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmd/run"
	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// Long is the description of the semaphore commands.
const Long = `Counting semaphores on native Kubernetes Lease objects: at most LIMIT
holders at once, for work that may run a few at a time but not all at
once (node maintenance two nodes at a time, at most five jobs against a
rate-limited API, ...). As for mutexes, no CRD and no operator: every rule
is enforced by this client through the API server's optimistic
concurrency.

A semaphore NAME is a Lease labelled konlease.io/kind=Semaphore that
records its limit, TTL and fairness, and one Lease per slot, NAME.s-0 to
NAME.s-(LIMIT-1). A holder holds one slot, exactly as a mutex is held: a
slot is taken by a conditional write, renewed under a TTL, and told when it
is lost; each slot's fencing token grows with each acquisition of that
slot. A holder identity holds at most one slot of a semaphore.

'koncli semaphore run NAME -- CMD' is the safe way to run CMD in one of
the slots: it holds the slot exactly as long as CMD runs. 'acquire' and
'release' are for scripts that must take and give back in separate steps.
A semaphore is created with its limit by 'create', or by 'acquire' and
'run' given --limit.

--fair makes waiters queue in the order in which they began to wait, as
for a fair mutex: a release hands the slot to the first of them.

The namespace is -n, else the kubeconfig context's, else (in a pod) the
pod's own namespace, else "default".`

// NewCommand returns the semaphore command group.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "semaphore",
		Aliases: []string{"sem"},
		Short:   "Create, acquire, release and inspect semaphores",
		Long:    Long,
		Args:    cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(
		NewCreateCommand(streams, f),
		NewAcquireCommand(streams, f),
		NewReleaseCommand(streams, f),
		run.New(streams, f, Kind),
		NewListCommand(streams, f),
		NewGetCommand(streams, f),
		NewDeleteCommand(streams, f),
	)
	return cmd
}

// limitFlag is --limit of acquire and run: the limit the semaphore must
// have, with which a missing one is created.
type limitFlag struct{ value string }

func (l *limitFlag) add(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.value, "limit", "", fmt.Sprintf("the limit the semaphore must have, 1 to %d: a missing one is created with it, one with another limit is refused; default: its own limit (a missing one is an error)", lock.MaxLimit))
}

// options turns --limit into options.
func (l *limitFlag) options(cmd *cobra.Command) ([]lock.Option, error) {
	if !cmd.Flags().Changed("limit") {
		return nil, nil
	}
	n, err := cmdutil.ParseLimit(l.value)
	if err != nil {
		return nil, err
	}
	return []lock.Option{lock.WithRequiredLimit(n)}, nil
}

// notExistHint is added to the error of acquire and run on a semaphore
// that does not exist.
const notExistHint = "create it with 'koncli semaphore create NAME --limit N', or pass --limit N"
