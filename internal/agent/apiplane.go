package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/runtime"
)

// APIPlane is the ControlPlane of a berth API server, reached with its Go client.
type APIPlane struct {
	c *client.Client
	// interval is the heartbeat interval the server last gave (a
	// time.Duration).
	interval atomic.Int64
}

var _ ControlPlane = (*APIPlane)(nil)

// NewAPIPlane uses c for everything the agent asks of the control plane.
func NewAPIPlane(c *client.Client) *APIPlane { return &APIPlane{c: c} }

// RegisterNode writes the node's spec (creating it the first time) and marks it Ready.
func (p *APIPlane) RegisterNode(ctx context.Context, n NodeInfo) error {
	for attempt := 0; ; attempt++ {
		err := p.register(ctx, n)
		// A conflict: the node changed between our read and our write (an
		// admin's cordon, the pod subnet given); read it again.
		if errdefs.IsConflict(err) && attempt < 4 {
			continue
		}
		if err != nil {
			return err
		}
		return p.Heartbeat(ctx, n.Name)
	}
}

// register writes the node's spec once, on the revision it read.
func (p *APIPlane) register(ctx context.Context, n NodeInfo) error {
	node := &api.Node{
		Metadata: api.Metadata{Name: n.Name, Labels: reportedLabels(n.Labels)},
		Spec: api.NodeSpec{
			Address: n.Address,
			Capacity: api.NodeCapacity{MilliCPU: n.Capacity.MilliCPU, Memory: api.Quantity(n.Capacity.MemoryBytes),
				Pids: n.Capacity.Pids},
		},
	}
	for _, c := range n.Topology.Cores {
		node.Spec.Topology.Cores = append(node.Spec.Topology.Cores, api.CPUCore{ID: c.ID, NUMA: c.NUMA, Threads: c.Threads})
	}
	// Keep what the server and admins own (the pod subnet, a cordon or
	// drain, the capacity limit, their labels) when the node exists: the
	// server refuses a node's write that changes them.
	if cur, err := p.c.Nodes().Get(ctx, "", n.Name); err == nil {
		node.Metadata.Revision = cur.Metadata.Revision
		node.Spec.PodSubnet, node.Spec.Unschedulable, node.Spec.Draining = cur.Spec.PodSubnet, cur.Spec.Unschedulable, cur.Spec.Draining
		node.Spec.DrainMigrate = cur.Spec.DrainMigrate
		node.Spec.CapacityLimit = cur.Spec.CapacityLimit
		for k, v := range cur.Metadata.Labels {
			if !strings.HasPrefix(k, api.NodeReportedLabelPrefix) {
				if node.Metadata.Labels == nil {
					node.Metadata.Labels = map[string]string{}
				}
				node.Metadata.Labels[k] = v
			}
		}
	} else if !errdefs.IsNotFound(err) {
		return err
	}
	_, err := p.c.Nodes().Apply(ctx, node)
	return err
}

// reportedLabels are the labels an agent reports, each under the
// node.berth/ prefix: the labels placement trusts without it are admins'.
func reportedLabels(labels map[string]string) map[string]string {
	if len(labels) == 0 {
		return nil
	}
	out := make(map[string]string, len(labels))
	for k, v := range labels {
		if !strings.HasPrefix(k, api.NodeReportedLabelPrefix) {
			k = api.NodeReportedLabelPrefix + k
		}
		out[k] = v
	}
	return out
}

// Heartbeat writes the node's status: Ready, as of now.
func (p *APIPlane) Heartbeat(ctx context.Context, node string) error {
	next, err := p.c.Nodes().Heartbeat(ctx, node, time.Now().UTC())
	if err == nil && next > 0 {
		p.interval.Store(int64(next))
	}
	return err
}

var _ HeartbeatPacer = (*APIPlane)(nil)

// HeartbeatInterval is the pace the server last asked of the node's
// heartbeats; zero before it has said.
func (p *APIPlane) HeartbeatInterval() time.Duration { return time.Duration(p.interval.Load()) }

