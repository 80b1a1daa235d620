package controller

import (
	"context"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// A controller pass over a cluster of the size, every instance
// Running on a live node: what each watch batch (a node's status
// reports) costs the controllers at steady state, and with a few
// instances to place (an apply under way).
func BenchmarkPassAtScale(b *testing.B) {
	for _, size := range []struct{ nodes, services, perService int }{{1000, 20, 1000}, {15000, 1000, 300}} {
		b.Run(fmt.Sprintf("%d-instances", size.services*size.perService), func(b *testing.B) {
			s, err := store.Open(b.Context(), store.Config{DataDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, StartGrace: -1})
			sn, live, err := scaleSnapshot(b.Context(), m, size.nodes, size.services, size.perService)
			if err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			// The first passes write each service's status (its rollout
			// ends in the second); then there is nothing to write.
			for range 3 {
				if err := m.pass(ctx, sn, live); err != nil {
					b.Fatal(err)
				}
				if sn.services, _, err = store.List[api.Service](ctx, s, ""); err != nil {
					b.Fatal(err)
				}
			}
			b.Run("steady", func(b *testing.B) {
				cpu0 := cpuTime()
				for b.Loop() {
					if err := m.pass(ctx, sn, live); err != nil {
						b.Fatal(err)
					}
				}
				// CPU time, which a busy machine does not stretch as it does wall time.
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
			})
			// As the cache hands passes: a batch of status reports about
			// the instances of a few services, the others settled.
			b.Run("steady-few-changed", func(b *testing.B) {
				sn.changed = map[ownerID]bool{}
				for _, svc := range sn.services[:10] {
					sn.changed[ownerID{api.KindService, svc.Metadata.Namespace, svc.Metadata.Name, svc.Metadata.UID}] = true
				}
				defer func() { sn.changed = nil }()
				cpu0 := cpuTime()
				for b.Loop() {
					sn.owned = nil // each snapshot groups its instances afresh
					if err := m.pass(ctx, sn, live); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
			})
			// Every service's status to write again, as in an apply, where
			// each pass finds more instances of each ready.
			steady := sn.services
			b.Run("every-status", func(b *testing.B) {
				var cpu time.Duration
				for range b.N {
					b.StopTimer()
					sn.services = make([]*api.Service, len(steady))
					for i, svc := range steady {
						sn.services[i] = own(svc)
						sn.services[i].Status.ReadyReplicas = 0
					}
					cpu0 := cpuTime()
					b.StartTimer()
					if err := m.pass(ctx, sn, live); err != nil {
						b.Fatal(err)
					}
					cpu += cpuTime() - cpu0
				}
				b.ReportMetric(float64(cpu)/float64(b.N)/1e6, "cpu-ms/op")
			})
		})
	}
}

// scaleSnapshot is a cluster of nodes, and services of perService
// instances each, all Running and spread over the nodes.
func scaleSnapshot(ctx context.Context, m *Manager, nodes, services, perService int) (*snapshot, map[string]bool, error) {
	sn := &snapshot{}
	live := map[string]bool{}
	now := time.Now().UTC()
	for i := range nodes {
		n := &api.Node{Metadata: api.Metadata{Name: fmt.Sprintf("n%05d", i), Revision: 1},
			Spec:   api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 32000, Memory: 128 << 30, Pids: 100000}, PodSubnet: fmt.Sprintf("10.%d.%d.0/24", i/256, i%256)},
			Status: api.NodeStatus{Condition: api.NodeReady}}
		sn.nodes = append(sn.nodes, n)
		live[n.Metadata.Name] = true
	}
	k := 0
	for i := range services {
		svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("svc-%04d", i), UID: fmt.Sprintf("u%d", i), Revision: 1},
			Spec: api.ServiceSpec{Replicas: perService, Template: api.Template{Image: "sim/none:1", Env: map[string]string{"V": "1"},
				Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}}}}
		if err := m.s.Create(ctx, svc); err != nil { // stored: the pass writes its status
			return nil, nil, err
		}
		hash := m.templateHash(svc)
		sn.services = append(sn.services, svc)
		for j := range perService {
			in := m.newInstance(svc.Metadata, api.KindService, nil, svc.Spec.Template, svc.Spec.Placement, 0, hash, 0, 0, nil)
			in.Metadata.Name = fmt.Sprintf("%s-%05d", svc.Metadata.Name, j)
			in.Metadata.Revision, in.Metadata.CreatedAt = int64(k+2), now
			in.Spec.Node = sn.nodes[k%nodes].Metadata.Name
			in.Status = api.InstanceStatus{Phase: api.PhaseRunning, Healthy: true, StartedAt: now}
			sn.instances = append(sn.instances, in)
			k++
		}
	}
	// Counted as the cache counts them, which Run's passes read.
	t := newTally()
	for _, in := range sn.instances {
		t.add(in, 1)
	}
	sn.counted, sn.unbound, sn.nodeGen = true, t.unbound, 1
	// And their owners numbered as the cache numbers them.
	num := map[ownerID]int32{}
	for _, in := range sn.instances {
		k := instanceOwner(in)
		n, ok := num[k]
		if !ok {
			n = int32(len(sn.owners))
			sn.owners = append(sn.owners, k)
			num[k] = n
		}
		sn.ownerOf = append(sn.ownerOf, n)
	}
	return sn, live, nil
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkNodesPass is the node lifecycle's share of a pass at 15,000
// nodes and 300,000 instances: every node beating, then 1% of them gone
// with their instances Lost long since. The instances of the nodes gone
// are indexed as the cache hands them to a pass.
func BenchmarkNodesPass(b *testing.B) {
	m, sn, live := fullScale(b)
	ctx := b.Context()
	for _, dead := range []int{0, 150} {
		b.Run(fmt.Sprintf("%d-gone", dead), func(b *testing.B) {
			for _, n := range sn.nodes[:dead] {
				live[n.Metadata.Name] = false
				n.Status.Condition = api.NodeNotReady
			}
			for _, in := range sn.instances {
				if !live[in.Spec.Node] {
					in.Status.Phase = api.PhaseLost
				}
			}
			sn.onDead = nil
			sn.onDead = sn.deadNodes(live)
			cpu0 := cpuTime()
			for b.Loop() {
				if err := m.nodesPass(ctx, sn, live); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
		})
	}
}

// BenchmarkSchedulerState is the scheduler's view of a cluster of 15,000
// nodes and 300,000 instances built afresh, as a pass that places
// anything did before the view was kept (BenchmarkSchedViewUpdate), and
// as the first such pass, or one after nodes came or went, still does.
func BenchmarkSchedulerState(b *testing.B) {
	_, sn, _ := fullScale(b)
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := schedulerState(sn); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

// BenchmarkSchedViewUpdate is the scheduler's view kept from pass to
// pass, brought up to date with a node loss at 15,000 nodes and 300,000
// instances: 150 nodes NotReady and their 3,000 instances Lost, in each
// of the 1,000 services; what the build above cost each pass of it.
func BenchmarkSchedViewUpdate(b *testing.B) {
	_, sn, _ := fullScale(b)
	sn.lent = true
	v, err := buildView(sn, true)
	if err != nil {
		b.Fatal(err)
	}
	// Each round's change goes one way, then the next round's back.
	lost := func(down bool) {
		sn.changed = map[ownerID]bool{}
		for i, n := range sn.nodes[:150] {
			n = own(n)
			n.Status.Condition = map[bool]api.NodeCondition{true: api.NodeNotReady, false: api.NodeReady}[down]
			sn.nodes[i] = n
		}
		sn.nodeGen++
		for i, in := range sn.instances {
			if i%100 < 1 { // every 100th: 3,000, on the nodes of every service
				in = own(in)
				in.Status.Phase = map[bool]api.Phase{true: api.PhaseLost, false: api.PhaseRunning}[down]
				sn.instances[i] = in
				sn.changed[instanceOwner(in)] = true
			}
		}
	}
	b.ReportAllocs()
	cpu0 := cpuTime()
	down := true
	for b.Loop() {
		b.StopTimer()
		lost(down)
		down = !down
		b.StartTimer()
		if !v.update(sn) {
			b.Fatal("the view was not updated")
		}
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N)/1e6, "cpu-ms/op")
}

// fullScale is a manager over a store of its own, and a snapshot of
// 15,000 live nodes with 300,000 instances in 1,000 services.
func fullScale(b *testing.B) (*Manager, *snapshot, map[string]bool) {
	s, err := store.Open(b.Context(), store.Config{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, StartGrace: -1})
	sn, live, err := scaleSnapshot(b.Context(), m, 15000, 1000, 300)
	if err != nil {
		b.Fatal(err)
	}
	return m, sn, live
}
