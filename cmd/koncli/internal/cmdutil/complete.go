package cmdutil

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/metadata"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/konlease/konlease/lock"
)

// completionTimeout bounds the request behind a completion: a shell
// waiting on an unreachable cluster is worse than no completion.
const completionTimeout = 5 * time.Second

// Completion never fails loudly: any error (no kubeconfig, unreachable
// server, RBAC) gives no suggestions, and nothing on stderr.

// CompleteMutexNames completes the first argument with the names of the
// mutexes in the current namespace (honouring -n, --context, ...), each
// described by its phase.
func CompleteMutexNames(f *Factory) cobra.CompletionFunc {
	return completeMutexNames(f, false)
}

// CompleteMutexNamesMulti completes every argument (get and delete take
// several NAMEs) with the mutex names not given yet.
func CompleteMutexNamesMulti(f *Factory) cobra.CompletionFunc {
	return completeMutexNames(f, true)
}

func completeMutexNames(f *Factory, multi bool) cobra.CompletionFunc {
	return completeNames(f, multi, func(ctx context.Context, c *lock.Client, ns string) ([][2]string, error) {
		items, err := c.List(ctx, ns)
		out := make([][2]string, len(items))
		for i, s := range items {
			out[i] = [2]string{s.Name, string(s.Phase)}
		}
		return out, err
	})
}

// CompleteSemaphoreNames completes the first argument with the names of
// the semaphores in the current namespace, each described by how many of
// its slots are held.
func CompleteSemaphoreNames(f *Factory) cobra.CompletionFunc {
	return completeSemaphoreNames(f, false)
}

// CompleteSemaphoreNamesMulti completes every argument with the semaphore
// names not given yet.
func CompleteSemaphoreNamesMulti(f *Factory) cobra.CompletionFunc {
	return completeSemaphoreNames(f, true)
}

func completeSemaphoreNames(f *Factory, multi bool) cobra.CompletionFunc {
	return completeNames(f, multi, func(ctx context.Context, c *lock.Client, ns string) ([][2]string, error) {
		items, err := c.ListSemaphores(ctx, ns)
		out := make([][2]string, len(items))
		for i, s := range items {
			desc := string(s.Phase)
			if s.Phase != lock.PhaseInvalid {
				desc = fmt.Sprintf("%d/%d held", len(s.Holders), s.Limit)
			}
			out[i] = [2]string{s.Name, desc}
		}
		return out, err
	})
}

// completeNames completes with the names that list returns (each with its
// description) and that start with what is typed.
func completeNames(f *Factory, multi bool, list func(ctx context.Context, c *lock.Client, ns string) ([][2]string, error)) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 && !multi {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ns, c, err := f.Target()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext(cmd)
		defer cancel()
		items, err := list(ctx, c, ns)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, it := range items {
			if strings.HasPrefix(it[0], toComplete) && !slices.Contains(args, it[0]) {
				names = append(names, it[0]+"\t"+it[1])
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// RegisterFlagCompletions completes the connection flags on root as
// kubectl does: -n with the cluster's namespaces, --context, --cluster and
// --user with the kubeconfig's entries.
func RegisterFlagCompletions(root *cobra.Command, f *Factory) {
	complete := map[string]cobra.CompletionFunc{
		"namespace": completeNamespaces(f),
		"context":   completeKubeconfig(f, func(c *clientcmdapi.Config) []string { return keys(c.Contexts) }),
		"cluster":   completeKubeconfig(f, func(c *clientcmdapi.Config) []string { return keys(c.Clusters) }),
		"user":      completeKubeconfig(f, func(c *clientcmdapi.Config) []string { return keys(c.AuthInfos) }),
	}
	for flag, fn := range complete {
		if root.PersistentFlags().Lookup(flag) != nil {
			_ = root.RegisterFlagCompletionFunc(flag, fn)
		}
	}
}

// completeNamespaces lists the namespaces, which needs the cluster-wide
// list verb on namespaces; without it there are no suggestions. The
// metadata client reads names only, and costs the binary next to nothing
// (the typed core/v1 client would add 2 MB).
func completeNamespaces(f *Factory) cobra.CompletionFunc {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		cfg, err := f.RESTConfig()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		mc, err := metadata.NewForConfig(cfg)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := completionContext(cmd)
		defer cancel()
		list, err := mc.Resource(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, ns := range list.Items {
			if strings.HasPrefix(ns.Name, toComplete) {
				names = append(names, ns.Name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeKubeconfig completes with the names that entries picks from the
// kubeconfig that --kubeconfig or KUBECONFIG selects (sorted).
func completeKubeconfig(f *Factory, entries func(*clientcmdapi.Config) []string) cobra.CompletionFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		raw, err := f.ConfigFlags.ToRawKubeConfigLoader().RawConfig()
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		var names []string
		for _, name := range entries(&raw) {
			if strings.HasPrefix(name, toComplete) {
				names = append(names, name)
			}
		}
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

func keys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

func completionContext(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	parent := cmd.Context()
	if parent == nil {
		parent = context.Background()
	}
	return context.WithTimeout(parent, completionTimeout)
}
