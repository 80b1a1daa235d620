package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/errdefs"
)

func newRestartCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "restart NAME...",
		Short: "Restart a service (a rolling replacement of its instances) or one instance",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, a := range args {
				ns, name := namespaced(a)
				_, err := c.Services().Restart(cmd.Context(), ns, name)
				kind := "service"
				if errdefs.IsNotFound(err) {
					_, err = c.Instances().Restart(cmd.Context(), ns, name)
					kind = "instance"
				}
				if errdefs.IsNotFound(err) {
					return fmt.Errorf("no service or instance named %q in namespace %q", name, ns)
				}
				if err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s/%s restarting\n", kind, name)
			}
			return nil
		},
	}
}
