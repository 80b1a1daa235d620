package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newScaleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "scale NAME=REPLICAS...",
		Short:   "Set the number of replicas of services",
		Example: "  berth scale web=5\n  berth scale web=1 service/api=3 -n prod",
		Args:    cobra.MinimumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			names, _ := g.completeNames(api.KindService)(cmd, args, toComplete)
			for i := range names {
				names[i] += "="
			}
			return names, cobra.ShellCompDirectiveNoSpace | cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			type req struct {
				ref string
				n   int
			}
			var reqs []req
			for _, a := range args {
				ref, num, ok := strings.Cut(a, "=")
				n, err := strconv.Atoi(num)
				if !ok || err != nil || n < 0 {
					return fmt.Errorf("%q: want NAME=REPLICAS with a whole number of replicas, 0 or more", a)
				}
				reqs = append(reqs, req{ref, n})
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, rq := range reqs {
				r, err := g.resolve(cmd.Context(), c, rq.ref, api.KindService)
				if err != nil {
					return err
				}
				if _, err := c.Services().Scale(cmd.Context(), r.namespace, r.name, rq.n); err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s scaled to %d\n", r, rq.n)
			}
			return nil
		},
	}
}
