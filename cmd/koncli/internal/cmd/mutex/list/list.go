// Package list implements `koncli mutex list`.
package list

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	allNamespaces bool
	output        string
}

// NewCommand returns the list command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:     "list [-A] [-o wide|json|yaml|name]",
		Aliases: []string{"ls"},
		Short:   "List mutexes",
		Long: `List the mutexes in the namespace (-A: in all namespaces), sorted by
namespace and name. Only mutex Leases are listed (label
konlease.io/kind=Mutex); other Leases, such as leader-election ones, are not.

The table has the columns NAME, HOLDER, PHASE (Locked, Unlocked, or Expired:
the holder's TTL ran out, anyone may take it over), TTL, LOCKED-AT (how
long ago it was locked) and EXPIRES-AT (how long until the holder's TTL runs
out unless renewed). -A adds NAMESPACE first; -o wide adds TOKEN, the
fencing token of the current or last acquisition. Ages are computed with
this machine's clock. <none> marks an empty cell.

-o json and -o yaml print {"items": [...]}, each item as
'koncli mutex get -o json' prints it. -o name prints one NAME per line
(NAMESPACE/NAME with -A).

Exit status:
  0  listed (also when there are no mutexes)
  1  error: RBAC refused, the API server could not be reached, ...
  2  usage error: invalid -o or namespace; nothing was sent`,
		Example: `  # The mutexes in the current namespace
  koncli mutex list

  # In all namespaces, with fencing tokens
  koncli mutex list -A -o wide

  # The holders, for a script
  koncli mutex list -o json | jq -r '.items[] | select(.phase == "Locked") | .holder'`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runE(cmd, streams, f, flags)
		},
	}
	cmd.Flags().BoolVarP(&flags.allNamespaces, "all-namespaces", "A", false, "list the mutexes in all namespaces")
	cmd.Flags().StringVarP(&flags.output, "output", "o", "", "output format: wide, json, yaml or name (default: a table)")
	return cmd
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole) error {
	if err := cmdutil.ValidateOutput(flags.output, "", "wide", "json", "yaml", "name"); err != nil {
		return err
	}
	ns := "" // all namespaces
	if !flags.allNamespaces {
		var err error
		if ns, err = f.Namespace(); err != nil {
			return err
		}
	}
	c, err := f.Client()
	if err != nil {
		return err
	}
	items, err := c.List(cmd.Context(), ns)
	if err != nil {
		return err
	}
	return Print(streams, items, flags.output, ns, time.Now())
}

// Print writes the mutexes of namespace ns ("": all namespaces) in the
// format -o names; now is this machine's clock, for ages.
func Print(streams genericiooptions.IOStreams, items []lock.Status, output, ns string, now time.Time) error {
	allNamespaces := ns == ""
	switch output {
	case "json", "yaml":
		view := cmdutil.ListView{Items: []cmdutil.StatusView{}}
		for _, s := range items {
			view.Items = append(view.Items, cmdutil.View(s))
		}
		return cmdutil.WriteObject(streams.Out, output, view)
	case "name":
		return cmdutil.WriteNames(streams.Out, items, allNamespaces)
	}
	if len(items) == 0 {
		// As kubectl: an empty table is a message, not data.
		if allNamespaces {
			_, err := streams.ErrOut.Write([]byte("No mutexes found.\n"))
			return err
		}
		_, err := fmt.Fprintf(streams.ErrOut, "No mutexes found in namespace %s.\n", ns)
		return err
	}
	return cmdutil.WriteTable(streams.Out, items, cmdutil.TableOptions{AllNamespaces: allNamespaces, Wide: output == "wide"}, now)
}
