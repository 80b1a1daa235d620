package apiserver_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// wantForbidden fails unless err is a 403 whose message names each of says.
func wantForbidden(t *testing.T, what string, err error, says ...string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
		t.Errorf("%s: got %v, want a 403", what, err)
		return
	}
	for _, s := range says {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("%s: message %q does not say %s", what, err, s)
		}
	}
}

// TestNodeWritesOnlyWhatItObserves: a node's certificate registers and
// reports, but the spec fields admins and the control plane own stay
// theirs, capacity stays under its limit, an instance's status stays
// within what the node may claim, and its events speak only for it.
func TestNodeWritesOnlyWhatItObserves(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")
	cores := func(n int) []api.CPUCore {
		var out []api.CPUCore
		for i := range n {
			out = append(out, api.CPUCore{ID: i, Threads: []int{i}})
		}
		return out
	}
	reg := &api.Node{Metadata: api.Metadata{Name: "n1", Labels: map[string]string{"node.berth/zone": "a"}},
		Spec: api.NodeSpec{Address: "10.0.0.1", Capacity: api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000}, Topology: api.CPUTopology{Cores: cores(2)}}}
	got, err := n1.Nodes().Apply(ctx, reg)
	if err != nil {
		t.Fatalf("first registration: %v", err)
	}
	if got.Spec.CapacityLimit != reg.Spec.Capacity {
		t.Fatalf("capacity limit after first registration = %+v, want the capacity registered %+v", got.Spec.CapacityLimit, reg.Spec.Capacity)
	}
	// A first registration that claims what admins own is refused too.
	n3 := c.join(t, "n3")
	_, err = n3.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n3"}, Spec: api.NodeSpec{PodSubnet: "10.244.9.0/24"}})
	wantForbidden(t, "first registration with a pod subnet", err, "spec.podSubnet")
	_, err = n3.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n3", Labels: map[string]string{"zone": "a"}}})
	wantForbidden(t, "first registration with an admin label", err, `metadata.labels["zone"]`)

	// What admins and the control plane set.
	adm, err := c.admin.Nodes().Get(ctx, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	adm.Spec.PodSubnet, adm.Spec.Unschedulable = "10.244.1.0/24", true
	adm.Metadata.Labels["zone"] = "a"
	if _, err := c.admin.Nodes().Apply(ctx, adm); err != nil {
		t.Fatal(err)
	}
	// The agent's re-registration, carrying what it read, passes.
	cur, err := n1.Nodes().Get(ctx, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	cur.Metadata.Revision = 0
	if _, err := n1.Nodes().Apply(ctx, cur); err != nil {
		t.Fatalf("re-registration as read: %v", err)
	}
	attack := func(name string, change func(n *api.Node), field string) {
		n, err := n1.Nodes().Get(ctx, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		n.Metadata.Revision = 0
		change(n)
		_, err = n1.Nodes().Apply(ctx, n)
		wantForbidden(t, name, err, `node "n1"`, field)
	}
	attack("pod subnet of another node", func(n *api.Node) { n.Spec.PodSubnet = "10.244.2.0/24" }, "spec.podSubnet")
	attack("cordon lifted", func(n *api.Node) { n.Spec.Unschedulable = false }, "spec.unschedulable")
	attack("drain", func(n *api.Node) { n.Spec.Draining = true }, "spec.draining")
	attack("admin label changed", func(n *api.Node) { n.Metadata.Labels["zone"] = "b" }, `metadata.labels["zone"]`)
	attack("admin label added", func(n *api.Node) { n.Metadata.Labels["gpu"] = "yes" }, `metadata.labels["gpu"]`)
	attack("admin label removed", func(n *api.Node) { delete(n.Metadata.Labels, "zone") }, `metadata.labels["zone"]`)
	attack("capacity limit raised", func(n *api.Node) { n.Spec.CapacityLimit.MilliCPU = 64_000_000 }, "spec.capacityLimit")

	// 64,000 CPUs are recorded as no more than the limit, and so is the
	// topology; lower figures are taken as reported.
	n, _ := n1.Nodes().Get(ctx, "", "n1")
	n.Metadata.Revision = 0
	n.Spec.Capacity = api.NodeCapacity{MilliCPU: 64_000_000, Memory: 1 << 50, Pids: 1 << 40}
	n.Spec.Topology.Cores = cores(640)
	n.Metadata.Labels["node.berth/disk"] = "ssd"
	if _, err := n1.Nodes().Apply(ctx, n); err != nil {
		t.Fatalf("over-reporting node: %v", err)
	}
	stored, _ := c.admin.Nodes().Get(ctx, "", "n1")
	if stored.Spec.Capacity != reg.Spec.Capacity || len(stored.Spec.Topology.Cores) != 2 {
		t.Fatalf("stored capacity %+v with %d cores, want the limit %+v with 2", stored.Spec.Capacity, len(stored.Spec.Topology.Cores), reg.Spec.Capacity)
	}
	if stored.Spec.PodSubnet != "10.244.1.0/24" || !stored.Spec.Unschedulable || stored.Metadata.Labels["zone"] != "a" || stored.Metadata.Labels["node.berth/disk"] != "ssd" {
		t.Fatalf("stored node %+v %v", stored.Spec, stored.Metadata.Labels)
	}
	n.Spec.Capacity.MilliCPU = 1000
	if _, err := n1.Nodes().Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	if stored, _ := c.admin.Nodes().Get(ctx, "", "n1"); stored.Spec.Capacity.MilliCPU != 1000 {
		t.Fatalf("capacity under the limit stored as %d, want 1000 as reported", stored.Spec.Capacity.MilliCPU)
	}
	if !hasEvent(ctx, t, c, "n1", "CapacityCapped") {
		t.Error("no CapacityCapped event about n1")
	}
	// An admin raises the limit: the node's report is taken up to it.
	adm, _ = c.admin.Nodes().Get(ctx, "", "n1")
	adm.Metadata.Revision = 0
	adm.Spec.CapacityLimit.MilliCPU = 4000
	if _, err := c.admin.Nodes().Apply(ctx, adm); err != nil {
		t.Fatal(err)
	}
	n.Spec.Capacity.MilliCPU = 64_000_000
	n.Spec.CapacityLimit = api.NodeCapacity{}
	if _, err := n1.Nodes().Apply(ctx, n); err != nil {
		t.Fatal(err)
	}
	if stored, _ := c.admin.Nodes().Get(ctx, "", "n1"); stored.Spec.Capacity.MilliCPU != 4000 || stored.Spec.CapacityLimit.MilliCPU != 4000 {
		t.Fatalf("after an admin raised the limit to 4000m: capacity %dm, limit %dm", stored.Spec.Capacity.MilliCPU, stored.Spec.CapacityLimit.MilliCPU)
	}

	// Instance status.
	bind := func(name, node string) *api.Instance {
		in := &api.Instance{Metadata: api.Metadata{Name: name, Namespace: "default"},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
		if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
			t.Fatal(err)
		}
		in, err := c.admin.Instances().Bind(ctx, "default", name, node, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n2"}, Spec: api.NodeSpec{PodSubnet: "10.244.2.0/24"}}); err != nil {
		t.Fatal(err)
	}
	mine, theirs := bind("web-1", "n1"), bind("web-2", "n2")
	// A node's heartbeat speaks for itself alone: one for another node is
	// refused and keeps that node no more alive.
	_, err = n1.Nodes().Heartbeat(ctx, "n2", time.Now())
	wantForbidden(t, "heartbeat of another node", err, `"n2"`)
	if live, err := c.store.LiveNodes(ctx); err != nil || live["n2"] {
		t.Errorf("n2 alive after n1 beat for it: %v, %v", live, err)
	}
	report := func(st api.InstanceStatus, spec *api.InstanceSpec) error {
		in := &api.Instance{Metadata: api.Metadata{Name: "web-1", Namespace: "default"}, Status: st}
		if spec != nil {
			in.Spec = *spec
		}
		_, err := n1.Instances().UpdateStatus(ctx, in)
		return err
	}
	wantForbidden(t, "ip outside the pod subnet", report(api.InstanceStatus{Phase: api.PhaseRunning, IP: "192.0.2.7"}, nil), "status.ip", "10.244.1.0/24")
	wantForbidden(t, "ip in another node's subnet", report(api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.244.2.5"}, nil), "status.ip")
	wantForbidden(t, "phase Lost", report(api.InstanceStatus{Phase: api.PhaseLost}, nil), "status.phase")
	wantForbidden(t, "phase Pending", report(api.InstanceStatus{Phase: api.PhasePending}, nil), "status.phase")
	moved := mine.Spec
	moved.Node = "n2"
	wantForbidden(t, "spec.node moved in a status body", report(api.InstanceStatus{Phase: api.PhaseRunning}, &moved), "spec.node")
	if err := report(api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.244.1.9"}, nil); err != nil {
		t.Fatalf("status within the node's claims: %v", err)
	}
	if got, _ := c.admin.Instances().Get(ctx, "default", "web-1"); got.Status.IP != "10.244.1.9" || got.Spec.Node != "n1" || got.Status.ScheduledAt != mine.Status.ScheduledAt {
		t.Fatalf("stored instance %+v %+v", got.Spec, got.Status)
	}
	theirs.Status.Phase = api.PhaseRunning
	_, err = n1.Instances().UpdateStatus(ctx, theirs)
	wantForbidden(t, "status of another node's instance", err, `bound to node "n2"`)

	// Events.
	record := func(obj api.ObjectRef) (*api.Event, error) {
		return n1.Events().Record(ctx, &api.Event{Metadata: api.Metadata{Namespace: "default"}, Object: obj,
			Type: api.EventWarning, Reason: "Forged", Source: "controller"})
	}
	_, err = record(api.ObjectRef{Kind: api.KindNode, Name: "n2"})
	wantForbidden(t, "event about another node", err, "object", `node "n2"`)
	_, err = record(api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-2"})
	wantForbidden(t, "event about another node's instance", err, "object", "web-2")
	_, err = record(api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"})
	wantForbidden(t, "event about a service", err, "object")
	for _, obj := range []api.ObjectRef{{Kind: api.KindNode, Name: "n1"}, {Kind: api.KindInstance, Namespace: "default", Name: "web-1"}} {
		ev, err := record(obj)
		if err != nil {
			t.Fatalf("event about %v: %v", obj, err)
		}
		if ev.Source != "agent/n1" {
			t.Errorf("event about %v stored with source %q, want agent/n1 whatever the node said", obj, ev.Source)
		}
	}
}

func hasEvent(ctx context.Context, t *testing.T, c *cluster, node, reason string) bool {
	t.Helper()
	evs, _, err := c.admin.Events().List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Object.Kind == api.KindNode && ev.Object.Name == node && ev.Reason == reason {
			return true
		}
	}
	return false
}
