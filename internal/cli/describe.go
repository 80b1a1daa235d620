package cli

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// describeEvents is how many of an object's latest events describe shows.
const describeEvents = 20

func newDescribeCmd(g *globals) *cobra.Command {
	kinds := []api.Kind{api.KindService, api.KindJob, api.KindInstance, api.KindNode, api.KindCronJob, api.KindConfig, api.KindSecret}
	return &cobra.Command{
		Use:   "describe [KIND/]NAME...",
		Short: "Show a service, job, instance, node, cron job, config or secret: its instances, recent events, and why it is not ready",
		Long: `Show a service, job, instance or node in full: its spec, its instances
(with each one's node, phase, restarts and PID), its recent events, and,
when it is not ready, why: an instance unhealthy, pending because no node
fits, or crashing and waiting to be started again.

A cron job shows its schedule, when it last ran and runs next, and its
runs; a config or secret its keys and sizes (never a secret's values) and
the services and jobs that use it.`,
		Example:           "  berth describe web\n  berth describe job/tests\n  berth describe node/n1\n  berth describe cronjob/nightly\n  berth describe secret/db",
		Args:              cobra.MinimumNArgs(1),
		ValidArgsFunction: g.completeNames(kinds...),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			c, err := g.client(ctx)
			if err != nil {
				return err
			}
			for i, a := range args {
				r, err := g.resolve(ctx, c, a, kinds...)
				if err != nil {
					return err
				}
				if i > 0 {
					fmt.Fprintln(cmd.OutOrStdout())
				}
				if err := describeObject(ctx, c, cmd.OutOrStdout(), r); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

func describeObject(ctx context.Context, c *client.Client, w io.Writer, r objRef) error {
	obj, err := getObject(ctx, c, r.kind, r.namespace, r.name)
	if err != nil {
		return describeErr(err)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	defer tw.Flush()
	m := obj.GetMetadata()
	field := func(k, format string, a ...any) { fmt.Fprintf(tw, "%s:\t"+format+"\n", append([]any{k}, a...)...) }
	field("Name", "%s", m.Name)
	field("Kind", "%s", r.kind)
	if r.kind.Namespaced() {
		field("Namespace", "%s", m.Namespace)
	}
	field("Labels", "%s", labelsColumn(m.Labels))
	field("Created", "%s (%s ago)", m.CreatedAt.Local().Format(time.RFC3339), age(m.CreatedAt))
	insts, err := instancesOf(ctx, c, r, obj)
	if err != nil {
		return err
	}
	events, err := eventsAbout(ctx, c, r, insts)
	if err != nil {
		return err
	}

	var notReady []string
	switch x := obj.(type) {
	case *api.Service:
		notReady = describeService(field, x, insts, events)
	case *api.Job:
		describeTemplate(field, x.Spec.Template)
		field("Phase", "%s", dash(string(x.Status.Phase)))
		field("Completions", "%d of %d succeeded, %d failed, %d active (parallelism %d, backoff limit %d)",
			x.Status.Succeeded, x.Spec.Completions, x.Status.Failed, x.Status.Active, x.Spec.Parallelism, x.Spec.BackoffLimit)
		if x.Status.Message != "" {
			field("Message", "%s", x.Status.Message)
		}
		if x.Status.Phase != api.JobSucceeded {
			notReady = instanceProblems(insts, events)
		}
	case *api.Instance:
		describeInstance(tw, field, x)
		notReady = instanceProblems(insts, events)
	case *api.CronJob:
		if err := describeCronJob(ctx, c, tw, field, x); err != nil {
			return err
		}
	case *api.Config:
		keys := map[string]int{}
		for k, v := range x.Data {
			keys[k] = len(v)
		}
		if err := describeData(ctx, c, tw, field, api.KindConfig, m, keys, x.Digest); err != nil {
			return err
		}
	case *api.Secret:
		if err := describeData(ctx, c, tw, field, api.KindSecret, m, x.Keys, x.Digest); err != nil {
			return err
		}
	case *api.Node:
		notReady = describeNode(field, x)
	}
	describeState(tw, r.kind, notReady, insts, events)
	return nil
}

// describeState writes why the object is not ready, its instances (of a
// service, job or node) and the events about it.
func describeState(tw *tabwriter.Writer, kind api.Kind, notReady []string, insts []*api.Instance, events []*api.Event) {
	if len(notReady) > 0 {
		fmt.Fprintln(tw, "Not ready:")
		for _, s := range notReady {
			fmt.Fprintf(tw, "  %s\n", s)
		}
	}
	if kind == api.KindService || kind == api.KindJob || kind == api.KindNode {
		printInstances(tw, insts)
	}
	fmt.Fprintln(tw, "\nEvents:")
	if len(events) == 0 {
		fmt.Fprintln(tw, "  none")
		return
	}
	fmt.Fprintln(tw, "  TIME\tTYPE\tOBJECT\tREASON\tMESSAGE")
	for _, e := range events {
		fmt.Fprint(tw, "  ")
		printEventLine(tw, e)
	}
}

// instancesOf lists the instances that belong to obj, by name: a
// service's or job's (of this object, by UID), a node's, or the
// instance itself.
func instancesOf(ctx context.Context, c *client.Client, r objRef, obj api.Object) ([]*api.Instance, error) {
	var insts []*api.Instance
	switch r.kind {
	case api.KindService, api.KindJob, api.KindNode:
		list, _, err := c.Instances().List(ctx, cond(r.kind == api.KindNode, "", r.namespace))
		if err != nil {
			return nil, err
		}
		uid := obj.GetMetadata().UID
		for _, in := range list {
			if r.kind == api.KindNode && in.Spec.Node == r.name ||
				r.kind != api.KindNode && in.Spec.Owner.Kind == r.kind && in.Spec.Owner.Name == r.name && in.Spec.Owner.UID == uid {
				insts = append(insts, in)
			}
		}
	case api.KindInstance:
		insts = []*api.Instance{obj.(*api.Instance)}
	}
	sort.Slice(insts, func(i, j int) bool { return insts[i].Metadata.Name < insts[j].Metadata.Name })
	return insts, nil
}

// describeService writes a service's fields and returns why it is not
// ready, if it is not.
func describeService(field func(k, format string, a ...any), x *api.Service, insts []*api.Instance, events []*api.Event) (notReady []string) {
	m := &x.Metadata
	describeTemplate(field, x.Spec.Template)
	want := x.Spec.Replicas
	if x.Spec.Mode == api.ModeGlobal {
		// One per eligible node: the controller's count is the desired one.
		want = x.Status.Replicas
		field("Mode", "global (one instance on every eligible node)")
		field("Replicas", "%d eligible nodes, %d ready, %d updated", want, x.Status.ReadyReplicas, x.Status.UpdatedReplicas)
	} else {
		field("Replicas", "%d desired, %d ready, %d updated", x.Spec.Replicas, x.Status.ReadyReplicas, x.Status.UpdatedReplicas)
	}
	if x.Spec.RollOnChange {
		field("Roll on change", "yes (of its configs and secrets)")
	}
	field("Address", "%s (%s.%s.berth)", dash(x.Status.VIP), m.Name, m.Namespace)
	if len(x.Spec.Aliases) > 0 {
		field("Aliases", "%s", strings.Join(x.Spec.Aliases, ", "))
	}
	field("Ports", "%s", portsOf(x.Spec.Template.Ports))
	if x.Status.Message != "" {
		field("Message", "%s", x.Status.Message)
	}
	if x.Status.ReadyReplicas < want {
		notReady = append(notReady, fmt.Sprintf("%d of %d replicas ready", x.Status.ReadyReplicas, want))
	}
	return append(notReady, instanceProblems(insts, events)...)
}

// describeInstance writes an instance's fields and its containers'.
func describeInstance(tw io.Writer, field func(k, format string, a ...any), x *api.Instance) {
	describeTemplate(field, *cmp.Or(x.Spec.Template, new(api.Template)))
	field("Owner", "%s/%s", strings.ToLower(string(x.Spec.Owner.Kind)), x.Spec.Owner.Name)
	field("Node", "%s", dash(x.Spec.Node))
	field("Phase", "%s", dash(phaseColumn(x)))
	field("Healthy", "%s", healthyColumn(x))
	field("Restarts", "%d", x.Status.Restarts)
	field("Container", "%s", dash(x.Status.ContainerID))
	field("PID", "%s", pidColumn(x))
	field("IP", "%s", dash(x.Status.IP))
	if x.Status.Phase == api.PhaseFailed || x.Status.Phase == api.PhaseSucceeded {
		field("Exit code", "%d", x.Status.ExitCode)
	}
	if x.Status.Message != "" {
		field("Message", "%s", x.Status.Message)
	}
	if len(x.Status.Containers) > 0 {
		fmt.Fprintln(tw, "Containers:")
		fmt.Fprintln(tw, "  NAME\tROLE\tSTATE\tHEALTHY\tRESTARTS\tEXIT\tREASON")
		for _, cs := range x.Status.Containers {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\n", cs.Name, containerRole(cs.Init, cs.Sidecar), cs.State,
				cond(cs.Healthy, "yes", "no"), cs.Restarts, cond(cs.State == api.ContainerTerminated, fmt.Sprint(cs.ExitCode), "-"), dash(cs.Reason))
		}
	}
}

// describeNode writes a node's fields and returns why it is not ready.
func describeNode(field func(k, format string, a ...any), x *api.Node) (notReady []string) {
	field("Status", "%s", dash(string(x.Status.Condition)))
	field("Scheduling", "%s", scheduling(x))
	field("Address", "%s", dash(x.Spec.Address))
	field("Capacity", "%d CPUs, %s memory, %d pids", x.Spec.Capacity.MilliCPU/1000, x.Spec.Capacity.Memory, x.Spec.Capacity.Pids)
	field("Pod subnet", "%s", dash(x.Spec.PodSubnet))
	field("Heartbeat", "%s ago", age(x.Status.LastHeartbeat))
	if x.Status.Condition != api.NodeReady {
		notReady = append(notReady, "node is "+dash(string(x.Status.Condition))+cond(x.Status.Message != "", ": "+x.Status.Message, ""))
	}
	return notReady
}

// printInstances writes the table of a service's, job's or node's instances.
func printInstances(tw io.Writer, insts []*api.Instance) {
	fmt.Fprintln(tw, "\nInstances:")
	if len(insts) == 0 {
		fmt.Fprintln(tw, "  none")
		return
	}
	fmt.Fprintln(tw, "  NAME\tNODE\tPHASE\tHEALTHY\tRESTARTS\tPID\tIP\tAGE\tMESSAGE")
	for _, in := range insts {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", in.Metadata.Name, dash(in.Spec.Node), dash(phaseColumn(in)),
			healthyColumn(in), in.Status.Restarts, pidColumn(in), dash(in.Status.IP), age(in.Metadata.CreatedAt), in.Status.Message)
	}
}

func describeTemplate(field func(k, format string, a ...any), t api.Template) {
	field("Image", "%s", t.Image)
	if len(t.Command)+len(t.Args) > 0 {
		field("Command", "%s", strings.Join(append(slices.Clone(t.Command), t.Args...), " "))
	}
	if len(t.Env) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(t.Env)) {
			kv = append(kv, k+"="+t.Env[k])
		}
		field("Env", "%s", strings.Join(kv, " "))
	}
	res := t.Resources
	mem := "-"
	if res.Memory != 0 {
		mem = res.Memory.String()
	}
	field("Resources", "cpu %s, memory %s, pids %s", dashNum(res.CPU), mem, dashNum(float64(res.Pids)))
	field("Restart", "%s", dash(string(t.Restart)))
	if h := t.Health; h != nil {
		check := "exec " + strings.Join(func() []string {
			if h.Exec != nil {
				return h.Exec.Command
			}
			return nil
		}(), " ")
		switch {
		case h.HTTP != nil:
			check = fmt.Sprintf("http :%d%s", h.HTTP.Port, h.HTTP.Path)
		case h.TCP != nil:
			check = fmt.Sprintf("tcp :%d", h.TCP.Port)
		}
		line := fmt.Sprintf("%s every %s, %d failures", check, h.Interval, h.Failures)
		if h.StartPeriod > 0 {
			line += fmt.Sprintf(", start period %s", h.StartPeriod)
		}
		field("Health", "%s", line)
	}
	for _, c := range t.Containers {
		what := t.ContainerImage(&c)
		if len(c.Command)+len(c.Args) > 0 {
			what += " " + strings.Join(append(slices.Clone(c.Command), c.Args...), " ")
		}
		field("Container "+c.Name, "%s: %s", containerRole(c.Init, c.Sidecar), what)
	}
	if p := processSummary(t); p != "" {
		field("Process", "%s", p)
	}
}

