package metrics

import (
	"fmt"
	"strings"
	"testing"

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
				Spec: api.InstanceSpec{Template: api.Template{Image: "demo/busybox:1", Env: map[string]string{"A": "b"}},
					Owner: api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}},
				Status: api.InstanceStatus{Phase: p}})
		}
	}
	if err := st.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Cluster(st))
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
