package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

var kindAliases = map[string]api.Kind{
	"service": api.KindService, "services": api.KindService, "svc": api.KindService,
	"job": api.KindJob, "jobs": api.KindJob,
	"instance": api.KindInstance, "instances": api.KindInstance, "inst": api.KindInstance, "ps": api.KindInstance,
	"node": api.KindNode, "nodes": api.KindNode, "no": api.KindNode,
	"event": api.KindEvent, "events": api.KindEvent, "ev": api.KindEvent,
}

func newGetCmd(g *globals) *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "get KIND [NAME]",
		Short: "List or show services, jobs, instances, nodes or events",
		Example: `  berth get services
  berth get service web -o wide
  berth get job tests -o yaml
  berth get instances -o json`,
		Args:      cobra.RangeArgs(1, 2),
		ValidArgs: []string{"services", "jobs", "instances", "nodes", "events"},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := kindAliases[strings.ToLower(args[0])]
			if !ok {
				return fmt.Errorf("unknown kind %q: want services, jobs, instances, nodes or events", args[0])
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			return get(cmd.Context(), c, g.output, cmd.OutOrStdout(), kind, ns, name, false)
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "namespace (default: all for lists, \"default\" for one object)")
	return cmd
}

func newPsCmd(g *globals) *cobra.Command {
	var ns string
	var all bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List instances (running and starting; -a for finished ones too)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			return get(cmd.Context(), c, g.output, cmd.OutOrStdout(), api.KindInstance, ns, "", !all)
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "", "namespace (default: all)")
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show finished instances too")
	return cmd
}

func get(ctx context.Context, c *client.Client, format string, w io.Writer, kind api.Kind, ns, name string, liveOnly bool) error {
	one := name != ""
	if one && ns == "" {
		ns, name = namespaced(name)
	}
	var objs []api.Object
	var err error
	switch kind {
	case api.KindService:
		objs, err = fetch(ctx, c.Services().Resource, ns, name)
	case api.KindJob:
		objs, err = fetch(ctx, c.Jobs().Resource, ns, name)
	case api.KindInstance:
		objs, err = fetch(ctx, c.Instances().Resource, ns, name)
	case api.KindNode:
		objs, err = fetch(ctx, c.Nodes().Resource, "", name)
	case api.KindEvent:
		objs, err = fetch(ctx, c.Events().Resource, ns, name)
	}
	if err != nil {
		return err
	}
	if liveOnly {
		kept := objs[:0]
		for _, o := range objs {
			if in := o.(*api.Instance); in.Status.Phase != api.PhaseSucceeded && in.Status.Phase != api.PhaseFailed && in.Status.Phase != api.PhaseLost {
				kept = append(kept, o)
			}
		}
		objs = kept
	}
	if format == "json" || format == "yaml" {
		var v any = objs
		if one && len(objs) == 1 {
			v = objs[0]
		}
		return printOut(w, format, v, nil)
	}
	if format != "" && format != "wide" && format != "table" {
		return fmt.Errorf("--output %q: want table, wide, json or yaml", format)
	}
	wide := format == "wide"
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	switch kind {
	case api.KindService:
		var eps map[string][]string
		if wide {
			if eps, err = endpoints(ctx, c, ns); err != nil {
				return err
			}
		}
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tREADY\tUPDATED\tIMAGE\tAGE"+cond(wide, "\tROLLOUT\tVIP\tDNS\tPORTS\tENDPOINTS", ""))
		for _, o := range objs {
			s := o.(*api.Service)
			fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%s", s.Metadata.Namespace, s.Metadata.Name, s.Status.ReadyReplicas, s.Spec.Replicas,
				s.Status.UpdatedReplicas, imageColumn(s.Spec.Template.Image, wide), age(s.Metadata.CreatedAt))
			if wide {
				fmt.Fprintf(tw, "\t%s", dash(string(s.Status.Rollout.Phase)))
			}
			if wide {
				ep := eps[s.Metadata.Namespace+"/"+s.Metadata.Name+"/"+s.Metadata.UID]
				fmt.Fprintf(tw, "\t%s\t%s.%s.berth\t%s\t%s", dash(s.Status.VIP), s.Metadata.Name, s.Metadata.Namespace,
					portsOf(s.Spec.Template.Ports), dash(strings.Join(ep, ",")))
			}
			fmt.Fprintln(tw)
		}
	case api.KindJob:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tPHASE\tSUCCEEDED\tFAILED\tACTIVE\tAGE")
		for _, o := range objs {
			j := o.(*api.Job)
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s\n", j.Metadata.Namespace, j.Metadata.Name, dash(string(j.Status.Phase)),
				j.Status.Succeeded, j.Spec.Completions, j.Status.Failed, j.Status.Active, age(j.Metadata.CreatedAt))
		}
		if one && len(objs) == 1 {
			j := objs[0].(*api.Job)
			fmt.Fprintln(tw, "\nINDEX\tRESULT\tATTEMPTS\tEXIT\tINSTANCE")
			for _, ir := range j.Status.Indexes {
				res := "running"
				switch {
				case ir.Succeeded:
					res = "succeeded"
				case ir.Failed:
					res = "failed"
				case ir.Instance == "":
					res = "waiting"
				}
				fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%s\n", ir.Index, res, ir.Attempts, ir.ExitCode, dash(ir.Instance))
			}
		}
	case api.KindInstance:
		fmt.Fprintln(tw, "NAMESPACE\tNAME\tOWNER\tNODE\tPHASE\tHEALTHY\tRESTARTS\tAGE"+cond(wide, "\tIMAGE\tCONTAINER\tIP\tMESSAGE", ""))
		for _, o := range objs {
			in := o.(*api.Instance)
			healthy := "-"
			if in.Status.Phase == api.PhaseRunning {
				healthy = fmt.Sprint(in.Status.Healthy)
			}
			phase := string(in.Status.Phase)
			if in.Status.Reason != "" && in.Status.Phase != api.PhaseRunning {
				phase += " (" + in.Status.Reason + restartingIn(in.Status.RestartAt) + ")"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%d\t%s", in.Metadata.Namespace, in.Metadata.Name,
				strings.ToLower(string(in.Spec.Owner.Kind)), in.Spec.Owner.Name, dash(in.Spec.Node), dash(phase), healthy,
				in.Status.Restarts, age(in.Metadata.CreatedAt))
			if wide {
				fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s", imageColumn(in.Spec.Template.Image, true), dash(in.Status.ContainerID), dash(in.Status.IP), in.Status.Message)
			}
			fmt.Fprintln(tw)
		}
	case api.KindNode:
		fmt.Fprintln(tw, "NAME\tSTATUS\tCPUS\tMEMORY\tADDRESS\tAGE")
		for _, o := range objs {
			n := o.(*api.Node)
			status := string(n.Status.Condition)
			if n.Spec.Unschedulable {
				status += ",SchedulingDisabled"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\n", n.Metadata.Name, dash(status), n.Spec.Capacity.MilliCPU/1000,
				n.Spec.Capacity.Memory, dash(n.Spec.Address), age(n.Metadata.CreatedAt))
		}
	case api.KindEvent:
		printEvents(tw, objs)
	}
	return nil
}

