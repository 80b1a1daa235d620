package scheduler_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/scheduler/schedtest"
)

// A 10,000-node cluster a third full, built once: benchmarks clone it.
var (
	benchOnce  sync.Once
	benchState *scheduler.State
)

func loaded(b *testing.B) *scheduler.State {
	benchOnce.Do(func() {
		s, err := scheduler.NewState(schedtest.Nodes(10000, 1), nil)
		if err != nil {
			b.Fatal(err)
		}
		work := schedtest.Workload(100000, 1, "pre-")
		for i := 0; i < len(work); i += 1000 {
			s.Place(work[i:i+1000], scheduler.Options{Seed: uint64(i)})
		}
		benchState = s
	})
	return benchState.Clone()
}

// benchPlace times placing batch on a fresh clone of the loaded state,
// leaving the clone out of the timing.
func benchPlace(b *testing.B, batch []scheduler.Instance) {
	base := loaded(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := base.Clone()
		b.StartTimer()
		s.Place(batch, scheduler.Options{Seed: uint64(i)})
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "placements/s")
}

// BenchmarkPlaceBatch: one 1,000-instance mixed batch on 10,000 nodes
// that already hold 100,000 instances.
func BenchmarkPlaceBatch(b *testing.B) {
	benchPlace(b, schedtest.Workload(1000, 2, "new-"))
}

// BenchmarkPlaceSpread: replicas spread over zone and node, the path
// that may look past the first candidates.
func BenchmarkPlaceSpread(b *testing.B) {
	var batch []scheduler.Instance
	for i := range 1000 {
		batch = append(batch, scheduler.Instance{ID: fmt.Sprint("s", i), Group: fmt.Sprint("spread-", i%20),
			Spread: []string{"zone", scheduler.SpreadNode}, Resources: scheduler.Resources{MilliCPU: 200, MemoryBytes: 256 << 20, Pids: 10}})
	}
	benchPlace(b, batch)
}

// BenchmarkPlaceExclusive: whole-core requests, which choose cores per
// candidate.
func BenchmarkPlaceExclusive(b *testing.B) {
	var batch []scheduler.Instance
	for i := range 1000 {
		batch = append(batch, scheduler.Instance{ID: fmt.Sprint("x", i), ExclusiveCPUs: 1 + i%4,
			Resources: scheduler.Resources{MemoryBytes: 1 << 30, Pids: 10}})
	}
	benchPlace(b, batch)
}

// BenchmarkPlacePinned: each instance constrained to one named node, so
// each needs its own class; the label index keeps that from scanning all
// nodes per instance.
func BenchmarkPlacePinned(b *testing.B) {
	var batch []scheduler.Instance
	for i := range 1000 {
		batch = append(batch, scheduler.Instance{ID: fmt.Sprint("p", i), Resources: scheduler.Resources{MilliCPU: 100, MemoryBytes: 64 << 20},
			Constraints: []scheduler.Constraint{{Key: scheduler.NodeNameKey, Op: scheduler.OpEq, Values: []string{fmt.Sprintf("node-%05d", i*7)}}}})
	}
	benchPlace(b, batch)
}

// BenchmarkFailureReason: an instance that fits nowhere scans every node
// to explain why.
func BenchmarkFailureReason(b *testing.B) {
	s := loaded(b)
	inst := []scheduler.Instance{{ID: "huge", Resources: scheduler.Resources{MemoryBytes: 1 << 50}}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if p := s.Place(inst, scheduler.Options{Seed: uint64(i), NoPreemption: true}); len(p.Failures) != 1 {
			b.Fatal("huge instance placed")
		}
	}
}

// BenchmarkVerify: checking a 1,000-instance plan against the state it
// was made from, as the store's commit path does.
func BenchmarkVerify(b *testing.B) {
	base := loaded(b)
	p := base.Clone().Place(schedtest.Workload(1000, 3, "v-"), scheduler.Options{Seed: 1})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if cs := base.Verify(p); len(cs) != 0 {
			b.Fatal(cs)
		}
	}
}

// BenchmarkClone: snapshotting 10,000 nodes and 100,000 allocations.
func BenchmarkClone(b *testing.B) {
	base := loaded(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		base.Clone()
	}
}
