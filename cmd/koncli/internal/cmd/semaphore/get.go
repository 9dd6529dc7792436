package semaphore

import (
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// NewGetCommand returns 'koncli semaphore get'.
func NewGetCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	print := cmdutil.NewPrintFlags(cmdutil.FormatYAML)
	cmd := &cobra.Command{
		Use:   "get NAME... [-o FORMAT]",
		Short: "Show the status of semaphores",
		Long: `Print the semaphore NAME (or each NAME), by default as YAML:

  apiVersion           konlease.io/v1alpha1
  kind                 Semaphore
  metadata.name        the semaphore's name
  metadata.namespace   its namespace
  spec.limit           the most holders at once
  spec.ttl             the TTL of every hold (absent: none)
  spec.fair            true for a fair semaphore
  status.phase         Locked (someone holds a slot) or Unlocked
  status.holders[]     each held slot: holder, slot, phase (Locked, or
                       Expired: its TTL ran out and anyone may take it),
                       lockedAt, expiresAt, token
  status.waiters[]     the identities queued on a fair semaphore, oldest
                       first

Several NAMEs print a List, in the order given; the ones that do not exist
are reported after the others are printed. -o json, kyaml, wide, name,
jsonpath=, go-template= and custom-columns= work as for
'koncli mutex get'.

Exit status:
  0  printed
  1  error: a semaphore does not exist, the Lease is not a semaphore,
     RBAC refused, the API server could not be reached, ...
  2  usage error: invalid NAME, -o or template; nothing was sent`,
		Example: `  # Who holds which slot
  koncli semaphore get node-maintenance

  # The holders alone, one per line
  koncli semaphore get node-maintenance -o jsonpath='{range .status.holders[*]}{.holder}{"\n"}{end}'`,
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
			printer, err := print.ToPrinter(false)
			if err != nil {
				return err
			}
			ns, c, err := f.Target()
			if err != nil {
				return err
			}
			return cmdutil.GetEach(names, func(name string) (lock.SemaphoreStatus, error) {
				return c.GetSemaphore(cmd.Context(), ns, name)
			}, func(items []lock.SemaphoreStatus) error {
				return printer.PrintSemaphores(streams.Out, items, len(names) == 1, time.Now())
			})
		},
	}
	print.AddFlags(cmd)
	return cmd
}