// WatchAssigned lists the node's assignments, then follows changes; when
// the watch breaks it returns, and the agent lists again. The list carries
// each instance's latest status (the container and health it last
// reported), which a restarted agent takes over.
func (p *APIPlane) WatchAssigned(ctx context.Context, node string, ch chan<- []Assignment) error {
	insts, rev, err := p.c.Nodes().Assignments(ctx, node)
	if err != nil {
		return err
	}
	batch := make([]Assignment, 0, len(insts)+1)
	for _, in := range insts {
		if a, ok := assignmentOf(in); ok {
			batch = append(batch, a)
		}
	}
	batch = append(batch, Resync)
	select {
	case ch <- batch:
	case <-ctx.Done():
		return ctx.Err()
	}
	events, err := p.c.Nodes().WatchAssignments(ctx, node, rev)
	if err != nil {
		return err
	}
	for ev := range events {
		if ev.Err != nil {
			return ev.Err
		}
		var a Assignment
		switch {
		case ev.Type == "Deleted":
			a = Assignment{Deleted: ev.Object.Metadata.UID}
		default:
			var ok bool
			if a, ok = assignmentOf(ev.Object); !ok {
				a = Assignment{Deleted: ev.Object.Metadata.UID}
			}
		}
		select {
		case ch <- []Assignment{a}:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("assignment watch closed")
}

// assignmentOf turns an assigned instance into what the agent runs; a
// Lost instance (its node was given up on) is not to run here any more.
func assignmentOf(in *api.Instance) (Assignment, bool) {
	if in.Status.Phase == api.PhaseLost {
		return Assignment{}, false
	}
	return Assignment{Instance: InstanceFromAPI(in)}, true
}

// InstanceFromAPI is the agent's view of an API instance.
func InstanceFromAPI(in *api.Instance) *Instance {
	t := in.Spec.Template
	if t == nil { // none stored is (api.Default); read as the empty one
		t = new(api.Template)
	}
	out := &Instance{
		Namespace: in.Metadata.Namespace, Name: in.Metadata.Name, UID: in.Metadata.UID, Owner: in.Spec.Owner.Name,
		Image: t.Image, Command: t.Command, Args: t.Args, WorkingDir: t.WorkingDir, Executor: t.Runtime, UserNS: t.UserNS, Template: t.StoredHash(),
		Restart:           reconcile.Policy(api.InstanceRestart(in.Spec.Owner.Kind, *t)),
		ReportedContainer: in.Status.ContainerID, ReportedHealthy: in.Status.Healthy,
		ReportedReason: in.Status.Reason, ReportedMessage: in.Status.Message,
		Resources: runtime.Resources{CPUs: t.Resources.CPU, MemoryBytes: int64(t.Resources.Memory),
			Pids: t.Resources.Pids},
		DiskBytes: int64(t.Resources.Disk),
		Process:   processOf(t), StopGrace: t.StopGrace.D(),
	}
	if in.Spec.Owner.Kind == api.KindService {
		out.Service = in.Metadata.Namespace + "/" + in.Spec.Owner.Name
	}
	for _, p := range t.Ports {
		if p.Host != 0 {
			out.HostPorts = append(out.HostPorts, HostPort{Protocol: cmp.Or(p.Protocol, "tcp"), Port: p.Host})
		}
	}
	for _, v := range t.Volumes {
		av := Volume{Name: v.Name, HostPath: v.HostPath, Path: v.Path, ReadOnly: v.ReadOnly}
		if v.Tmpfs != nil {
			av.TmpfsSize = int64(v.Tmpfs.Size)
		}
		out.Volumes = append(out.Volumes, av)
	}
	out.NeedsData = len(t.Files) > 0 || len(t.EnvFrom) > 0 || len(t.ImagePullSecrets) > 0
	out.PullPolicy = api.DefaultPullPolicy(t.Image, t.PullPolicy)
	if len(in.Spec.CPUSet) > 0 {
		out.Resources.CPUSet = hostinfo.FormatList(in.Spec.CPUSet)
	}
	out.Env = envList(t.Env)
	out.Health = healthCheck(t.Health)
	out.Members = membersFromAPI(t)
	return out
}

// envList is env as KEY=VALUE entries, sorted by key.
func envList(env map[string]string) []string {
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, k+"="+env[k])
	}
	return out
}

// healthCheck is the agent's form of a health check; nil for none.
func healthCheck(h *api.Health) *health.Check {
	if h == nil {
		return nil
	}
	c := &health.Check{Interval: time.Duration(h.Interval), Timeout: time.Duration(h.Timeout), Failures: h.Failures,
		StartPeriod: h.StartPeriod.D()}
	switch {
	case h.HTTP != nil:
		c.HTTP = &health.HTTPGet{Port: h.HTTP.Port, Path: h.HTTP.Path}
	case h.TCP != nil:
		c.TCP = &health.TCPConnect{Port: h.TCP.Port}
	case h.Exec != nil:
		c.Exec = h.Exec.Command
	}
	return c
}

// InstanceData reads the files and env an instance takes from configs and secrets.
func (p *APIPlane) InstanceData(ctx context.Context, namespace, name string) (*api.InstanceData, error) {
	return p.c.Instances().Data(ctx, namespace, name)
}

// ReportStatus writes an instance's status.
func (p *APIPlane) ReportStatus(ctx context.Context, namespace, name, uid string, st Status) error {
	in := &api.Instance{Metadata: api.Metadata{Namespace: namespace, Name: name}, Status: st.api()}
	if _, err := p.c.Instances().UpdateStatus(ctx, in); err != nil {
		if errdefs.IsNotFound(err) {
			return nil // deleted meanwhile: its assignment's removal is on its way
		}
		return fmt.Errorf("%s: status: %w", api.Ref(api.KindInstance, namespace, name), err)
	}
	return nil
}

