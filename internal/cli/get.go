package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strconv"
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
	"volume": api.KindVolume, "volumes": api.KindVolume, "vol": api.KindVolume,
	"config": api.KindConfig, "configs": api.KindConfig, "cfg": api.KindConfig,
	"secret": api.KindSecret, "secrets": api.KindSecret,
	"cronjob": api.KindCronJob, "cronjobs": api.KindCronJob, "cj": api.KindCronJob,
}

// getOptions is what get and ps print.
type getOptions struct {
	format     string
	kind       api.Kind
	namespace  string   // "" for every namespace
	names      []string // empty for a list
	liveOnly   bool     // instances: not the finished ones
	selector   api.Selector
	showLabels bool
}

func newGetCmd(g *globals) *cobra.Command {
	var selector string
	var watch, showLabels bool
	cmd := &cobra.Command{
		Use:   "get KIND [NAME...] | get KIND/NAME...",
		Short: "List or show services, jobs, instances, nodes or events",
		Long: `List or show services, jobs, instances, nodes or events.

Lists show the namespace -n names ("default" unless given), or every
namespace with -A. -o yaml and -o json print objects that 'berth apply -f'
takes back as they are.`,
		Example: `  berth get services
  berth get service web -o wide
  berth get service/web -o yaml > web.yaml && berth apply -f web.yaml
  berth get services -l tier=front,env!=dev --show-labels
  berth get instances -A -w`,
		Args: cobra.MinimumNArgs(1),
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 0 && !strings.Contains(toComplete, "/") {
				return []string{"services", "jobs", "instances", "nodes", "events"}, cobra.ShellCompDirectiveNoFileComp
			}
			if len(args) == 0 {
				return g.completeNames(api.KindService, api.KindJob, api.KindInstance, api.KindNode)(cmd, args, toComplete)
			}
			if kind, ok := kindAliases[strings.ToLower(args[0])]; ok {
				return g.completeNames(kind)(cmd, args, toComplete)
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			o := getOptions{format: g.output, showLabels: showLabels}
			var err error
			if o.selector, err = api.ParseSelector(selector); err != nil {
				return fmt.Errorf("--selector: %w", err)
			}
			if err := g.getTargets(&o, args); err != nil {
				return err
			}
			if !o.kind.Namespaced() {
				o.namespace = ""
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			if watch {
				return watchObjects(cmd.Context(), c, cmd.OutOrStdout(), o)
			}
			return get(cmd.Context(), c, cmd.OutOrStdout(), o)
		},
	}
	addListFlags(cmd, g)
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only objects whose labels match: key=value, key!=value, comma-separated (all must hold)")
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "after the list, keep printing objects as they change")
	cmd.Flags().BoolVar(&showLabels, "show-labels", false, "add a LABELS column")
	return cmd
}

// getTargets fills o's kind, namespace and names from get's arguments:
// KIND/NAME..., of one kind and namespace, or KIND [NAME...].
func (g *globals) getTargets(o *getOptions, args []string) error {
	var err error
	if strings.Contains(args[0], "/") {
		// get service/web job/tests: one kind at a time.
		for _, a := range args {
			r, err := g.parseRef(a)
			if err != nil {
				return err
			}
			if r.kind == "" {
				return fmt.Errorf("%q: want KIND/NAME, e.g. service/web", a)
			}
			if o.kind != "" && (r.kind != o.kind || r.namespace != o.namespace) {
				return fmt.Errorf("%q: give names of one kind and namespace at a time", a)
			}
			o.kind, o.namespace = r.kind, r.namespace
			o.names = append(o.names, r.name)
		}
	} else {
		kind, ok := kindAliases[strings.ToLower(args[0])]
		if !ok {
			return fmt.Errorf("unknown kind %q: want services, jobs, instances, nodes or events", args[0])
		}
		o.kind = kind
		if o.namespace, err = g.listNamespace(); err != nil {
			return err
		}
		for _, a := range args[1:] {
			r, err := g.parseRef(strings.ToLower(string(kind)) + "/" + a)
			if err != nil {
				return err
			}
			if len(o.names) > 0 && r.namespace != o.namespace {
				return fmt.Errorf("%q: give names of one namespace at a time", a)
			}
			o.namespace = r.namespace
			o.names = append(o.names, r.name)
		}
	}
	return nil
}

