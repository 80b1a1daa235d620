package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

func newNodeCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "node",
		Short: "List nodes; cordon, drain, uncordon, revoke and remove them",
		Long: `Manage the machines of the cluster.

A cordoned node takes no new instances; those on it keep running. A
draining node is cordoned, and the controller moves its instances to
other nodes: service instances are replaced elsewhere at once, job
instances that have started are left to finish. Only so many nodes may
drain at once (the server's limit, 1 by default), so that a rolling
reboot never takes more than that out of service; a drain beyond it is
refused, naming the nodes draining. A drained node stays cordoned until
uncordoned.

A node's certificate works until it is revoked ("berth node revoke":
every server refuses it at once; the node keeps its name, NotReady) or
its node is removed ("berth node rm", which frees the name for a new
join). Either way its agent must join again with a join token.`,
		Example: `  berth node ls
  berth node drain n1 --wait
  berth node uncordon n1
  berth node revoke n3
  berth node rm n3`,
	}
	cmd.AddCommand(newNodeLsCmd(g), newNodeDrainCmd(g), newNodeCordonCmd(g, true), newNodeCordonCmd(g, false),
		newNodeRevokeCmd(g), newNodeRmCmd(g))
	cmd.RunE = unknownSubcommand
	return cmd
}

// unknownSubcommand is the RunE of a command that only groups others:
// without arguments it shows its help, and a word that names none of its
// subcommands is an error (a non-zero exit), not the help again.
func unknownSubcommand(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return cmd.Help()
	}
	return fmt.Errorf("unknown command %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())
}

func newNodeLsCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List nodes with their scheduling state (Ready, Cordoned, Draining)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			return nodeList(cmd.Context(), c, g.output, cmd.OutOrStdout())
		},
	}
}

// scheduling is a node's scheduling state as node ls shows it.
func scheduling(n *api.Node) string {
	switch {
	case n.Spec.Draining:
		return "Draining"
	case n.Spec.Unschedulable:
		return "Cordoned"
	}
	return "Ready"
}

// liveOn groups the unfinished instances by the node they are bound to.
func liveOn(insts []*api.Instance) map[string][]*api.Instance {
	out := map[string][]*api.Instance{}
	for _, in := range insts {
		if in.Status.Phase.Terminal() {
			continue
		}
		if in.Spec.Node != "" {
			out[in.Spec.Node] = append(out[in.Spec.Node], in)
		}
	}
	return out
}

func nodeList(ctx context.Context, c *client.Client, format string, w io.Writer) error {
	nodes, _, err := c.Nodes().List(ctx, "")
	if err != nil {
		return err
	}
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Metadata.Name < nodes[j].Metadata.Name })
	if format == "json" || format == "yaml" {
		return printOut(w, format, nodes, nil)
	}
	if format != "" && format != "wide" && format != "table" {
		return fmt.Errorf("--output %q: want table, wide, json or yaml", format)
	}
	insts, _, err := c.Instances().List(ctx, "")
	if err != nil {
		return err
	}
	on := liveOn(insts)
	wide := format == "wide"
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAME\tSTATUS\tSCHEDULING\tINSTANCES\tCPUS\tMEMORY\tADDRESS\tAGE"+cond(wide, "\tPOD SUBNET\tHEARTBEAT\tMESSAGE", ""))
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%s\t%s\t%s", n.Metadata.Name, dash(string(n.Status.Condition)), scheduling(n),
			len(on[n.Metadata.Name]), n.Spec.Capacity.MilliCPU/1000, n.Spec.Capacity.Memory, dash(n.Spec.Address), age(n.Metadata.CreatedAt))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s\t%s", dash(n.Spec.PodSubnet), age(n.Status.LastHeartbeat), n.Status.Message)
		}
		fmt.Fprintln(tw)
	}
	return nil
}

func newNodeCordonCmd(g *globals, cordon bool) *cobra.Command {
	use, short, done := "uncordon NAME", "Make a node schedulable again (and end its drain)", "uncordoned"
	if cordon {
		use, short, done = "cordon NAME", "Keep new instances off a node; those on it stay", "cordoned"
	}
	return &cobra.Command{
		Use:               use,
		Short:             short,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeFirst(api.KindNode),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			r, err := g.resolve(cmd.Context(), c, args[0], api.KindNode)
			if err != nil {
				return err
			}
			nodes := c.Nodes()
			f := nodes.Uncordon
			if cordon {
				f = nodes.Cordon
			}
			if _, err := f(cmd.Context(), r.name); err != nil {
				return describeErr(err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "node/%s %s\n", r.name, done)
			return nil
		},
	}
}