// containerRole says what an instance's container is for.
func containerRole(init, sidecar bool) string {
	switch {
	case init:
		return "init"
	case sidecar:
		return "sidecar"
	}
	return "main"
}

// processSummary lists the process settings a template sets, empty when
// it sets none.
func processSummary(t api.Template) string {
	var out []string
	add := func(on bool, format string, a ...any) {
		if on {
			out = append(out, fmt.Sprintf(format, a...))
		}
	}
	add(t.User != "", "user %s", t.User)
	add(t.Hostname != "", "hostname %s", t.Hostname)
	add(len(t.CapAdd) > 0, "cap add %s", strings.Join(t.CapAdd, ","))
	add(len(t.CapDrop) > 0, "cap drop %s", strings.Join(t.CapDrop, ","))
	add(t.ReadOnly, "read-only root")
	for _, u := range t.Ulimits {
		add(true, "ulimit %s=%d:%d", u.Name, u.Soft, u.Hard)
	}
	for _, k := range slices.Sorted(maps.Keys(t.Sysctls)) {
		add(true, "sysctl %s=%s", k, t.Sysctls[k])
	}
	for _, h := range t.ExtraHosts {
		add(true, "host %s %s", h.IP, strings.Join(h.Hostnames, ","))
	}
	add(t.Init, "init")
	add(t.StopSignal != "", "stop signal %s", t.StopSignal)
	add(t.StopGrace != 0, "stop grace %s", t.StopGrace)
	return strings.Join(out, "; ")
}

