// Package get implements `koncli mutex get`.
package get

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

type flagpole struct {
	output string
}

// NewCommand returns the get command.
func NewCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	flags := &flagpole{}
	cmd := &cobra.Command{
		Use:   "get NAME [-o yaml|json]",
		Short: "Show the status of a mutex",
		Long: `Print the status of the mutex NAME:

  name       the mutex's name
  namespace  its namespace
  ttl        its TTL (absent: none)
  holder     who holds it (absent: nobody)
  phase      Locked, Unlocked, or Expired (the holder's TTL ran out: anyone
             may take it over)
  lockedAt   when the holder locked it
  expiresAt  when the holder's TTL runs out unless renewed (only with a TTL)
  token      the fencing token of the current or last acquisition (absent:
             never locked)

Times are RFC 3339 in UTC. Fields without a value are left out. The default
output is YAML; -o json prints the same object as JSON.

Exit status:
  0  printed
  1  error: the mutex does not exist, the Lease is not a mutex, RBAC
     refused, the API server could not be reached, ...
  2  usage error: invalid NAME or -o; nothing was sent`,
		Example: `  # Who holds it, and until when
  koncli mutex get critical-section

  # For a script
  koncli mutex get critical-section -o json | jq -r .holder`,
		Args:              cmdutil.ExactArgs("NAME"),
		ValidArgsFunction: cmdutil.CompleteMutexNames(f),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runE(cmd, streams, f, flags, args[0])
		},
	}
	cmd.Flags().StringVarP(&flags.output, "output", "o", "yaml", "output format: yaml or json")
	return cmd
}

func runE(cmd *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory, flags *flagpole, name string) error {
	if err := cmdutil.ValidateName(name); err != nil {
		return err
	}
	if err := cmdutil.ValidateOutput(flags.output, "yaml", "json"); err != nil {
		return err
	}
	ns, c, err := f.Target()
	if err != nil {
		return err
	}
	st, err := c.Get(cmd.Context(), ns, name)
	if err != nil {
		return err
	}
	return cmdutil.WriteObject(streams.Out, flags.output, cmdutil.View(st))
}
