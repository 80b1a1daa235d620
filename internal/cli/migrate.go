package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newMigrateCmd(g *globals) *cobra.Command {
	var opts api.MigrateOptions
	cmd := &cobra.Command{
		Use:   "migrate INSTANCE [--to NODE] [--post-copy]",
		Short: "Move a running instance to another node with its memory (CRIU live migration)",
		Long: `Move a running instance to another node without restarting it: the
target node readies the image and an address while the instance runs, its
processes are checkpointed with CRIU on their node (a pre-dump while they
run, where the kernel allows, then the final dump), the images and the
container's writable layer are streamed through the server to the target
node, and the processes are restored there. The instance
keeps its name and its service's VIP answers from the new node; its own
address is the target node's, and TCP connections to the old one are
closed (clients connect again). Without --to, the Ready, schedulable node
with the fewest instances is chosen.

The instance's service must use an executor with CRIU support (runtime:
runc) and no named volume or host path (their data stays on the node). If
the move fails, the instance runs on where it was. The second line printed
says where the time went: prepare (before the freeze), dump, transfer,
restore, and the switch of the service's VIP.

With --post-copy, the processes are restored before their memory has
come: the final dump leaves the memory out, the target runs them at once,
and each page is fetched from the source when first touched, the rest in
the background. The downtime no longer grows with the memory; the price:
until the last page has come, losing either node (or the link between
them) loses the instance's memory, and it restarts afresh on the target.
A third line says how long the memory took to follow.`,
		Example: `  berth migrate counter-7f3k2 --to n2
  berth migrate redis-x8k2d --post-copy`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, ns, name, err := g.clientFor(ctx, args[0], api.KindInstance)
			if err != nil {
				return err
			}
			m, err := c.MigrateWith(ctx, ns, name, opts)
			if err != nil {
				return err
			}
			return printOut(cmd.OutOrStdout(), g.output, m, func(w io.Writer) {
				via := "through the server"
				if m.Direct {
					via = "node to node"
				}
				fmt.Fprintf(w, "%s: migrated from %s to %s in %v (downtime %v, %.1f MiB of images sent %s), address %s\n",
					args[0], m.From, m.To, m.Duration.Round(time.Millisecond), m.Downtime.Round(time.Millisecond),
					float64(m.Bytes)/(1<<20), via, m.IP)
				st := m.Stages
				fmt.Fprintf(w, "  prepare %v (before the freeze), dump %v, transfer %v, restore %v, switch %v\n",
					st.Prepare.Round(time.Millisecond), st.Dump.Round(time.Millisecond), st.Transfer.Round(time.Millisecond),
					st.Restore.Round(time.Millisecond), st.Switch.Round(time.Millisecond))
				if m.PostCopy {
					fmt.Fprintf(w, "  post-copy: the memory followed the restore in %v\n", st.PostCopy.Round(time.Millisecond))
				}
			})
		},
	}
	cmd.Flags().StringVar(&opts.To, "to", "", "the node to move it to")
	cmd.Flags().BoolVar(&opts.PostCopy, "post-copy", false, "restore before the memory has come; it follows (see above)")
	return cmd
}
