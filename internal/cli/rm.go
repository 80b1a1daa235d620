package cli

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newRmCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove services or jobs (and so their instances and containers)",
		Long: `Remove services or jobs by name. A name may say its kind (service/web,
job/tests) and namespace (default/web, or -n); a bare name that is both a
service and a job is refused until it says which.`,
		Example:           "  berth rm web\n  berth rm job/web -n prod",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeNames(api.KindService, api.KindJob),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			var errs []error
			for _, a := range args {
				r, err := g.resolve(cmd.Context(), c, a, api.KindService, api.KindJob)
				if err != nil {
					errs = append(errs, err)
					continue
				}
				if err := c.Delete(cmd.Context(), r.kind, r.namespace, r.name, 0); err != nil {
					errs = append(errs, describeErr(err))
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s removed\n", r)
			}
			return errors.Join(errs...)
		},
	}
}