func dashNum(f float64) string {
	if f == 0 {
		return "-"
	}
	return fmt.Sprint(f)
}

// instanceProblems says, for each instance that is not running healthily,
// why: pending and why no node takes it, unhealthy, or waiting to be
// started again after its container ended.
func instanceProblems(insts []*api.Instance, events []*api.Event) []string {
	lastWarning := map[string]*api.Event{}
	for _, e := range events {
		if e.Object.Kind == api.KindInstance && e.Type == api.EventWarning {
			lastWarning[e.Object.Name] = e
		}
	}
	var out []string
	for _, in := range insts {
		st := in.Status
		var why string
		switch {
		case st.Phase == api.PhaseRunning && st.Healthy:
			continue
		case st.Phase == api.PhaseSucceeded:
			continue
		case st.Phase == api.PhaseRunning:
			why = "running, not healthy (its health check has not passed)"
		case st.Phase == "" || st.Phase == api.PhasePending:
			why = "pending: not placed on a node yet"
			if e := lastWarning[in.Metadata.Name]; e != nil && e.Reason == "Unschedulable" && st.Message == "" {
				why = "pending, unschedulable: " + e.Message
			} else if st.Message != "" {
				why = "pending"
			}
		default:
			why = strings.ToLower(phaseColumn(in))
			if st.Phase == api.PhaseFailed || st.Phase == api.PhaseLost {
				why += fmt.Sprintf(", exit code %d", st.ExitCode)
			}
			if st.Restarts > 0 {
				why += fmt.Sprintf(", %d restarts", st.Restarts)
			}
		}
		if st.Message != "" {
			why += ": " + st.Message
		}
		out = append(out, in.Metadata.Name+": "+why)
	}
	return out
}

