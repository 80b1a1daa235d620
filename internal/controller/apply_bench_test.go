package controller

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// An apply of 20 services of 1,000 replicas each on 1,000 nodes, until
// all are Running: the controllers and the store (embedded etcd) in one
// process, with a fleet that reports each instance bound to it Running,
// in batches, as agents do. The API server and the agents' connections
// are left out, so that what the controllers and etcd cost shows, in CPU
// time, without the noise of a thousand agents on a shared machine
// (bench/scale measures the whole). Run with -benchtime 1x.
func BenchmarkApplyToRunning(b *testing.B) {
	const nodes, services, perService = 1000, 20, 1000
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	name := func(i int) string { return fmt.Sprintf("n%05d", i) }
	for i := range nodes {
		n := &api.Node{Metadata: api.Metadata{Name: name(i)},
			Spec:   api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 64000, Memory: 1 << 40, Pids: 1 << 20}},
			Status: api.NodeStatus{Condition: api.NodeReady}}
		if err := s.Create(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	beat := func() {
		for i := range nodes {
			if err := s.KeepNodeAlive(ctx, name(i), 10*time.Second); err != nil && ctx.Err() == nil {
				b.Error(err)
			}
		}
	}
	beat()
	go func() {
		for ctx.Err() == nil {
			time.Sleep(3 * time.Second)
			beat()
		}
	}()
	network := DefaultNetwork
	network.ClusterCIDR = netip.MustParsePrefix("10.0.0.0/8")
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: network})
	go func() { _ = m.Run(ctx) }()
	rev, err := s.Revision(ctx)
	if err != nil {
		b.Fatal(err)
	}
	running := make(chan int, 1024)
	go reportRunning(ctx, s, rev+1, running)
	for ctx.Err() == nil { // every node has its pod subnet: the cluster is ready
		ns, _, err := store.List[api.Node](ctx, s, "")
		if err != nil {
			b.Fatal(err)
		}
		ready := 0
		for _, n := range ns {
			if n.Spec.PodSubnet != "" {
				ready++
			}
		}
		if ready == nodes {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	round := 0
	var cpu time.Duration
	for b.Loop() {
		cpu0 := cpuTime()
		for i := range services {
			svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("svc-%d-%04d", round, i)},
				Spec: api.ServiceSpec{Replicas: perService, Update: api.UpdateStrategy{MaxSurge: perService / 4},
					Template: api.Template{Image: "sim/none:1", Env: map[string]string{"V": "1"}, Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}}}}
			if err := s.Create(ctx, svc); err != nil {
				b.Fatal(err)
			}
		}
		for n := 0; n < services*perService; {
			select {
			case k := <-running:
				n += k
			case <-time.After(5 * time.Minute):
				b.Fatalf("%d of %d instances Running after 5 minutes", n, services*perService)
			}
		}
		cpu += cpuTime() - cpu0
		round++
	}
	b.ReportMetric(float64(cpu)/float64(b.N)/1e6, "cpu-ms/op")
	b.ReportMetric(float64(services*perService)*float64(b.N)/b.Elapsed().Seconds(), "instances/s")
}

// reportRunning is the fleet: it writes each instance bound to a node
// Running, in batches of what came in 20 ms, 8 batches at most at once, and sends how
// many it saw Running come back.
func reportRunning(ctx context.Context, s *store.Store, from int64, running chan<- int) {
	pending := map[string]*api.Instance{}
	seen := map[string]bool{}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	sem := make(chan struct{}, 8)
	changes := s.WatchChanges(ctx, from, api.KindInstance)
	for {
		select {
		case <-ctx.Done():
			return
		case batch, ok := <-changes:
			if !ok {
				return
			}
			n := 0
			for _, c := range batch.Changes {
				in, ok := c.Object.(*api.Instance)
				switch {
				case !ok || in.Spec.Node == "":
				case in.Status.Phase == api.PhaseRunning:
					if !seen[in.Metadata.Name] {
						seen[in.Metadata.Name] = true
						n++
					}
				case in.Status.Phase == api.PhasePending || in.Status.Phase == api.PhaseScheduled:
					pending[in.Metadata.Name] = in
				}
			}
			if n > 0 {
				running <- n
			}
		case <-tick.C:
			var batch []*api.Instance
			for k, in := range pending {
				cp := *in
				in = &cp
				in.Status = api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true, StartedAt: time.Now().UTC()}
				batch = append(batch, in)
				delete(pending, k)
			}
			// Written meanwhile, as agents write theirs whatever the watch brings.
			for i := 0; i < len(batch); i += 50 {
				part := batch[i:min(i+50, len(batch))]
				sem <- struct{}{}
				go func() {
					defer func() { <-sem }()
					t := s.Txn()
					for _, in := range part {
						t.UpdateStatus(in, in.Metadata.Revision)
					}
					if t.Commit(ctx) == nil {
						return
					}
					for _, in := range part { // one changed meanwhile: each on its own
						_ = s.UpdateStatus(ctx, in, 0)
					}
				}()
			}
		}
	}
}
