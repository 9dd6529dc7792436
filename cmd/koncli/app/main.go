// Package app is koncli's entry point: it builds the command tree, runs it,
// and turns the outcome into a message on stderr and an exit code. It is
// the only place that exits the process.
package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"
	"k8s.io/cli-runtime/pkg/genericiooptions"

	"github.com/konlease/konlease/cmd/koncli/internal/cmd/completion"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/mutex"
	"github.com/konlease/konlease/cmd/koncli/internal/cmd/semaphore"
	versioncmd "github.com/konlease/konlease/cmd/koncli/internal/cmd/version"
	"github.com/konlease/konlease/cmd/koncli/internal/cmdutil"
	"github.com/konlease/konlease/lock"
)

// version is the release, stamped at build time:
//
//	go build -ldflags "-X github.com/konlease/konlease/cmd/koncli/app.version=v1.2.3" ./cmd/koncli
//
// It must be a package variable for -X to set it; nothing else is.
var version string

// PluginName is the executable name under which koncli acts as the
// kubectl plugin "kubectl mutex": its root command is then the mutex
// command.
const PluginName = "kubectl-mutex"

// PluginCompletionName is the executable name under which koncli completes
// the command line of "kubectl mutex": kubectl runs kubectl_complete-mutex
// with the plugin's arguments (the last one being the word to complete)
// when the shell asks it to complete "kubectl mutex ...".
const PluginCompletionName = "kubectl_complete-mutex"

// Main runs koncli with the process's arguments and streams, and exits.
func Main() {
	streams := genericiooptions.IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	os.Exit(Run(context.Background(), os.Args, streams))
}

// Run runs koncli with argv (argv[0] is the name it was invoked as) and
// returns its exit code. Errors are printed to streams.ErrOut as one line
// "error: ...".
func Run(ctx context.Context, argv []string, streams genericiooptions.IOStreams) int {
	return run(ctx, argv, streams, cmdutil.NewFactory(streams))
}

// run is Run with the factory given (unit tests give one with a fake
// clientset).
func run(ctx context.Context, argv []string, streams genericiooptions.IOStreams, f *cmdutil.Factory) int {
	f.UserAgent = "koncli/" + versioncmd.String(version)
	var root *cobra.Command
	args := []string{}
	if len(argv) > 0 {
		args = argv[1:]
	}
	switch {
	case len(argv) > 0 && IsPluginCompletion(argv[0]):
		// cobra's hidden __complete command prints the candidates and the
		// directive line, the format kubectl reads from it.
		root = NewPluginCommand(streams, f)
		args = append([]string{cobra.ShellCompRequestCmd}, args...)
	case len(argv) > 0 && IsPlugin(argv[0]):
		root = NewPluginCommand(streams, f)
	default:
		root = NewRootCommand(streams, f)
	}
	root.SetArgs(args)
	cmd, err := root.ExecuteContextC(ctx)
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lock.DefaultCleanupTimeout)
	if cerr := f.Close(cctx); cerr != nil {
		f.Logger().V(1).Info("deleting this process's sessions failed; they expire", "error", cerr.Error())
	}
	cancel()
	if err == nil {
		return ExitOK
	}
	code := ExitCode(err)
	switch code {
	case ExitOK:
		// --conflict-exit-code 0: a busy mutex is not an error, but say so.
		fmt.Fprintf(streams.ErrOut, "%s\n", Message(err, f.Host()))
	case ExitUsage:
		path := root.CommandPath()
		if cmd != nil {
			path = cmd.CommandPath()
		}
		fmt.Fprintf(streams.ErrOut, "error: %s\nRun '%s --help' for usage.\n", Message(err, f.Host()), path)
	default:
		// run's command that failed has spoken for itself on its stderr.
		var child *cmdutil.ChildExitError
		if !errors.As(err, &child) {
			fmt.Fprintf(streams.ErrOut, "error: %s\n", Message(err, f.Host()))
		}
	}
	return code
}

// IsPlugin reports whether koncli was invoked as the kubectl plugin.
func IsPlugin(argv0 string) bool { return invokedAs(argv0) == PluginName }

// IsPluginCompletion reports whether koncli was invoked as the kubectl
// plugin's completion executable.
func IsPluginCompletion(argv0 string) bool { return invokedAs(argv0) == PluginCompletionName }

