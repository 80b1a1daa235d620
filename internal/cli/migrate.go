package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newMigrateCmd(g *globals) *cobra.Command {
	var to string
	cmd := &cobra.Command{
		Use:   "migrate INSTANCE [--to NODE]",
		Short: "Move a running instance to another node with its memory (CRIU live migration)",
		Long: `Move a running instance to another node without restarting it: its
processes are checkpointed with CRIU on their node (a pre-dump while they
run, then a short final dump), the images are streamed through the server
to the target node, and the processes are restored there. The instance
keeps its name and its service's VIP answers from the new node; its own
address is the target node's, and TCP connections to the old one are
closed (clients connect again). Without --to, the Ready, schedulable node
with the fewest instances is chosen.

The instance's service must use an executor with CRIU support (runtime:
runc). If the move fails, the instance runs on where it was.`,
		Example: `  berth migrate counter-7f3k2 --to n2`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindInstance)
			if err != nil {
				return err
			}
			m, err := c.Migrate(ctx, ns, name, to)
			if err != nil {
				return err
			}
			return printOut(cmd.OutOrStdout(), g.output, m, func(w io.Writer) {
				fmt.Fprintf(w, "%s: migrated from %s to %s in %v (downtime %v, %.1f MiB of images), address %s\n",
					args[0], m.From, m.To, m.Duration.Round(time.Millisecond), m.Downtime.Round(time.Millisecond),
					float64(m.Bytes)/(1<<20), m.IP)
			})
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "the node to move it to")
	return cmd
}