func newNodeDrainCmd(g *globals) *cobra.Command {
	var wait, migrate bool
	var timeout, every time.Duration
	cmd := &cobra.Command{
		Use:   "drain NAME",
		Short: "Cordon a node and move its instances to other nodes",
		Long: `Cordon a node and move its instances to other nodes.

Service instances on the node are replaced on other nodes; job instances
that have started are left to finish. The drain is refused while the
server's limit of nodes drain already. With --wait, the command follows
the drain until nothing is left on the node.

With --migrate, running service instances whose template says
"migration: live" (and runtime: runc) move to other nodes with their
memory, one at a time (see berth migrate); the others are restarted
elsewhere as without it.`,
		Example: `  berth node drain n1
  berth node drain n1 --wait --timeout 10m
  berth node drain n1 --migrate --wait`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: g.completeFirst(api.KindNode),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			r, err := g.resolve(cmd.Context(), c, args[0], api.KindNode)
			if err != nil {
				return err
			}
			return drain(cmd.Context(), c, cmd.OutOrStdout(), r.name, migrate, wait, timeout, every)
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", false, "wait until the node is drained")
	cmd.Flags().BoolVar(&migrate, "migrate", false, "move instances whose template says migration: live with their memory")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "with --wait, how long to wait (0: no limit)")
	cmd.Flags().DurationVar(&every, "interval", time.Second, "with --wait, how often to check")
	_ = cmd.Flags().MarkHidden("interval")
	return cmd
}

// drainProgress describes what is left on a draining node.
func drainProgress(left []*api.Instance) string {
	if len(left) == 0 {
		return "no instances left, finishing"
	}
	var jobs []string
	for _, in := range left {
		if in.Spec.Owner.Kind == api.KindJob && in.Status.Phase != api.PhasePending && in.Status.Phase != api.PhaseScheduled {
			jobs = append(jobs, in.Metadata.Namespace+"/"+in.Metadata.Name)
		}
	}
	s := fmt.Sprintf("%d instance%s left", len(left), cond(len(left) == 1, "", "s"))
	if len(jobs) > 0 {
		sort.Strings(jobs)
		s += fmt.Sprintf(", waiting for %d job instance%s to finish: %s", len(jobs), cond(len(jobs) == 1, "", "s"), strings.Join(jobs, ", "))
	}
	return s
}

func drain(ctx context.Context, c *client.Client, w io.Writer, name string, migrate, wait bool, timeout, every time.Duration) error {
	start := c.Nodes().Drain
	if migrate {
		start = c.Nodes().DrainMigrate
	}
	if _, err := start(ctx, name); err != nil {
		if errdefs.IsConflict(err) {
			return err // the drain limit: the message names the nodes draining
		}
		return describeErr(err)
	}
	status := func() (*api.Node, []*api.Instance, error) {
		n, err := c.Nodes().Get(ctx, "", name)
		if err != nil {
			return nil, nil, err
		}
		insts, _, err := c.Instances().List(ctx, "")
		if err != nil {
			return nil, nil, err
		}
		return n, liveOn(insts)[name], nil
	}
	n, left, err := status()
	if err != nil {
		return err
	}
	if !wait {
		if n.Spec.Draining {
			fmt.Fprintf(w, "node/%s draining: %s\n", name, drainProgress(left))
		} else {
			fmt.Fprintf(w, "node/%s drained\n", name)
		}
		return nil
	}
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	if every <= 0 {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	last := ""
	for {
		switch {
		case n.Spec.Draining:
			if p := drainProgress(left); p != last {
				fmt.Fprintf(w, "node/%s draining: %s\n", name, p)
				last = p
			}
		case n.Spec.Unschedulable:
			fmt.Fprintf(w, "node/%s drained\n", name)
			return nil
		default:
			return fmt.Errorf("node/%s: the drain ended unfinished: the node was uncordoned", name)
		}
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("node/%s: not drained after %s: %s", name, timeout, drainProgress(left))
			}
			return ctx.Err()
		case <-t.C:
		}
		if n, left, err = status(); err != nil {
			if ctx.Err() != nil {
				continue // the select above says why
			}
			return err
		}
	}
}

func newNodeRevokeCmd(g *globals) *cobra.Command {
	return newNodeEachCmd(g, "revoke", "Make nodes' certificates stop working on every server at once", "revoked",
		func(ctx context.Context, c *client.Client, name string) error { return c.Nodes().Revoke(ctx, name) })
}

func newNodeRmCmd(g *globals) *cobra.Command {
	return newNodeEachCmd(g, "rm", "Remove nodes: their certificates stop working and their names are free to join", "removed",
		func(ctx context.Context, c *client.Client, name string) error {
			return c.Nodes().Delete(ctx, "", name, 0)
		})
}

// newNodeEachCmd is a node subcommand that does op to each node it names,
// in order, and says it is done with each.
func newNodeEachCmd(g *globals, verb, short, done string, op func(context.Context, *client.Client, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   verb + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			for _, name := range args {
				if err := op(cmd.Context(), c, name); err != nil {
					return describeErr(err)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "node/%s %s\n", name, done)
			}
			return nil
		},
	}
}
