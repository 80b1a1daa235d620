package cli

import (
	"io"
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
			structured := g.output == "json" || g.output == "yaml"
			if structured && !watch {
				return printObjects(cmd.OutOrStdout(), g.output, objs, false)
			}
			printOne := eventPrinter(cmd.OutOrStdout(), g.output)
			if structured {
				for _, e := range list {
					if err := printOne(e); err != nil {
						return err
					}
				}
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				printEvents(tw, objs)
				tw.Flush()
			}
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
				if err := printOne(ev.Object); err != nil {
					return err
				}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing new events")
	addListFlags(cmd, g)
	return cmd
}

// eventPrinter prints one event a call in format: a table line, or,
// as get -w prints objects, a document of its own (a JSON document, or
// YAML with "---" between).
func eventPrinter(w io.Writer, format string) func(*api.Event) error {
	first := true
	return func(e *api.Event) error {
		if format != "json" && format != "yaml" {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			printEventLine(tw, e)
			return tw.Flush()
		}
		if format == "yaml" && !first {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		first = false
		return printObjects(w, format, []api.Object{e}, true)
	}
}