func invokedAs(argv0 string) string {
	return strings.TrimSuffix(filepath.Base(argv0), ".exe")
}

// NewRootCommand returns the koncli command.
func NewRootCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "koncli",
		Short: "Distributed mutexes and semaphores on Kubernetes Leases",
		Long: mutex.Long + `

Run 'koncli mutex --help' for the mutex commands, and
'koncli semaphore --help' for semaphores: at most N holders at once, on
the same machinery. As a kubectl plugin:
link or copy koncli to kubectl-mutex in the PATH; then 'kubectl mutex lock
NAME' works, with the same flags. Link it as kubectl_complete-mutex too,
and kubectl's shell completion completes 'kubectl mutex ...' (commands,
flags, mutex and namespace names).`,
		Example: `  koncli mutex create critical-section --ttl 5m
  koncli mutex lock critical-section --holder worker-1 --timeout 30s
  koncli mutex unlock critical-section --holder worker-1
  koncli mutex run db-migration --timeout 5m -- ./migrate
  koncli mutex list -A
  koncli semaphore run node-maintenance --limit 2 --ttl 10m -- ./maintain`,
		Args: cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	setup(root, streams, f)
	root.AddCommand(
		mutex.NewCommand(streams, f),
		semaphore.NewCommand(streams, f),
		versioncmd.NewCommand(streams, version),
		completion.NewCommand(streams, func() *cobra.Command { return root }),
	)
	moveExitStatus(root)
	return root
}

// NewPluginCommand returns the root command of kubectl-mutex: the mutex
// commands, named as kubectl shows them ("kubectl mutex lock").
func NewPluginCommand(streams genericiooptions.IOStreams, f *cmdutil.Factory) *cobra.Command {
	root := &cobra.Command{
		Use:         "mutex",
		Annotations: map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl mutex"},
		Short:       "Distributed mutexes on Kubernetes Leases",
		Long:        mutex.Long,
		Args:        cmdutil.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	setup(root, streams, f)
	mutex.AddCommands(root, streams, f)
	root.AddCommand(versioncmd.NewCommand(streams, version))
	renameInHelp(root, "koncli mutex ", "kubectl mutex ")
	moveExitStatus(root)
	return root
}

// exitStatusAnnotation holds a command's "Exit status:" section, which the
// usage template prints after the flags, where man pages put it.
const exitStatusAnnotation = "konlease.io/exit-status"

// exitStatusHeading starts the exit status section of a command's Long.
const exitStatusHeading = "\n\nExit status:\n"

// moveExitStatus moves the exit status section from the end of each
// command's Long text (where it is written, next to the text it belongs
// to) into the annotation that the usage template prints last. Commands
// without one of their own (the groups) get the full table.
func moveExitStatus(cmd *cobra.Command) {
	if cmd.Annotations == nil {
		cmd.Annotations = map[string]string{}
	}
	if i := strings.LastIndex(cmd.Long, exitStatusHeading); i >= 0 {
		cmd.Annotations[exitStatusAnnotation] = strings.TrimPrefix(cmd.Long[i:], "\n\n")
		cmd.Long = cmd.Long[:i]
	} else if cmd.Name() != "help" {
		cmd.Annotations[exitStatusAnnotation] = exitStatusHelp
	}
	for _, c := range cmd.Commands() {
		moveExitStatus(c)
	}
}

// setup gives a root command the global flags and koncli's error handling:
// errors are printed by Run (once, as one line), usage only for usage
// errors, and flag parsing errors are usage errors.
func setup(root *cobra.Command, streams genericiooptions.IOStreams, f *cmdutil.Factory) {
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.ErrOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return cmdutil.AsUsage(err)
	})
	f.AddFlags(root.PersistentFlags())
	cmdutil.RegisterFlagCompletions(root, f)
	root.SetUsageTemplate(strings.TrimRight(root.UsageTemplate(), "\n") +
		`{{with index .Annotations "` + exitStatusAnnotation + `"}}

{{.}}{{end}}
`)
}

// renameInHelp rewrites the help texts of cmd and its subcommands, so that
// the plugin's examples read as they must be typed.
func renameInHelp(cmd *cobra.Command, from, to string) {
	cmd.Long = strings.ReplaceAll(cmd.Long, from, to)
	cmd.Example = strings.ReplaceAll(cmd.Example, from, to)
	for _, c := range cmd.Commands() {
		renameInHelp(c, from, to)
	}
}