func newPsCmd(g *globals) *cobra.Command {
	var all bool
	var selector string
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List instances (running and starting; -a for finished ones too)",
		Long: `List instances: running and starting ones, and with -a finished ones too.

-o wide adds each instance's image, container, address and PID: the
container's main process on its node, to kill to see it healed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o := getOptions{format: g.output, kind: api.KindInstance, liveOnly: !all}
			var err error
			if o.selector, err = api.ParseSelector(selector); err != nil {
				return fmt.Errorf("--selector: %w", err)
			}
			if o.namespace, err = g.listNamespace(); err != nil {
				return err
			}
			c, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			return get(cmd.Context(), c, cmd.OutOrStdout(), o)
		},
	}
	addListFlags(cmd, g)
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show finished instances too")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "only instances whose labels match, e.g. berth.owner=web (see get -l)")
	return cmd
}

// fetchObjects reads what o names: its objects, or the list, filtered.
func fetchObjects(ctx context.Context, c *client.Client, o getOptions) ([]api.Object, int64, error) {
	var objs []api.Object
	var rev int64
	if len(o.names) > 0 {
		for _, n := range o.names {
			obj, err := getObject(ctx, c, o.kind, o.namespace, n)
			if err != nil {
				return nil, 0, err
			}
			objs = append(objs, obj)
		}
	} else {
		var err error
		if objs, rev, err = listObjectsAt(ctx, c, o.kind, o.namespace); err != nil {
			return nil, 0, err
		}
	}
	kept := objs[:0]
	for _, obj := range objs {
		if o.keep(obj) {
			kept = append(kept, obj)
		}
	}
	return kept, rev, nil
}

// keep says whether o shows obj.
func (o getOptions) keep(obj api.Object) bool {
	if in, ok := obj.(*api.Instance); ok && o.liveOnly && in.Status.Phase.Terminal() {
		return false
	}
	return o.selector.Matches(obj.GetMetadata().Labels)
}

func get(ctx context.Context, c *client.Client, w io.Writer, o getOptions) error {
	if err := checkFormat(o.format); err != nil {
		return err
	}
	objs, _, err := fetchObjects(ctx, c, o)
	if err != nil {
		return err
	}
	if o.format == "json" || o.format == "yaml" {
		return printObjects(w, o.format, objs, len(o.names) == 1)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	if err := printTable(ctx, c, tw, o, objs, true); err != nil {
		return err
	}
	if o.kind == api.KindJob && len(o.names) == 1 && len(objs) == 1 {
		printJobIndexes(tw, objs[0].(*api.Job))
	}
	return nil
}

func checkFormat(f string) error {
	switch f {
	case "", "table", "wide", "json", "yaml":
		return nil
	}
	return fmt.Errorf("--output %q: want table, wide, json or yaml", f)
}

// printObjects prints objects as 'berth apply -f' takes them back: each
// with its kind. One object alone is printed as itself; several as a
// JSON array, or as YAML documents separated by "---".
func printObjects(w io.Writer, format string, objs []api.Object, one bool) error {
	docs := make([]json.RawMessage, len(objs))
	for i, obj := range objs {
		b, err := withKind(obj)
		if err != nil {
			return err
		}
		docs[i] = b
	}
	switch {
	case format == "json" && one && len(docs) == 1:
		return printOut(w, "json", docs[0], nil)
	case format == "json":
		return printOut(w, "json", docs, nil)
	}
	for i, d := range docs {
		if i > 0 {
			if _, err := io.WriteString(w, "---\n"); err != nil {
				return err
			}
		}
		if err := printOut(w, "yaml", d, nil); err != nil {
			return err
		}
	}
	return nil
}

// withKind is obj as JSON with its kind at the top, where spec files
// have it.
func withKind(obj api.Object) (json.RawMessage, error) {
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", api.RefOf(obj), err)
	}
	kind, _ := json.Marshal(obj.GetKind())
	out := append([]byte(`{"kind":`), kind...)
	if len(b) > 2 {
		out = append(out, ',')
	}
	return append(out, b[1:]...), nil
}

// printTable prints objs as table rows, with the header when asked.
func printTable(ctx context.Context, c *client.Client, tw *tabwriter.Writer, o getOptions, objs []api.Object, header bool) error {
	if o.kind == api.KindEvent {
		if header {
			printEvents(tw, objs)
			return nil
		}
		for _, obj := range objs {
			printEventLine(tw, obj.(*api.Event))
		}
		return nil
	}
	wide := o.format == "wide"
	head, ok := tableHeader(o.kind, wide)
	if !ok {
		return nil
	}
	var eps map[string][]string
	if o.kind == api.KindService && wide {
		var err error
		if eps, err = endpoints(ctx, c, o.namespace); err != nil {
			return err
		}
	}
	if header {
		fmt.Fprintln(tw, head+cond(o.showLabels, "\tLABELS", ""))
	}
	for _, obj := range objs {
		printRow(tw, obj, wide, eps)
		if o.showLabels {
			fmt.Fprintf(tw, "\t%s", labelsColumn(obj.GetMetadata().Labels))
		}
		fmt.Fprintln(tw)
	}
	return nil
}

// tableHeader is the header of a kind's table; false for a kind with none.
func tableHeader(kind api.Kind, wide bool) (string, bool) {
	switch kind {
	case api.KindService:
		return "NAMESPACE\tNAME\tREADY\tUPDATED\tIMAGE\tAGE" + cond(wide, "\tROLLOUT\tVIP\tDNS\tPORTS\tENDPOINTS", ""), true
	case api.KindJob:
		return "NAMESPACE\tNAME\tPHASE\tSUCCEEDED\tFAILED\tACTIVE\tAGE", true
	case api.KindInstance:
		return "NAMESPACE\tNAME\tOWNER\tNODE\tPHASE\tHEALTHY\tRESTARTS\tAGE" + cond(wide, "\tIMAGE\tCONTAINER\tPID\tIP\tMESSAGE", ""), true
	case api.KindNode:
		return "NAME\tSTATUS\tCPUS\tMEMORY\tADDRESS\tAGE", true
	case api.KindVolume:
		return "NAMESPACE\tNAME\tNODE\tAGE", true
	case api.KindCronJob:
		return "NAMESPACE\tNAME\tSCHEDULE\tLAST RUN\tACTIVE\tAGE", true
	case api.KindConfig, api.KindSecret:
		return "NAMESPACE\tNAME\tKEYS\tDIGEST\tAGE", true
	}
	return "", false
}

// printRow prints obj's columns of its kind's table, without the line's
// end; eps are the services' endpoints, for the wide table.
func printRow(tw *tabwriter.Writer, obj api.Object, wide bool, eps map[string][]string) {
	switch x := obj.(type) {
	case *api.Service:
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%d\t%s\t%s", x.Metadata.Namespace, x.Metadata.Name, x.Status.ReadyReplicas, x.Spec.Replicas,
			x.Status.UpdatedReplicas, imageColumn(x.Spec.Template.Image, wide), age(x.Metadata.CreatedAt))
		if wide {
			ep := eps[x.Metadata.Namespace+"/"+x.Metadata.Name+"/"+x.Metadata.UID]
			fmt.Fprintf(tw, "\t%s\t%s\t%s.%s.berth\t%s\t%s", dash(string(x.Status.Rollout.Phase)), dash(x.Status.VIP), x.Metadata.Name, x.Metadata.Namespace,
				portsOf(x.Spec.Template.Ports), dash(strings.Join(ep, ",")))
		}
	case *api.Job:
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d\t%d\t%d\t%s", x.Metadata.Namespace, x.Metadata.Name, dash(string(x.Status.Phase)),
			x.Status.Succeeded, x.Spec.Completions, x.Status.Failed, x.Status.Active, age(x.Metadata.CreatedAt))
	case *api.Instance:
		fmt.Fprintf(tw, "%s\t%s\t%s/%s\t%s\t%s\t%s\t%d\t%s", x.Metadata.Namespace, x.Metadata.Name,
			strings.ToLower(string(x.Spec.Owner.Kind)), x.Spec.Owner.Name, dash(x.Spec.Node), dash(phaseColumn(x)), healthyColumn(x),
			x.Status.Restarts, age(x.Metadata.CreatedAt))
		if wide {
			fmt.Fprintf(tw, "\t%s\t%s\t%s\t%s\t%s", imageColumn(x.Spec.Template.Image, true), dash(x.Status.ContainerID),
				pidColumn(x), dash(x.Status.IP), x.Status.Message)
		}
	case *api.Node:
		status := string(x.Status.Condition)
		if x.Spec.Unschedulable {
			status += ",SchedulingDisabled"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s", x.Metadata.Name, dash(status), x.Spec.Capacity.MilliCPU/1000,
			x.Spec.Capacity.Memory, dash(x.Spec.Address), age(x.Metadata.CreatedAt))
	case *api.Volume:
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s", x.Metadata.Namespace, x.Metadata.Name, dash(x.Spec.Node), age(x.Metadata.CreatedAt))
	case *api.CronJob:
		sched := x.Spec.Schedule
		if x.Spec.TimeZone != "" {
			sched += " " + x.Spec.TimeZone
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s", x.Metadata.Namespace, x.Metadata.Name, sched, dash(x.Status.LastRun),
			len(x.Status.Active), age(x.Metadata.CreatedAt))
	case *api.Config:
		keys := map[string]int{}
		for k, v := range x.Data {
			keys[k] = len(v)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", x.Metadata.Namespace, x.Metadata.Name, dataKeys(keys), dash(x.Digest), age(x.Metadata.CreatedAt))
	case *api.Secret:
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s", x.Metadata.Namespace, x.Metadata.Name, dataKeys(x.Keys), dash(x.Digest), age(x.Metadata.CreatedAt))
	}
}

func printJobIndexes(tw *tabwriter.Writer, j *api.Job) {
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

func phaseColumn(in *api.Instance) string {
	phase := string(in.Status.Phase)
	if in.Status.Reason != "" && in.Status.Phase != api.PhaseRunning {
		phase += " (" + in.Status.Reason + restartingIn(in.Status.RestartAt) + ")"
	}
	return phase
}

func healthyColumn(in *api.Instance) string {
	if in.Status.Phase == api.PhaseRunning {
		return fmt.Sprint(in.Status.Healthy)
	}
	return "-"
}

// pidColumn is the container's main process while it runs.
func pidColumn(in *api.Instance) string {
	if in.Status.Phase != api.PhaseRunning || in.Status.Pid == 0 {
		return "-"
	}
	return strconv.Itoa(in.Status.Pid)
}

func labelsColumn(labels map[string]string) string {
	var kv []string
	for _, k := range slices.Sorted(maps.Keys(labels)) {
		kv = append(kv, k+"="+labels[k])
	}
	return dash(strings.Join(kv, ","))
}

// watchObjects prints what o lists, then each object again as it
// changes (deleted ones with their last state), until ctx ends.
func watchObjects(ctx context.Context, c *client.Client, w io.Writer, o getOptions) error {
	if err := checkFormat(o.format); err != nil {
		return err
	}
	objs, rev, err := fetchObjects(ctx, c, o)
	if err != nil {
		return err
	}
	if len(o.names) > 0 {
		// Watch from the newest revision of the objects read.
		for _, obj := range objs {
			rev = max(rev, obj.GetMetadata().Revision)
		}
	}
	structured := o.format == "json" || o.format == "yaml"
	print := func(objs []api.Object, header bool) error {
		if structured {
			for _, obj := range objs {
				if o.format == "yaml" && !header {
					if _, err := io.WriteString(w, "---\n"); err != nil {
						return err
					}
				}
				if err := printObjects(w, o.format, []api.Object{obj}, true); err != nil {
					return err
				}
				header = false
			}
			return nil
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		defer tw.Flush()
		return printTable(ctx, c, tw, o, objs, header)
	}
	if err := print(objs, true); err != nil {
		return err
	}
	if f, ok := w.(interface{ Sync() error }); ok {
		_ = f.Sync()
	}
	changes, err := watchKind(ctx, c, o.kind, o.namespace, rev)
	if err != nil {
		return err
	}
	header := structured && len(objs) == 0
	for ch := range changes {
		if ch.err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return ch.err
		}
		if len(o.names) > 0 && !slices.Contains(o.names, ch.obj.GetMetadata().Name) {
			continue
		}
		if !o.keep(ch.obj) && ch.typ != "Deleted" {
			continue
		}
		if err := print([]api.Object{ch.obj}, header); err != nil {
			return err
		}
		header = false
	}
	return nil
}

// change is one watch event of any kind.
type change struct {
	typ string
	obj api.Object
	err error
}

// watchKind watches objects of kind after rev, as changes of any kind.
func watchKind(ctx context.Context, c *client.Client, kind api.Kind, ns string, rev int64) (<-chan change, error) {
	switch kind {
	case api.KindService:
		return relay(c.Services().Watch(ctx, ns, rev))
	case api.KindJob:
		return relay(c.Jobs().Watch(ctx, ns, rev))
	case api.KindInstance:
		return relay(c.Instances().Watch(ctx, ns, rev))
	case api.KindNode:
		return relay(c.Nodes().Watch(ctx, "", rev))
	case api.KindEvent:
		return relay(c.Events().Watch(ctx, ns, rev))
	case api.KindVolume:
		return relay(c.Volumes().Watch(ctx, ns, rev))
	case api.KindConfig:
		return relay(c.Configs().Watch(ctx, ns, rev))
	case api.KindCronJob:
		return relay(c.CronJobs().Watch(ctx, ns, rev))
	}
	return nil, fmt.Errorf("unknown kind %q", kind)
}

func relay[P api.Object](in <-chan client.WatchEvent[P], err error) (<-chan change, error) {
	if err != nil {
		return nil, err
	}
	out := make(chan change)
	go func() {
		defer close(out)
		for ev := range in {
			out <- change{typ: ev.Type, obj: ev.Object, err: ev.Err}
		}
	}()
	return out, nil
}

// listObjects lists objects of any kind in ns (every namespace when "").
func listObjects(ctx context.Context, c *client.Client, kind api.Kind, ns string) ([]api.Object, error) {
	objs, _, err := listObjectsAt(ctx, c, kind, ns)
	return objs, err
}

// listObjectsAt is listObjects and the revision the list was read at.
func listObjectsAt(ctx context.Context, c *client.Client, kind api.Kind, ns string) ([]api.Object, int64, error) {
	switch kind {
	case api.KindService:
		return list(ctx, c.Services().Resource, ns)
	case api.KindJob:
		return list(ctx, c.Jobs().Resource, ns)
	case api.KindInstance:
		return list(ctx, c.Instances().Resource, ns)
	case api.KindNode:
		return list(ctx, c.Nodes().Resource, "")
	case api.KindEvent:
		return list(ctx, c.Events().Resource, ns)
	case api.KindVolume:
		return list(ctx, c.Volumes(), ns)
	case api.KindConfig:
		return list(ctx, c.Configs(), ns)
	case api.KindSecret:
		return list(ctx, c.Secrets(), ns)
	case api.KindCronJob:
		return list(ctx, c.CronJobs().Resource, ns)
	}
	return nil, 0, fmt.Errorf("unknown kind %q", kind)
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

// list lists a resource's objects as api.Objects.
func list[T any, P interface {
	*T
	api.Object
}](ctx context.Context, r client.Resource[T, P], ns string) ([]api.Object, int64, error) {
	items, rev, err := r.List(ctx, ns)
	if err != nil {
		return nil, 0, err
	}
	out := make([]api.Object, len(items))
	for i, o := range items {
		out[i] = o
	}
	return out, rev, nil
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