// api is the status as the API records it.
func (st Status) api() api.InstanceStatus {
	return api.InstanceStatus{
		Phase: st.Phase, IP: st.IP, ContainerID: st.ContainerID, Pid: st.Pid, ExitCode: st.ExitCode,
		Reason: st.Reason, Message: st.Message, Restarts: st.Restarts, Healthy: st.Healthy,
		StartedAt: st.StartedAt, FinishedAt: st.FinishedAt, RestartAt: st.RestartAt,
		Containers: st.Containers,
	}
}

var _ StatusBatcher = (*APIPlane)(nil)

// ReportStatuses sends reports in batches of api.MaxStatusBatch. An
// instance gone meanwhile is no error, as with ReportStatus; a server
// without the batch route gets the reports one by one.
func (p *APIPlane) ReportStatuses(ctx context.Context, node string, reports []StatusReport) []error {
	errs := make([]error, len(reports))
	for lo := 0; lo < len(reports); lo += api.MaxStatusBatch {
		chunk := reports[lo:min(len(reports), lo+api.MaxStatusBatch)]
		items := make([]api.StatusReport, len(chunk))
		for i, r := range chunk {
			items[i] = api.StatusReport{Namespace: r.Namespace, Name: r.Name, UID: r.UID, Status: r.Status.api()}
		}
		results, err := p.c.Nodes().ReportStatuses(ctx, node, items)
		if errdefs.IsNotFound(err) {
			for i, r := range chunk {
				errs[lo+i] = p.ReportStatus(ctx, r.Namespace, r.Name, r.UID, r.Status)
			}
			continue
		}
		for i := range chunk {
			switch {
			case err != nil:
				errs[lo+i] = err
			case results[i].Error != "" && !results[i].Gone:
				errs[lo+i] = errors.New(results[i].Error)
			}
		}
	}
	return errs
}

var _ SubnetSource = (*APIPlane)(nil)

// PodSubnet waits until the control plane has given the node a pod
// subnet, following the node's changes rather than polling.
func (p *APIPlane) PodSubnet(ctx context.Context, node string) (string, error) {
	for {
		n, err := p.c.Nodes().Get(ctx, "", node)
		if err != nil {
			return "", err
		}
		if n.Spec.PodSubnet != "" {
			return n.Spec.PodSubnet, nil
		}
		events, err := p.c.Nodes().Watch(ctx, "", n.Metadata.Revision)
		if err != nil {
			return "", err
		}
		for ev := range events {
			if ev.Err != nil {
				break
			}
			if ev.Object != nil && ev.Object.Metadata.Name == node && ev.Object.Spec.PodSubnet != "" {
				return ev.Object.Spec.PodSubnet, nil
			}
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(100 * time.Millisecond): // the watch broke: look again, not in a tight loop
		}
	}
}

var _ VolumeStore = (*APIPlane)(nil)

// EnsureVolume records a named volume as the node's, unless it is already.
func (p *APIPlane) EnsureVolume(ctx context.Context, namespace, name, node, path string) error {
	v, err := p.c.Volumes().Get(ctx, namespace, name)
	switch {
	case err == nil && v.Spec.Node != node:
		return fmt.Errorf("%s: %w: its data is on node %q", api.RefOf(v), errdefs.ErrFailedPrecondition, v.Spec.Node)
	case err == nil:
		return nil
	case !errdefs.IsNotFound(err):
		return err
	}
	v = &api.Volume{Metadata: api.Metadata{Namespace: namespace, Name: name}, Spec: api.VolumeSpec{Node: node, Path: path}}
	if _, err := p.c.Volumes().Apply(ctx, v); err != nil {
		return fmt.Errorf("record %s: %w", api.Ref(api.KindVolume, namespace, name), err)
	}
	return nil
}

// NodeVolumes lists the named volumes recorded on node, as "namespace/name".
func (p *APIPlane) NodeVolumes(ctx context.Context, node string) (map[string]bool, error) {
	list, _, err := p.c.Volumes().List(ctx, "")
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, v := range list {
		if v.Spec.Node == node {
			out[v.Metadata.Namespace+"/"+v.Metadata.Name] = true
		}
	}
	return out, nil
}

var _ EventRecorder = (*APIPlane)(nil)

// RecordInstanceEvent records an event about instance namespace/name.
func (p *APIPlane) RecordInstanceEvent(ctx context.Context, namespace, name string, typ api.EventType, reason, msg string) error {
	ev := &api.Event{Time: time.Now().UTC(), Object: api.ObjectRef{Kind: api.KindInstance, Namespace: namespace, Name: name},
		Type: typ, Reason: reason, Message: msg, Source: "agent"}
	ev.Metadata.Namespace = namespace
	if _, err := p.c.Events().Record(ctx, ev); err != nil {
		return fmt.Errorf("%s: event %s: %w", api.Ref(api.KindInstance, namespace, name), reason, err)
	}
	return nil
}
