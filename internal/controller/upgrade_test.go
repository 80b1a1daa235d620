package controller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// A service whose template spelled defaults out (restart: always, a tcp
// port) was hashed over them before Hash left defaults out: after the
// upgrade its template hashes otherwise, yet its running instance, made
// under the old hash, is kept, not replaced.
func TestUpgradeReplacesNoInstance(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	node := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30, Pids: 1000}},
		Status: api.NodeStatus{Condition: api.NodeReady}}
	if err := s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	tmpl := api.Template{Image: "demo/busybox:1", Restart: api.RestartAlways, Ports: []api.Port{{Container: 80, Protocol: "tcp"}}}
	old := tmpl.StoredHash() // Hash as it was
	if tmpl.Hash() == old {
		t.Fatal("the template hashes as it did: nothing to test")
	}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1, Template: tmpl}}
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	svc.Status = api.ServiceStatus{Replicas: 1, ReadyReplicas: 1, UpdatedReplicas: 1,
		Rollout: api.RolloutStatus{Revision: 1, Hash: old, Phase: api.RolloutComplete},
		History: []api.TemplateRevision{{Revision: 1, Hash: old, Template: tmpl}}}
	if err := s.UpdateStatus(ctx, svc, 0); err != nil {
		t.Fatal(err)
	}
	in := &api.Instance{Metadata: api.Metadata{Name: "web-1"}, Spec: api.InstanceSpec{Template: &tmpl, Node: "n1",
		Owner: api.Owner{Kind: api.KindService, Name: "web", UID: svc.Metadata.UID}, SpecHash: old},
		Status: api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true}}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}

	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork})
	m.cache = newCache(s)
	if _, err := m.cache.fill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	insts, _, err := store.List[api.Instance](ctx, s, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 1 || insts[0].Metadata.Name != "web-1" {
		names := []string{}
		for _, i := range insts {
			names = append(names, i.Metadata.Name)
		}
		t.Errorf("instances after the pass: %v, want web-1 alone, kept", names)
	}
	got, err := store.Get[api.Service](ctx, s, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if ro := got.Status.Rollout; ro.Hash != old || ro.Phase != api.RolloutComplete || len(got.Status.History) != 1 {
		t.Errorf("rollout %+v, %d revisions; want the old hash, complete, one revision", ro, len(got.Status.History))
	}
	// A real change is still a rollout, under the hash that leaves defaults out.
	got.Spec.Template.Image = "demo/busybox:2"
	if err := s.Update(ctx, got, got.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	changed, err := store.Get[api.Service](ctx, s, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if h := changed.TemplateHash(); h != changed.Spec.Template.Hash() || h == old {
		t.Errorf("changed template's hash %s; want its Hash %s", h, changed.Spec.Template.Hash())
	}
}
