package cli

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
)

func newScaleCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "scale NAME=REPLICAS...",
		Short:   "Set the number of replicas of services",
		Example: "  berth scale web=5\n  berth scale web=1 api=3",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			type req struct {
				ns, name string
				n        int
			}
			var reqs []req
			for _, a := range args {
				ref, num, ok := strings.Cut(a, "=")
				n, err := strconv.Atoi(num)
				if !ok || err != nil || n < 0 {
					return fmt.Errorf("%q: want NAME=REPLICAS with a whole number of replicas, 0 or more", a)
				}
				ns, name := namespaced(ref)
				reqs = append(reqs, req{ns, name, n})
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, r := range reqs {
				if _, err := c.Services().Scale(cmd.Context(), r.ns, r.name, r.n); err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "service/%s scaled to %d\n", r.name, r.n)
			}
			return nil
		},
	}
}
