package cli

import (
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
)

func newEventsCmd(g *globals) *cobra.Command {
	var watch bool
	cmd := &cobra.Command{
		Use:   "events [-w]",
		Short: "Show what happened recently (-w: and keep showing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ns, err := g.listNamespace()
			if err != nil {
				return err
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			list, rev, err := c.Events().List(ctx, ns)
			if err != nil {
				return err
			}
			objs := make([]api.Object, len(list))
			for i, e := range list {
				objs[i] = e
			}
			if g.output == "json" || g.output == "yaml" {
				return printObjects(cmd.OutOrStdout(), g.output, objs, false)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			printEvents(tw, objs)
			tw.Flush()
			if !watch {
				return nil
			}
			events, err := c.Events().Watch(ctx, ns, rev)
			if err != nil {
				return err
			}
			for ev := range events {
				if ev.Err != nil {
					if ctx.Err() != nil {
						return nil
					}
					return ev.Err
				}
				if ev.Type == "Deleted" {
					continue // expired
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				e := ev.Object
				printEventLine(tw, e)
				tw.Flush()
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing new events")
	addListFlags(cmd, g)
	return cmd
}
