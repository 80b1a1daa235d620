package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

func newStatsCmd(g *globals) *cobra.Command {
	var watch bool
	var interval time.Duration
	var container string
	cmd := &cobra.Command{
		Use:     "stats [-w] [-c CONTAINER] [INSTANCE|SERVICE|JOB...]",
		Aliases: []string{"top"},
		Short:   "Show CPU, memory, pids and network of running instances, on every node",
		Long: `Show CPU, memory, pids and network of running instances (all of the namespace's, or
those named), on every node, from their cgroups and network namespaces. CPU is
the share of one core over the interval; with -w the table is printed again
every interval until interrupted.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if interval < 100*time.Millisecond {
				return fmt.Errorf("--interval %v: want at least 100ms", interval)
			}
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			var prev map[string]client.InstanceStats
			for {
				insts, err := g.statsTargets(ctx, c, args)
				if err != nil {
					return err
				}
				if prev == nil {
					// CPU is a rate: the first table needs a reading before.
					prev = readStats(ctx, c, insts, container)
					select {
					case <-ctx.Done():
						return nil
					case <-time.After(min(interval, time.Second)):
					}
				}
				cur := readStats(ctx, c, insts, container)
				printStats(cmd.OutOrStdout(), insts, prev, cur)
				prev = cur
				if !watch {
					return nil
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(interval):
				}
				fmt.Fprintln(cmd.OutOrStdout())
			}
		},
	}
	addListFlags(cmd, g)
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "keep printing the table every interval")
	cmd.Flags().DurationVar(&interval, "interval", 2*time.Second, "how often -w prints")
	cmd.Flags().StringVarP(&container, "container", "c", "", "show this init or sidecar container of each instance (default: main)")
	return cmd
}

// statsTargets are the running instances args name, or all of them.
func (g *globals) statsTargets(ctx context.Context, c *client.Client, args []string) ([]*api.Instance, error) {
	var all []*api.Instance
	if len(args) == 0 {
		ns, err := g.listNamespace()
		if err != nil {
			return nil, err
		}
		list, _, err := c.Instances().List(ctx, ns)
		if err != nil {
			return nil, err
		}
		all = list
	}
	for _, a := range args {
		insts, err := g.resolveInstances(ctx, c, a)
		if err != nil {
			return nil, err
		}
		all = append(all, insts...)
	}
	var out []*api.Instance
	for _, in := range all {
		if in.Status.Phase == api.PhaseRunning && in.Spec.Node != "" {
			out = append(out, in)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Metadata, out[j].Metadata
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	return out, nil
}

// readStats reads every instance's figures at once; an instance that
// cannot answer (it just stopped) is left out.
func readStats(ctx context.Context, c *client.Client, insts []*api.Instance, container string) map[string]client.InstanceStats {
	out := map[string]client.InstanceStats{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, in := range insts {
		wg.Go(func() {
			st, err := c.ContainerStats(ctx, in.Metadata.Namespace, in.Metadata.Name, container)
			if err != nil {
				return
			}
			mu.Lock()
			out[in.Metadata.UID] = st
			mu.Unlock()
		})
	}
	wg.Wait()
	return out
}

func printStats(w io.Writer, insts []*api.Instance, prev, cur map[string]client.InstanceStats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	fmt.Fprintln(tw, "NAMESPACE\tNAME\tNODE\tCPU %\tMEMORY\tLIMIT\tPIDS\tNET RX\tNET TX")
	for _, in := range insts {
		st, ok := cur[in.Metadata.UID]
		if !ok {
			continue
		}
		cpu := "-"
		if p, ok := prev[in.Metadata.UID]; ok && p.Container == st.Container && st.Time.After(p.Time) && st.CPUNanos >= p.CPUNanos {
			cpu = fmt.Sprintf("%.1f", float64(st.CPUNanos-p.CPUNanos)/float64(st.Time.Sub(p.Time).Nanoseconds())*100)
		}
		limit := "-"
		if st.MemoryLimit > 0 {
			limit = humanBytes(int64(st.MemoryLimit))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", in.Metadata.Namespace, in.Metadata.Name, in.Spec.Node,
			cpu, humanBytes(int64(st.MemoryBytes)), limit, st.Pids, humanBytes(int64(st.RxBytes)), humanBytes(int64(st.TxBytes)))
	}
}
