// Package mutex implements `koncli mutex`, the group of mutex commands. It
// is also the root command of the kubectl plugin (kubectl-mutex).
package mutex

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/create"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/delete"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/get"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/list"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/lock"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/unlock"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex/wait"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/run"
	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

// Long is the description of the mutex commands, shared with the plugin's
// root command.
const Long = `Distributed mutexes on native Kubernetes Lease objects
(coordination.k8s.io/v1). No CRD and no operator: every rule is enforced by
this client through the API server's optimistic concurrency, so it works in
any cluster where the caller may use Leases in its namespace.

A mutex is held by one holder identity at a time. Without a TTL it stays
locked until its holder unlocks it (or an operator force-unlocks it); with a
TTL, a lock whose holder stops renewing is released once the TTL has run
out. Every acquisition gets a fencing token that grows with each
acquisition.

'koncli mutex run NAME -- CMD' is the safe way to run a critical section:
it holds the mutex exactly as long as CMD runs. 'lock' and 'unlock' are for
scripts that must lock and unlock in separate steps.

The namespace is -n, else the kubeconfig context's, else (in a pod) the
pod's own namespace, else "default". The cluster is chosen as kubectl
chooses it: --kubeconfig, KUBECONFIG, ~/.kube/config, or the pod's service
account.`

// NewCommand returns the mutex command group.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mutex",
		Short: "Create, lock, unlock and inspect mutexes",
		// The exit status table is the root command's, added by package app.
		Long: Long,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	AddCommands(cmd, streams, f)
	return cmd
}

// AddCommands adds the mutex commands to parent.
func AddCommands(parent *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory) {
	parent.AddCommand(
		create.NewCommand(streams, f),
		lock.NewCommand(streams, f),
		unlock.NewCommand(streams, f),
		run.NewCommand(streams, f),
		list.NewCommand(streams, f),
		get.NewCommand(streams, f),
		delete.NewCommand(streams, f),
		wait.NewCommand(streams, f),
	)
}
