package controller_test

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// A service at the replica cap is made, placed, bound, scaled to zero and
// its status written with no write etcd refuses: every batch stays within
// the transaction's limits on writes and bytes.
func TestServiceAtReplicaCap(t *testing.T) {
	if testing.Short() {
		t.Skip("stores thousands of instances")
	}
	h := newHarness(t)
	node := &api.Node{Metadata: api.Metadata{Name: "big"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 1 << 40, Memory: 1 << 60, Pids: 1 << 40}}}
	if err := h.s.Create(h.ctx, node); err != nil {
		t.Fatal(err)
	}
	h.heartbeat("big")
	svc := &api.Service{Metadata: api.Metadata{Name: "many"}, Spec: api.ServiceSpec{Replicas: api.MaxReplicas,
		Template: api.Template{Image: "demo/busybox:1", Command: []string{"sleep", "1d"}}}}
	if err := svc.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	h.pass()
	ins := h.instances()
	bound := 0
	for _, in := range ins {
		if in.Spec.Node == "big" {
			bound++
		}
	}
	if len(ins) != api.MaxReplicas || bound != api.MaxReplicas {
		t.Fatalf("%d instances, %d bound, want %d", len(ins), bound, api.MaxReplicas)
	}
	assigned, _, err := h.s.Assignments(h.ctx, "big")
	if err != nil || len(assigned) != api.MaxReplicas {
		t.Fatalf("%d assignments, %v", len(assigned), err)
	}
	t.Logf("%d instances made and bound in %v", api.MaxReplicas, time.Since(t0))
	h.pass()
	got, _ := store.Get[api.Service](h.ctx, h.s, "default", "many")
	if got.Status.Replicas != api.MaxReplicas {
		t.Errorf("status replicas %d", got.Status.Replicas)
	}
	h.scale("many", 0)
	t0 = time.Now()
	h.pass()
	if n := len(h.instances()); n != 0 {
		t.Fatalf("%d instances left after scale to 0", n)
	}
	t.Logf("%d instances removed in %v", api.MaxReplicas, time.Since(t0))
}

// Instances made while no node could take them are bound later in
// batches that fit etcd's request size, however big their template.
func TestBindBigTemplatesInBatches(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", api.MaxTemplateBytes-1024)
	svc := &api.Service{Metadata: api.Metadata{Name: "fat"}, Spec: api.ServiceSpec{Replicas: 40,
		Template: api.Template{Image: "demo/busybox:1", Env: map[string]string{"BIG": big}}}}
	if err := svc.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.pass() // no node: stored pending
	if n := len(h.instances()); n != 40 {
		t.Fatalf("%d instances, want 40", n)
	}
	node := &api.Node{Metadata: api.Metadata{Name: "late"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
	if err := h.s.Create(h.ctx, node); err != nil {
		t.Fatal(err)
	}
	h.heartbeat("late")
	h.pass()
	if n := h.count(func(in *api.Instance) bool { return in.Spec.Node == "late" }); n != 40 {
		t.Fatalf("%d of 40 bound", n)
	}
}

// A service's history of templates at the size cap still fits one write.
func TestHistoryOfBigTemplatesFits(t *testing.T) {
	h := newHarness(t, "n1")
	svc := &api.Service{Metadata: api.Metadata{Name: "fat"}, Spec: api.ServiceSpec{Replicas: 0,
		Template: api.Template{Image: "demo/busybox:1"}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	for i := range api.MaxHistory + 2 {
		svc, err := store.Get[api.Service](h.ctx, h.s, "default", "fat")
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Template.Env = map[string]string{"BIG": strings.Repeat(string(rune('a'+i)), api.MaxTemplateBytes-1024)}
		if err := svc.Validate(); err != nil {
			t.Fatal(err)
		}
		if err := h.s.Update(h.ctx, svc, 0); err != nil {
			t.Fatal(err)
		}
		h.pass()
	}
	got, err := store.Get[api.Service](h.ctx, h.s, "default", "fat")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(got.Status.History); n != api.MaxHistory || got.Status.History[n-1].Hash != got.Spec.Template.Hash() {
		t.Fatalf("history of %d, want %d ending with the current template", n, api.MaxHistory)
	}
}

// When why instances wait changes, their statuses are written in batches
// and the events stay few: the first ones by instance, the rest on the owner.
func TestUnschedulableReasonsBatched(t *testing.T) {
	h := newHarness(t, "n1")
	svc := &api.Service{Metadata: api.Metadata{Name: "nowhere"}, Spec: api.ServiceSpec{Replicas: 30,
		Template:  api.Template{Image: "demo/busybox:1"},
		Placement: api.Placement{Constraints: []api.Constraint{{Key: "node.name", Op: api.OpEq, Values: []string{"none"}}}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.pass()
	node := &api.Node{Metadata: api.Metadata{Name: "n2"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
	if err := h.s.Create(h.ctx, node); err != nil {
		t.Fatal(err)
	}
	h.heartbeat("n2")
	h.pass()
	for _, in := range h.instances() {
		if !strings.Contains(in.Status.Message, "0/2 nodes") {
			t.Fatalf("%s: message %q not brought up to date", in.Metadata.Name, in.Status.Message)
		}
	}
	evs, _, err := store.List[api.Event](h.ctx, h.s, "default")
	if err != nil {
		t.Fatal(err)
	}
	perInstance, onOwner := 0, 0
	for _, ev := range evs {
		if ev.Reason != "Unschedulable" || !strings.Contains(ev.Message, "0/2 nodes") {
			continue
		}
		switch ev.Object.Kind {
		case api.KindInstance:
			perInstance++
		case api.KindService:
			onOwner++
			if !strings.Contains(ev.Message, "20 more instances") {
				t.Errorf("owner event %q", ev.Message)
			}
		}
	}
	if perInstance != 10 || onOwner != 1 {
		t.Fatalf("%d instance events and %d on the service, want 10 and 1", perInstance, onOwner)
	}
}
