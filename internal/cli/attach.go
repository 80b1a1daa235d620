package cli

import (
	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newAttachCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "attach INSTANCE",
		Short: "Print an instance's output from now until its container exits, and exit with its code",
		Long: `Print an instance's output from now until its container exits, on any node,
and exit with the container's exit code. Instances have no stdin to attach to:
to type into one, use berth exec -it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindInstance)
			if err != nil {
				return err
			}
			st, err := c.Attach(ctx, ns, name, cmd.OutOrStdout(), cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if st.Code != 0 {
				return &exitError{code: st.Code}
			}
			return nil
		},
	}
}