// eventsAbout lists the latest events about the object r names and its
// instances, oldest first.
func eventsAbout(ctx context.Context, c *client.Client, r objRef, insts []*api.Instance) ([]*api.Event, error) {
	list, _, err := c.Events().List(ctx, cond(r.kind == api.KindNode, "", r.namespace))
	if err != nil {
		return nil, err
	}
	names := map[string]bool{}
	for _, in := range insts {
		names[in.Metadata.Namespace+"/"+in.Metadata.Name] = true
	}
	var out []*api.Event
	for _, e := range list {
		o := e.Object
		if o.Kind == r.kind && o.Name == r.name && (!r.kind.Namespaced() || o.Namespace == r.namespace) ||
			o.Kind == api.KindInstance && names[o.Namespace+"/"+o.Name] {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Time.Before(out[j].Time) })
	if len(out) > describeEvents {
		out = out[len(out)-describeEvents:]
	}
	return out, nil
}

// describeCronJob shows a cron job's schedule, its last and next times,
// and its runs (the jobs it made).
func describeCronJob(ctx context.Context, c *client.Client, tw io.Writer, field func(k, format string, a ...any), x *api.CronJob) error {
	sched := x.Spec.Schedule
	if x.Spec.TimeZone != "" {
		sched += " (" + x.Spec.TimeZone + ")"
	}
	field("Schedule", "%s", sched)
	field("Concurrency", "%s", cmp.Or(x.Spec.Concurrency, api.ConcurrencyAllow))
	if x.Spec.StartingDeadline > 0 {
		field("Starting deadline", "%s", x.Spec.StartingDeadline)
	}
	field("History", "%d succeeded, %d failed kept", cmp.Or(x.Spec.SuccessfulHistory, 3), cmp.Or(x.Spec.FailedHistory, 1))
	if x.Spec.Suspend {
		field("Suspended", "yes")
	}
	if t := x.Status.LastSchedule; !t.IsZero() {
		field("Last schedule", "%s (%s ago)", t.Local().Format(time.RFC3339), age(t))
	} else {
		field("Last schedule", "-")
	}
	if s, err := api.ParseSchedule(x.Spec.Schedule, x.Spec.TimeZone); err == nil && !x.Spec.Suspend {
		if next := s.Next(time.Now()); !next.IsZero() {
			field("Next schedule", "%s (in %s)", next.Local().Format(time.RFC3339), time.Until(next).Round(time.Second))
		}
	}
	field("Last run", "%s", dash(x.Status.LastRun))
	if x.Status.Message != "" {
		field("Message", "%s", x.Status.Message)
	}
	describeTemplate(field, x.Spec.Job.Template)
	jobs, _, err := c.Jobs().List(ctx, x.Metadata.Namespace)
	if err != nil {
		return err
	}
	fmt.Fprintln(tw, "\nRuns:")
	var runs []*api.Job
	for _, j := range jobs {
		if j.Metadata.Labels[api.LabelCronJob] == x.Metadata.Name {
			runs = append(runs, j)
		}
	}
	if len(runs) == 0 {
		fmt.Fprintln(tw, "  none")
		return nil
	}
	sort.Slice(runs, func(i, j int) bool { return runs[i].Metadata.CreatedAt.Before(runs[j].Metadata.CreatedAt) })
	fmt.Fprintln(tw, "  JOB\tPHASE\tSUCCEEDED\tFAILED\tAGE")
	for _, j := range runs {
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%s\n", j.Metadata.Name, dash(string(j.Status.Phase)), j.Status.Succeeded, j.Status.Failed, age(j.Metadata.CreatedAt))
	}
	return nil
}

