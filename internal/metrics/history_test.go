package metrics

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/store"
)

// The embedded etcd's history figures are served: what was written
// since the last compaction, the budget, and the compactions the budget
// made before the retention had passed.
func TestClusterServesEtcdHistory(t *testing.T) {
	ctx := t.Context()
	// A retention of a second samples every 100 ms; a budget of 1 MiB
	// binds within the first rounds of writes.
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), CompactionRetention: time.Second, CompactionBudget: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(Cluster(st, nil))
	value := strings.Repeat("x", 64<<10)
	var got map[string]float64
	deadline := time.Now().Add(2 * time.Minute)
	for round := 0; ; round++ {
		for i := range 16 {
			if _, err := st.Client().Put(ctx, fmt.Sprintf("/berth/metricstest/%d", i), value); err != nil {
				t.Fatal(err)
			}
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got = map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "berth_etcd_history_bytes", "berth_etcd_history_budget_bytes":
					got[mf.GetName()] = m.GetGauge().GetValue()
				case "berth_etcd_early_compactions_total":
					got[mf.GetName()] = m.GetCounter().GetValue()
				}
			}
		}
		if got["berth_etcd_early_compactions_total"] >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d MiB written over a budget of about 2 MiB: %v, want an early compaction counted", round+1, got)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got) != 3 {
		t.Fatalf("history figures %v, want all three", got)
	}
	if got["berth_etcd_history_budget_bytes"] < 1<<20 {
		t.Errorf("berth_etcd_history_budget_bytes = %v, want at least the configured 1 MiB", got["berth_etcd_history_budget_bytes"])
	}
}