func printEvents(tw *tabwriter.Writer, objs []api.Object) {
	sort.SliceStable(objs, func(i, j int) bool { return objs[i].(*api.Event).Time.Before(objs[j].(*api.Event).Time) })
	fmt.Fprintln(tw, "TIME\tTYPE\tOBJECT\tREASON\tMESSAGE")
	for _, o := range objs {
		printEventLine(tw, o.(*api.Event))
	}
}

func printEventLine(tw *tabwriter.Writer, e *api.Event) {
	fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\n", e.Time.Local().Format("15:04:05"), e.Type,
		strings.ToLower(string(e.Object.Kind)), e.Object.Name, e.Reason, e.Message)
}

// fetch gets one object or lists them, as api.Objects.
func fetch[T any, P interface {
	*T
	api.Object
}](ctx context.Context, r client.Resource[T, P], ns, name string) ([]api.Object, error) {
	if name != "" {
		o, err := r.Get(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		return []api.Object{o}, nil
	}
	list, _, err := r.List(ctx, ns)
	if err != nil {
		return nil, err
	}
	out := make([]api.Object, len(list))
	for i, o := range list {
		out[i] = o
	}
	return out, nil
}

func cond(b bool, yes, no string) string {
	if b {
		return yes
	}
	return no
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func age(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := time.Since(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}

func portsOf(ps []api.Port) string {
	var out []string
	for _, p := range ps {
		s := fmt.Sprint(p.Container)
		if p.Host != 0 {
			s = fmt.Sprintf("%d:%d", p.Host, p.Container)
		}
		out = append(out, s)
	}
	return dash(strings.Join(out, ","))
}

// endpoints lists the addresses that receive each service's traffic (its
// running, healthy instances), keyed namespace/name/uid.
func endpoints(ctx context.Context, c *client.Client, ns string) (map[string][]string, error) {
	insts, _, err := c.Instances().List(ctx, ns)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, in := range insts {
		o := in.Spec.Owner
		if o.Kind != api.KindService || in.Status.Phase != api.PhaseRunning || !in.Status.Healthy || in.Status.IP == "" {
			continue
		}
		k := in.Metadata.Namespace + "/" + o.Name + "/" + o.UID
		out[k] = append(out[k], in.Status.IP)
	}
	for _, ips := range out {
		sort.Strings(ips)
	}
	return out, nil
}

// imageColumn shows an image reference pinned to a digest the way a
// person reads it: by its tag, and in wide output with the digest's first
// 12 hex digits too. JSON and YAML keep it whole.
func imageColumn(ref string, wide bool) string {
	name, digest, pinned := strings.Cut(ref, "@")
	if !pinned {
		return ref
	}
	hex := strings.TrimPrefix(digest, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	last := name[strings.LastIndex(name, "/")+1:]
	if !wide && strings.Contains(last, ":") {
		return name
	}
	return name + "@" + hex
}

// restartingIn says when a backing-off container starts again, if it is still to come.
func restartingIn(at time.Time) string {
	if d := time.Until(at); !at.IsZero() && d > 0 {
		return ", restarting in " + d.Round(100*time.Millisecond).String()
	}
	return ""
}
