package controller

import (
	"fmt"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// What the cache's safety net behind its watch costs at 100,000 stored
// instances: a check of keys and revisions, and the list of everything
// it replaced (and that still follows a break of the watch).
func BenchmarkCacheCheck(b *testing.B) {
	s, err := store.Open(b.Context(), store.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := b.Context()
	tmpl := api.Template{Image: "sim/none:1", Env: map[string]string{"V": "1"}, Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}}
	const services, per = 100, 1000
	for i := range services {
		objs := make([]api.Object, 0, per)
		for j := range per {
			objs = append(objs, &api.Instance{Metadata: api.Metadata{Name: fmt.Sprintf("svc-%04d-%05d", i, j)},
				Spec: api.InstanceSpec{Template: &tmpl, Node: fmt.Sprintf("n%05d", (i*per+j)%5000),
					Owner: api.Owner{Kind: api.KindService, Name: fmt.Sprintf("svc-%04d", i), UID: fmt.Sprint("u", i)}},
				Status: api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true}})
		}
		if err := s.CreateMany(ctx, objs); err != nil {
			b.Fatal(err)
		}
	}
	c := newCache(s)
	if _, err := c.fill(ctx); err != nil {
		b.Fatal(err)
	}
	b.Run("check", func(b *testing.B) {
		cpu0 := cpuTime()
		for b.Loop() {
			if diff, err := c.check(ctx); err != nil || diff != "" {
				b.Fatal(diff, err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
	})
	b.Run("list", func(b *testing.B) {
		cpu0 := cpuTime()
		for b.Loop() {
			if _, err := c.fill(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
	})
}
