package cmdutil

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// completionTimeout bounds the List behind a completion: a shell waiting on
// an unreachable cluster is worse than no completion.
const completionTimeout = 5 * time.Second

// CompleteMutexNames completes the first argument with the names of the
// mutexes in the current namespace (honouring -n, --context, ...). Any
// error (no kubeconfig, unreachable server, RBAC) gives no completions:
// completion must never fail loudly.
func CompleteMutexNames(f *Factory) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ns, err := f.Namespace()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := f.Client()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		parent := cmd.Context()
		if parent == nil {
			parent = context.Background()
		}
		ctx, cancel := context.WithTimeout(parent, completionTimeout)
		defer cancel()
		items, err := c.List(ctx, ns)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, s := range items {
			if strings.HasPrefix(s.Name, toComplete) {
				names = append(names, s.Name+"\t"+string(s.Phase))
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}
