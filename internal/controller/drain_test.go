package controller_test

import (
	"context"
	"errors"
	"log/slog"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
)

func TestComputeDrain(t *testing.T) {
	in := func(name string, owner api.Kind, p api.Phase) controller.DrainInstance {
		return controller.DrainInstance{Namespace: "default", Name: name, Owner: owner, Phase: p}
	}
	for _, tc := range []struct {
		name  string
		insts []controller.DrainInstance
		want  controller.DrainResult
	}{
		{"empty node", nil, controller.DrainResult{Done: true}},
		{"only finished", []controller.DrainInstance{in("a", api.KindService, api.PhaseFailed),
			in("b", api.KindJob, api.PhaseSucceeded), in("c", api.KindService, api.PhaseLost)}, controller.DrainResult{Done: true}},
		{"services go", []controller.DrainInstance{in("w2", api.KindService, api.PhaseRunning), in("w1", api.KindService, api.PhasePending)},
			controller.DrainResult{Evict: []string{"default/w1", "default/w2"}}},
		{"live ones move, others go", []controller.DrainInstance{
			{Namespace: "default", Name: "c1", Owner: api.KindService, Phase: api.PhaseRunning, Live: true},
			{Namespace: "default", Name: "c2", Owner: api.KindService, Phase: api.PhaseStarting, Live: true},
			in("w1", api.KindService, api.PhaseRunning)},
			controller.DrainResult{Evict: []string{"default/c2", "default/w1"}, Migrate: []string{"default/c1"}}},
		{"started jobs finish, others go", []controller.DrainInstance{
			in("j-0-0", api.KindJob, api.PhaseRunning), in("j-1-0", api.KindJob, api.PhaseStarting),
			in("j-2-0", api.KindJob, api.PhaseScheduled), in("j-3-0", api.KindJob, api.PhasePending),
			in("j-4-0", api.KindJob, api.PhaseSucceeded)},
			controller.DrainResult{Evict: []string{"default/j-2-0", "default/j-3-0"}, Waiting: []string{"default/j-0-0", "default/j-1-0"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := controller.ComputeDrain(tc.insts); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func (h *harness) node(name string) *api.Node {
	h.t.Helper()
	n, err := store.Get[api.Node](h.ctx, h.s, "", name)
	if err != nil {
		h.t.Fatal(err)
	}
	return n
}

func (h *harness) onNode(node string) []string {
	h.t.Helper()
	var out []string
	for _, in := range h.instances() {
		if in.Spec.Node == node && !in.Status.Phase.Terminal() {
			out = append(out, in.Metadata.Name)
		}
	}
	sort.Strings(out)
	return out
}

func (h *harness) events(reason string) []*api.Event {
	h.t.Helper()
	evs, _, err := store.List[api.Event](h.ctx, h.s, "")
	if err != nil {
		h.t.Fatal(err)
	}
	var out []*api.Event
	for _, ev := range evs {
		if ev.Reason == reason {
			out = append(out, ev)
		}
	}
	return out
}

// passUntil runs passes, with the agents reporting instances running,
// until done says so; a bounded number of passes, not a time.
func (h *harness) passUntil(what string, done func() bool) {
	h.t.Helper()
	for range 20 {
		h.pass()
		h.agent(running)
		if done() {
			return
		}
	}
	h.t.Fatalf("after 20 passes: not %s", what)
}

func TestDrainMovesServiceInstances(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	// n3 is cordoned from the start: drains must not move anything to it.
	n3 := h.node("n3")
	n3.Spec.Unschedulable = true
	if err := h.s.Update(h.ctx, n3, 0); err != nil {
		t.Fatal(err)
	}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 4,
		Template:  api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 0.5, Memory: 64 << 20}},
		Placement: api.Placement{Spread: []string{"node"}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.passUntil("4 instances running", func() bool { return len(h.onNode("n1"))+len(h.onNode("n2")) == 4 })
	before1, before2 := h.onNode("n1"), h.onNode("n2")
	if len(before1) == 0 || len(before2) == 0 {
		t.Fatalf("not spread over n1 and n2: n1 %v, n2 %v", before1, before2)
	}

	// A second drain is refused while the first is in progress.
	if _, err := apiserver.DrainNode(h.ctx, h.s, "n1", 1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := apiserver.DrainNode(h.ctx, h.s, "n2", 1, false); !errdefs.IsConflict(err) {
		t.Fatalf("second drain while n1 drains: got %v, want a conflict", err)
	}

	h.passUntil("n1 drained", func() bool { return !h.node("n1").Spec.Draining })
	if got := h.onNode("n1"); len(got) != 0 {
		t.Errorf("left on n1 after its drain: %v", got)
	}
	after2 := h.onNode("n2")
	if len(after2) != 4 {
		t.Fatalf("on n2 after draining n1: %v, want 4", after2)
	}
	kept := map[string]bool{}
	for _, name := range after2 {
		kept[name] = true
	}
	for _, name := range before2 {
		if !kept[name] {
			t.Errorf("instance %s on n2 was replaced; the drain of n1 must leave n2 alone", name)
		}
	}
	n1 := h.node("n1")
	if !n1.Spec.Unschedulable || n1.Spec.Draining {
		t.Errorf("drained n1: unschedulable=%v draining=%v, want true, false", n1.Spec.Unschedulable, n1.Spec.Draining)
	}
	if evs := h.events("NodeDrained"); len(evs) != 1 || evs[0].Object.Name != "n1" {
		t.Errorf("NodeDrained events: %+v", evs)
	}
	got, _ := store.Get[api.Service](h.ctx, h.s, "default", "web")
	if got.Status.ReadyReplicas != 4 {
		t.Errorf("readyReplicas %d after the drain, want 4", got.Status.ReadyReplicas)
	}

	// Drained, n1 frees its slot: n2 may drain now (to nowhere, so it waits).
	if _, err := apiserver.DrainNode(h.ctx, h.s, "n2", 1, false); err != nil {
		t.Fatalf("drain n2 after n1 finished: %v", err)
	}
	// Uncordon both: instances come back to n1 as the service grows.
	for _, name := range []string{"n1", "n2"} {
		n := h.node(name)
		n.Spec.Unschedulable, n.Spec.Draining = false, false
		if err := h.s.Update(h.ctx, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	h.scale("web", 8)
	h.passUntil("8 instances running", func() bool { return len(h.onNode("n1"))+len(h.onNode("n2")) == 8 })
	if len(h.onNode("n1")) == 0 {
		t.Errorf("uncordoned n1 got none of 4 new instances: n1 %v, n2 %v", h.onNode("n1"), h.onNode("n2"))
	}
	if len(h.onNode("n3")) != 0 {
		t.Errorf("cordoned n3 got instances: %v", h.onNode("n3"))
	}
}

func TestDrainWaitsForRunningJobs(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	job := &api.Job{Metadata: api.Metadata{Name: "batch"}, Spec: api.JobSpec{Completions: 1,
		Template:  api.Template{Image: "demo/busybox:1"},
		Placement: api.Placement{Constraints: []api.Constraint{{Key: "node.name", Op: api.OpEq, Values: []string{"n1"}}}}}}
	if err := h.s.Create(h.ctx, job); err != nil {
		t.Fatal(err)
	}
	h.passUntil("the job running on n1", func() bool { return len(h.onNode("n1")) == 1 })
	shard := h.onNode("n1")[0]
	if _, err := apiserver.DrainNode(h.ctx, h.s, "n1", 1, false); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		h.pass()
	}
	if got := h.onNode("n1"); len(got) != 1 || got[0] != shard {
		t.Fatalf("running shard on draining n1: %v, want %s left to finish", got, shard)
	}
	if !h.node("n1").Spec.Draining {
		t.Fatal("n1 drained with a job shard still running on it")
	}
	if evs := h.events("DrainWaiting"); len(evs) != 1 {
		t.Errorf("DrainWaiting events over 3 passes: %d, want 1", len(evs))
	}
	h.agent(func(*api.Instance) api.Phase { return api.PhaseSucceeded })
	h.pass()
	if n1 := h.node("n1"); n1.Spec.Draining || !n1.Spec.Unschedulable {
		t.Errorf("after the shard finished: draining=%v unschedulable=%v", n1.Spec.Draining, n1.Spec.Unschedulable)
	}
	j, _ := store.Get[api.Job](h.ctx, h.s, "default", "batch")
	if j.Status.Phase != api.JobSucceeded {
		t.Errorf("job %s, want Succeeded", j.Status.Phase)
	}
}

// A drain with --migrate restarts an instance of several containers on
// another node rather than moving it live (a checkpoint holds one
// container), and its NodeDraining event names the instance and why.
func TestDrainMigrateRestartsMultiContainerInstances(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	var asked []string
	h.m = controller.NewManager(h.s, controller.Options{Logger: slog.New(slog.DiscardHandler), Clock: h.clk.now,
		Migrate: func(_ context.Context, ns, name, _ string) (*api.Migration, error) {
			asked = append(asked, ns+"/"+name)
			return nil, errors.New("not expected")
		}})
	svc := &api.Service{Metadata: api.Metadata{Name: "pod"}, Spec: api.ServiceSpec{Replicas: 1,
		Template: api.Template{Image: "demo/busybox:1", Runtime: "runc",
			Containers: []api.Container{{Name: "log", Sidecar: true, Command: []string{"sleep", "1d"}}}},
		Placement: api.Placement{Constraints: []api.Constraint{{Key: "node.name", Op: api.OpIn, Values: []string{"n1", "n2"}}}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	n2 := h.node("n2")
	n2.Spec.Unschedulable = true
	if err := h.s.Update(h.ctx, n2, 0); err != nil {
		t.Fatal(err)
	}
	h.passUntil("the instance running on n1", func() bool { return len(h.onNode("n1")) == 1 })
	first := h.onNode("n1")[0]
	n2 = h.node("n2")
	n2.Spec.Unschedulable = false
	if err := h.s.Update(h.ctx, n2, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := apiserver.DrainNode(h.ctx, h.s, "n1", 1, true); err != nil {
		t.Fatal(err)
	}
	h.passUntil("n1 drained", func() bool { return !h.node("n1").Spec.Draining })
	if got := h.onNode("n2"); len(got) != 1 || got[0] == first {
		t.Errorf("on n2 after the drain: %v, want a new instance in place of %s", got, first)
	}
	if len(asked) > 0 {
		t.Errorf("the drain tried to migrate %v live", asked)
	}
	var msgs []string
	for _, ev := range h.events("NodeDraining") {
		msgs = append(msgs, ev.Message)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"restarted, not migrated live", "default/" + first, "init or sidecar containers"} {
		if !strings.Contains(all, want) {
			t.Errorf("NodeDraining events lack %q:\n%s", want, all)
		}
	}
}
