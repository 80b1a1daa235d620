package metrics

import (
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// berth_instances counts the stored instances by phase, every phase
// listed even at zero.
func TestClusterCountsInstancesByPhase(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	phases := map[api.Phase]int{api.PhaseRunning: 3, api.PhaseFailed: 1, api.PhasePending: 2}
	var objs []api.Object
	for p, n := range phases {
		for i := range n {
			objs = append(objs, &api.Instance{
				Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("%s-%d", strings.ToLower(string(p)), i)},
				Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1", Env: map[string]string{"A": "b"}},
					Owner: api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}},
				Status: api.InstanceStatus{Phase: p}})
		}
	}
	if err := st.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Cluster(st, nil))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "berth_instances" {
			continue
		}
		for _, m := range mf.GetMetric() {
			got[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
		}
	}
	if len(got) != len(api.Phases) {
		t.Fatalf("berth_instances has %d phases, want all %d: %v", len(got), len(api.Phases), got)
	}
	for _, p := range api.Phases {
		if got[string(p)] != float64(phases[p]) {
			t.Errorf("berth_instances{phase=%q} = %v, want %d", p, got[string(p)], phases[p])
		}
	}
}

// With a source of its own (the controller's cache), a scrape counts
// instances by phase from it, not from the store; once the source stops,
// from the store again.
func TestClusterCountsPhasesFromItsSource(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-1"},
		Spec:   api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}},
		Status: api.InstanceStatus{Phase: api.PhaseRunning}}
	if err := st.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	var phases Phases
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Cluster(st, &phases))
	running := func() float64 {
		t.Helper()
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if mf.GetName() == "berth_instances" && m.GetLabel()[0].GetValue() == string(api.PhaseRunning) {
					return m.GetGauge().GetValue()
				}
			}
		}
		t.Fatal("no berth_instances{phase=\"Running\"}")
		return 0
	}
	if got := running(); got != 1 {
		t.Fatalf("with no source, %v Running, want the store's 1", got)
	}
	ready := false
	stop := phases.Follow(func() (map[api.Phase]int, bool) { return map[api.Phase]int{api.PhaseRunning: 7}, ready })
	if got := running(); got != 1 {
		t.Errorf("with a source not ready, %v Running, want the store's 1", got)
	}
	ready = true
	if got := running(); got != 7 {
		t.Errorf("with a source, %v Running, want its 7", got)
	}
	stop()
	if got := running(); got != 1 {
		t.Errorf("with the source stopped, %v Running, want the store's 1", got)
	}
}

// A scrape at 20,000 instances, counting them by listing the store, and
// from a source (the controller's cache, here a fixed count).
func BenchmarkClusterScrape(b *testing.B) {
	st, err := store.Open(b.Context(), store.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	var objs []api.Object
	for i := range 20000 {
		objs = append(objs, &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("web-%05d", i)},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "sim/none:1", Env: map[string]string{"V": "1"}, Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}},
				Owner: api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}, Node: fmt.Sprintf("n%04d", i%1000)},
			Status: api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true}})
	}
	for len(objs) > 0 {
		n := min(len(objs), st.BindBatch())
		if err := st.CreateMany(b.Context(), objs[:n]); err != nil {
			b.Fatal(err)
		}
		objs = objs[n:]
	}
	for _, from := range []string{"store", "source"} {
		b.Run(from, func(b *testing.B) {
			var phases Phases
			if from == "source" {
				defer phases.Follow(func() (map[api.Phase]int, bool) { return map[api.Phase]int{api.PhaseRunning: 20000}, true })()
			}
			reg := prometheus.NewRegistry()
			reg.MustRegister(Cluster(st, &phases))
			for b.Loop() {
				if _, err := reg.Gather(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// berth_node_ready is 1 for a node Ready with its heartbeat lease held,
// else 0, and berth_node_heartbeat_age_seconds its last beat's age: the
// stored one's, or the one this server took since, which is later.
func TestClusterNodeSeries(t *testing.T) {
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	now := time.Now().UTC()
	for _, n := range []*api.Node{
		{Metadata: api.Metadata{Name: "beating"}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: now.Add(-time.Hour)}},
		{Metadata: api.Metadata{Name: "silent"}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: now.Add(-time.Minute)}},
		{Metadata: api.Metadata{Name: "down"}, Status: api.NodeStatus{Condition: api.NodeNotReady, LastHeartbeat: now.Add(-2 * time.Minute)}},
	} {
		n.Spec.Capacity = api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30}
		if err := st.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// Beats taken by this server: a lease, and a later beat than stored.
	for _, name := range []string{"beating", "down"} {
		if err := st.KeepNodeAlive(ctx, name, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(clusterCollector{st: st, now: func() time.Time { return now }})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	ready, age := map[string]float64{}, map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "berth_node_ready":
				ready[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			case "berth_node_heartbeat_age_seconds":
				age[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	if want := map[string]float64{"beating": 1, "silent": 0, "down": 0}; !maps.Equal(ready, want) {
		t.Errorf("berth_node_ready = %v, want %v", ready, want)
	}
	if a := age["silent"]; a < 59 || a > 61 {
		t.Errorf("silent node's heartbeat age %v s, want its stored beat's, 60", a)
	}
	if a := age["beating"]; a > 5 {
		t.Errorf("beating node's heartbeat age %v s, want the beat this server took just now, not its stored one an hour ago", a)
	}
	if len(age) != 3 {
		t.Errorf("heartbeat ages for %d nodes, want 3: %v", len(age), age)
	}
}
