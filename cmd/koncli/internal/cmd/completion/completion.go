// Package completion implements `koncli completion`.
package completion

import (
	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
)

// NewCommand returns the completion command. It generates cobra's
// completion scripts for root; mutex names are completed from the cluster
// by each command's ValidArgsFunction.
func NewCommand(streams genericiooptions.IOStreams, root func() *cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print a shell completion script",
		Long: `Print a script that makes the shell complete koncli's commands, flags and
their values: mutex names and -n namespaces are read from the cluster
(the mutexes in the namespace that -n, --context, ... select) when you
press TAB, --context, --cluster and --user from the kubeconfig, -o with
the output formats. If the cluster cannot be reached there are simply no
suggestions.

bash needs the bash-completion package (version 2: 'apt-get install
bash-completion', 'dnf install bash-completion', 'brew install
bash-completion@2'), loaded in ~/.bashrc; zsh and fish need nothing more.

As a kubectl plugin, koncli completes through kubectl's own completion:
link koncli as kubectl_complete-mutex in the PATH (make build puts that
link in bin/), and 'kubectl mutex <TAB>' completes as 'koncli mutex <TAB>'
does.

Exit status:
  0  printed
  2  usage error: unknown or missing shell`,
		Example: `  # bash, for this shell
  source <(koncli completion bash)

  # bash, for every shell
  koncli completion bash > /etc/bash_completion.d/koncli

  # kubectl mutex <TAB>, with kubectl's completion loaded
  ln -s koncli "$(dirname "$(command -v koncli)")/kubectl_complete-mutex"

  # zsh
  koncli completion zsh > "${fpath[1]}/_koncli"

  # fish
  koncli completion fish > ~/.config/fish/completions/koncli.fish`,
		ValidArgs: []string{"bash", "zsh", "fish"},
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return cmdutil.Usagef("%q needs exactly one shell: bash, zsh or fish", cmd.CommandPath())
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			r := root()
			switch args[0] {
			case "bash":
				return r.GenBashCompletionV2(streams.Out, true)
			case "zsh":
				return r.GenZshCompletion(streams.Out)
			case "fish":
				return r.GenFishCompletion(streams.Out, true)
			}
			return cmdutil.Usagef("unknown shell %q: want bash, zsh or fish", args[0])
		},
	}
	return cmd
}
