// Package list implements `koncli mutex list`.
package list

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	watch         bool
	allNamespaces bool
	selector      string
	print         *cmdutil.PrintFlags
}

// NewCommand returns the list command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{print: cmdutil.NewPrintFlags(cmdutil.FormatTable)}
	cmd := &cobra.Command{
		Use:     "list [-A] [-l SELECTOR] [-o FORMAT] [-w]",
		Aliases: []string{"ls"},
		Short:   "List mutexes",
		Long: `List the mutexes in the namespace (-A: in all namespaces), sorted by
namespace and name. Only Leases labelled konlease.io/kind=Mutex are listed;
other Leases, such as leader-election ones, are not. -l narrows the list
with a label selector, as kubectl's -l does ("team=payments",
"tier in (db,cache)", "!canary").

A labelled Lease whose konlease annotations are missing or garbled is not
left out: it is listed with phase Invalid, and -o wide, json and yaml say
why (REASON, status.reason). koncli never modifies such a Lease; fix or
delete it with kubectl.

The table has the columns NAME, HOLDER, PHASE (Locked, Unlocked, Expired:
the holder's TTL ran out and anyone may take it over, or Invalid), TTL,
LOCKED (how long ago it was locked) and EXPIRES (how long until the
holder's TTL runs out unless renewed, or how long ago it did). -A adds
NAMESPACE first; -o wide adds RENEWED (how long ago the holder last renewed
it), TOKEN (the fencing token of the current or last acquisition) and
REASON. Durations read as kubectl's ages ("65s", "3m54s", "5h"), counted
with this machine's clock. <none> marks an empty cell. --no-headers leaves
out the header line.

-o json, yaml and kyaml print a List of the mutexes as
'koncli mutex get -o yaml' prints one (apiVersion konlease.io/v1alpha1,
kind Mutex, metadata, spec.ttl, status: phase, holder, lockedAt,
renewedAt, expiresAt, token, reason); keys come in alphabetical order.
-o jsonpath=TEMPLATE, go-template=TEMPLATE and custom-columns=SPEC work on
that List as in kubectl. -o name prints one NAME per line (NAMESPACE/NAME
with -A), as koncli's commands take it.

An empty table is a message on stderr ("No mutexes found ..."), not data.

` + cmdutil.WatchHelp + ` Mutexes created after the start print
too.

Exit status:
  0  listed (also when there are no mutexes)
  1  error: RBAC refused (-A needs a ClusterRole), the API server could
     not be reached, a template failed, ...
  2  usage error: invalid -o, template, selector or namespace; nothing
     was sent
  130  -w: interrupted by SIGINT (143: SIGTERM, 129: SIGHUP)`,
		Example: `  # The mutexes in the current namespace
  koncli mutex list

  # In all namespaces, with fencing tokens
  koncli mutex list -A -o wide

  # Only the payments team's
  koncli mutex list -l team=payments

  # Who holds what, without the header
  koncli mutex list -o custom-columns=NAME:.metadata.name,HOLDER:.status.holder --no-headers

  # The holders, for a script
  koncli mutex list -o jsonpath='{range .items[?(@.status.phase=="Locked")]}{.status.holder}{"\n"}{end}'

  # Delete every mutex of a namespace
  koncli mutex list -o name | xargs koncli mutex delete

  # Follow every mutex of every namespace: a line on every change
  koncli mutex list -A -w`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runE(cmd, streams, f, flags)
		},
	}
	cmd.Flags().BoolVarP(&flags.allNamespaces, "all-namespaces", "A", false, "list the mutexes in all namespaces")
	cmd.Flags().StringVarP(&flags.selector, "selector", "l", "", `label selector, as kubectl's: "key=value", "key!=value", "key in (a,b)", "!key"`)
	cmd.Flags().BoolVarP(&flags.watch, "watch", "w", false, "after listing, print a mutex again on every change, until interrupted")
	flags.print.AddFlags(cmd)
	return cmd
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole) error {
	toPrinter := flags.print.ToPrinter
	if flags.watch {
		toPrinter = flags.print.ToWatchPrinter
	}
	printer, err := toPrinter(flags.allNamespaces)
	if err != nil {
		return err
	}
	var opts []lock.ListOption
	if flags.selector != "" {
		sel, err := labels.Parse(flags.selector)
		if err != nil {
			return cmdutil.Usagef("invalid -l %q: %w", flags.selector, err)
		}
		opts = append(opts, lock.WithLabelSelector(sel))
	}
	ns := "" // all namespaces
	if !flags.allNamespaces {
		if ns, err = f.Namespace(); err != nil {
			return err
		}
	}
	c, err := f.Client()
	if err != nil {
		return err
	}
	if flags.watch {
		ctx, stop := cmdutil.SignalContext(cmd.Context())
		defer stop()
		return cmdutil.Watch(ctx, cmdutil.NewWatchPrinter(printer, streams.Out), func(ctx context.Context, fn func(lock.WatchEvent) error) error {
			return c.WatchList(ctx, ns, fn, opts...)
		})
	}
	items, err := c.List(cmd.Context(), ns, opts...)
	if err != nil {
		return err
	}
	if len(items) == 0 && printer.IsTable() {
		// As kubectl: an empty table is a message, not data.
		if ns == "" {
			_, err := fmt.Fprintln(streams.ErrOut, "No mutexes found.")
			return err
		}
		_, err := fmt.Fprintf(streams.ErrOut, "No mutexes found in namespace %s.\n", ns)
		return err
	}
	return printer.Print(streams.Out, items, false, time.Now())
}