// describeData shows a config's or secret's keys with their sizes (never
// their values) and the services and jobs of its namespace that use it.
func describeData(ctx context.Context, c *client.Client, tw io.Writer, field func(k, format string, a ...any), kind api.Kind, m *api.Metadata, keys map[string]int, digest string) error {
	field("Digest", "%s", dash(digest))
	fmt.Fprintln(tw, "Keys:")
	if len(keys) == 0 {
		fmt.Fprintln(tw, "  none")
	}
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		fmt.Fprintf(tw, "  %s\t%d bytes\n", k, keys[k])
	}
	svcs, _, err := c.Services().List(ctx, m.Namespace)
	if err != nil {
		return err
	}
	jobs, _, err := c.Jobs().List(ctx, m.Namespace)
	if err != nil {
		return err
	}
	var users []string
	for _, s := range svcs {
		if s.Spec.Template.UsesData(kind, m.Name) {
			users = append(users, "service/"+s.Metadata.Name+cond(s.Spec.RollOnChange, " (rolls on change)", ""))
		}
	}
	for _, j := range jobs {
		if j.Spec.Template.UsesData(kind, m.Name) {
			users = append(users, "job/"+j.Metadata.Name)
		}
	}
	fmt.Fprintln(tw, "Used by:")
	if len(users) == 0 {
		fmt.Fprintln(tw, "  none")
	}
	for _, u := range users {
		fmt.Fprintf(tw, "  %s\n", u)
	}
	return nil
}
