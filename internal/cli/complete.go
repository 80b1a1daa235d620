package cli

import (
	"context"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

// completeNames completes the names of objects of kinds, read through the
// API: bare names, and kind/name once the word being completed says its
// kind. Completion never fails loudly: no answer is no suggestion.
func (g *globals) completeNames(kinds ...api.Kind) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(cmd *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		ctx, cancel := context.WithTimeout(cmd.Context(), 3*time.Second)
		defer cancel()
		want := kinds
		prefix := ""
		if k, _, ok := strings.Cut(toComplete, "/"); ok {
			if kind, known := kindAliases[strings.ToLower(k)]; known {
				want, prefix = []api.Kind{kind}, k+"/"
			}
		}
		return g.objectNames(ctx, prefix, want), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeFirst is completeNames for the first argument only (exec's
// later ones are a command, logs takes one).
func (g *globals) completeFirst(kinds ...api.Kind) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	names := g.completeNames(kinds...)
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveDefault
		}
		return names(cmd, args, toComplete)
	}
}

// objectNames lists the names of objects of kinds in the command's
// namespace, each with prefix.
func (g *globals) objectNames(ctx context.Context, prefix string, kinds []api.Kind) []string {
	c, err := g.client(ctx)
	if err != nil {
		return nil
	}
	ns, err := g.ns()
	if err != nil {
		return nil
	}
	var out []string
	for _, k := range kinds {
		if !k.Namespaced() {
			ns = ""
		}
		objs, err := listObjects(ctx, c, k, ns)
		if err != nil {
			continue
		}
		for _, o := range objs {
			out = append(out, prefix+o.GetMetadata().Name)
		}
	}
	return out
}
