package semaphore

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

type listFlags struct {
	allNamespaces bool
	print         *cmdutil.PrintFlags
}

// NewListCommand returns 'koncli semaphore list'.
func NewListCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &listFlags{print: cmdutil.NewPrintFlags(cmdutil.FormatTable)}
	cmd := &cobra.Command{
		Use:     "list [-A] [-o FORMAT]",
		Aliases: []string{"ls"},
		Short:   "List semaphores",
		Long: `List the semaphores in the namespace (-A: in all namespaces), sorted by
namespace and name. Only Leases labelled konlease.io/kind=Semaphore are
listed (not their slots, nor mutexes). A labelled Lease that is not a
valid semaphore is listed with phase Invalid, and -o wide says why.

The table has the columns NAME, LIMIT, HELD (how many slots are held),
HOLDERS and TTL; -A adds NAMESPACE first; -o wide adds FAIR, WAITERS (on
a fair semaphore), OLDEST (how long the oldest holder has held its slot)
and REASON. -o json, yaml, kyaml, name, jsonpath=, go-template= and
custom-columns= work as for 'koncli mutex list', on objects of kind
Semaphore: spec.limit, spec.ttl, spec.fair, status.phase,
status.holders[] (holder, slot, phase, lockedAt, expiresAt, token) and
status.waiters[].

Exit status:
  0  listed (also when there are no semaphores)
  1  error: RBAC refused (-A needs a ClusterRole), the API server could
     not be reached, a template failed, ...
  2  usage error: invalid -o or template; nothing was sent`,
		Example: `  # The semaphores of the namespace, and who holds them
  koncli semaphore list

  # How many slots each has free, for a script
  koncli semaphore list -o jsonpath='{range .items[*]}{.metadata.name} {.spec.limit} {.status.holders[*].holder}{"\n"}{end}'`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			printer, err := flags.print.ToPrinter(flags.allNamespaces)
			if err != nil {
				return err
			}
			ns := ""
			if !flags.allNamespaces {
				if ns, err = f.Namespace(); err != nil {
					return err
				}
			}
			c, err := f.Client()
			if err != nil {
				return err
			}
			items, err := c.ListSemaphores(cmd.Context(), ns)
			if err != nil {
				return err
			}
			if len(items) == 0 && printer.IsTable() {
				if ns == "" {
					_, err := fmt.Fprintln(streams.ErrOut, "No semaphores found.")
					return err
				}
				_, err := fmt.Fprintf(streams.ErrOut, "No semaphores found in namespace %s.\n", ns)
				return err
			}
			return printer.PrintSemaphores(streams.Out, items, false, time.Now())
		},
	}
	cmd.Flags().BoolVarP(&flags.allNamespaces, "all-namespaces", "A", false, "list the semaphores in all namespaces")
	flags.print.AddFlags(cmd)
	return cmd
}
