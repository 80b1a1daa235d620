package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newRestartCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:               "restart NAME...",
		Short:             "Restart a service (a rolling replacement of its instances) or one instance",
		Example:           "  berth restart web\n  berth restart instance/web-k2x9p",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeNames(api.KindService, api.KindInstance),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, a := range args {
				r, err := g.resolve(cmd.Context(), c, a, api.KindService, api.KindInstance)
				if err != nil {
					return err
				}
				if r.kind == api.KindService {
					_, err = c.Services().Restart(cmd.Context(), r.namespace, r.name)
				} else {
					_, err = c.Instances().Restart(cmd.Context(), r.namespace, r.name)
				}
				if err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s restarting\n", r)
			}
			return nil
		},
	}
}
