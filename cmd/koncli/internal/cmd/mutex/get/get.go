// Package get implements `koncli mutex get`.
package get

import (
	"context"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

type flagpole struct {
	print *cmdutil.PrintFlags
	watch bool
}

// NewCommand returns the get command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{print: cmdutil.NewPrintFlags(cmdutil.FormatYAML)}
	cmd := &cobra.Command{
		Use:   "get NAME... [-o FORMAT] [-w]",
		Short: "Show the status of mutexes",
		Long: `Print the mutex NAME (or each NAME), by default as YAML:

  apiVersion          konlease.io/v1alpha1
  kind                Mutex
  metadata.name       the mutex's name
  metadata.namespace  its namespace
  spec.ttl            its TTL (absent: none)
  status.phase        Locked, Unlocked, or Expired (the holder's TTL ran
                      out: anyone may take it over)
  status.holder       who holds it (absent: nobody)
  status.lockedAt     when the holder locked it
  status.renewedAt    when the holder last renewed it
  status.expiresAt    when the holder's TTL runs out unless renewed (only
                      with a TTL)
  status.token        the fencing token of the current or last acquisition
                      (absent: never locked)

Times are RFC 3339 in UTC, as kubectl prints them. Fields without a value
are left out; keys come in alphabetical order, in JSON as in YAML. This is
the shape of the original Mutex resource, but no API server serves it:
koncli computes it from the mutex's Lease.

Several NAMEs print a List of them (as kubectl get does), in the order
given; the ones that do not exist are reported after the others are
printed. -o json, kyaml, jsonpath=TEMPLATE, go-template=TEMPLATE and
custom-columns=SPEC work as in kubectl; -o wide prints the table of
'koncli mutex list -o wide'; -o name prints the names.

-w watches one NAME. ` + cmdutil.WatchHelp + `

Exit status:
  0  printed
  1  error: a mutex does not exist, the Lease is not a mutex, RBAC
     refused, the API server could not be reached, a template failed, ...
     (the others were printed)
  2  usage error: invalid NAME, -o or template, -w with several NAMEs;
     nothing was sent
  130  -w: interrupted by SIGINT (143: SIGTERM, 129: SIGHUP)`,
		Example: `  # Who holds it, and until when
  koncli mutex get critical-section

  # The holder alone, for a script
  koncli mutex get critical-section -o jsonpath='{.status.holder}'

  # Several, as a table
  koncli mutex get db-migration daily-job -o wide

  # A line on every change, until Ctrl-C
  koncli mutex get critical-section -w

  # The same as JSON, one object per line, for a program
  koncli mutex get critical-section -w -o json | jq -c '[.status.phase, .status.holder]'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return cmdutil.Usagef("%q needs NAME", cmd.CommandPath())
			}
			return nil
		},
		ValidArgsFunction: cmdutil.CompleteMutexNamesMulti(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args)
		},
	}
	flags.print.AddFlags(cmd)
	cmd.Flags().BoolVarP(&flags.watch, "watch", "w", false, "after printing the mutex, print it again on every change, until interrupted")
	return cmd
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, names []string) error {
	for _, name := range names {
		if err := cmdutil.ValidateName(name); err != nil {
			return err
		}
	}
	if flags.watch {
		return watch(cmd, streams, f, flags, names)
	}
	printer, err := flags.print.ToPrinter(false)
	if err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	return cmdutil.GetEach(names, func(name string) (lock.Status, error) {
		return c.Get(cmd.Context(), ns, name)
	}, func(items []lock.Status) error {
		return printer.Print(streams.Out, items, len(names) == 1, time.Now())
	})
}

// watch is get -w: one NAME, printed on every change.
func watch(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, names []string) error {
	if len(names) > 1 {
		return cmdutil.Usagef("-w watches one NAME, not %d; 'koncli mutex list -w' watches them all", len(names))
	}
	printer, err := flags.print.ToWatchPrinter(false)
	if err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	ctx, stop := cmdutil.SignalContext(cmd.Context())
	defer stop()
	return cmdutil.Watch(ctx, cmdutil.NewWatchPrinter(printer, streams.Out), func(ctx context.Context, fn func(lock.WatchEvent) error) error {
		return c.Watch(ctx, ns, names[0], fn)
	})
}
