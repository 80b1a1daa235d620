package scheduler_test

import (
	"fmt"
	"reflect"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/scheduler/schedtest"
)

var zones = []string{"a", "b", "c"}

func genNodes(t *rapid.T, minN int) []scheduler.Node {
	n := rapid.IntRange(minN, 24).Draw(t, "nodes")
	nodes := make([]scheduler.Node, n)
	for i := range nodes {
		cores := rapid.IntRange(1, 12).Draw(t, "cores")
		threads := rapid.IntRange(1, 2).Draw(t, "threads")
		numa := rapid.IntRange(1, min(4, cores)).Draw(t, "numa")
		mem := int64(rapid.IntRange(1, 32).Draw(t, "memGi")) * schedtest.Gi
		nd := schedtest.Node(fmt.Sprintf("n%d", i), schedtest.NodeShape{Cores: cores, Threads: threads, NUMA: numa, MemoryPerCPU: mem},
			map[string]string{"zone": zones[i%len(zones)], "disk": rapid.SampledFrom([]string{"ssd", "hdd"}).Draw(t, "disk")})
		nd.Capacity.Pids = int64(rapid.IntRange(10, 400).Draw(t, "pids"))
		nd.Ready = rapid.IntRange(0, 4).Draw(t, "ready") > 0
		nodes[i] = nd
	}
	return nodes
}

func genBatch(t *rapid.T, prefix string, maxN int) []scheduler.Instance {
	n := rapid.IntRange(1, maxN).Draw(t, "batch")
	out := make([]scheduler.Instance, n)
	for i := range out {
		inst := scheduler.Instance{
			ID:       fmt.Sprintf("%s%d", prefix, i),
			Group:    rapid.SampledFrom([]string{"", "g1", "g2", "g3"}).Draw(t, "group"),
			Priority: rapid.IntRange(0, 3).Draw(t, "prio"),
			Resources: scheduler.Resources{
				MilliCPU:    int64(rapid.IntRange(0, 4000).Draw(t, "milli")),
				MemoryBytes: int64(rapid.IntRange(0, 8192).Draw(t, "memMi")) * schedtest.Mi,
				Pids:        int64(rapid.IntRange(0, 100).Draw(t, "pids")),
			},
		}
		if rapid.IntRange(0, 3).Draw(t, "excl?") == 0 {
			inst.ExclusiveCPUs = rapid.IntRange(1, 6).Draw(t, "excl")
		}
		if rapid.IntRange(0, 4).Draw(t, "ports?") == 0 {
			inst.HostPorts = []scheduler.Port{{Number: rapid.SampledFrom([]int{80, 443}).Draw(t, "port")}}
		}
		if inst.Group != "" {
			inst.AntiAffinity = rapid.IntRange(0, 4).Draw(t, "anti") == 0
			if rapid.Bool().Draw(t, "spread?") {
				inst.Spread = []string{rapid.SampledFrom([]string{"zone", scheduler.SpreadNode}).Draw(t, "spread")}
			}
		}
		if rapid.IntRange(0, 5).Draw(t, "where?") == 0 {
			inst.Constraints = []scheduler.Constraint{{Key: "disk", Op: scheduler.OpEq, Values: []string{"ssd"}}}
		}
		out[i] = inst
	}
	return out
}

// checkInvariants asserts what must hold of any state the scheduler made:
// no node beyond capacity, host ports and anti-affinity respected,
// exclusive CPU sets disjoint and made of whole cores.
func checkInvariants(t *rapid.T, s *scheduler.State) {
	for _, n := range s.Nodes() {
		if n.Used.MilliCPU > n.Capacity.MilliCPU || n.Used.MemoryBytes > n.Capacity.MemoryBytes || n.Used.Pids > n.Capacity.Pids {
			t.Fatalf("node %s over-committed: used %+v of %+v", n.Name, n.Used, n.Capacity)
		}
		ports := map[int]string{}
		anti := map[string]int{}
		held := map[int]string{}
		for _, id := range n.Instances {
			a, _ := s.Allocation(id)
			for _, p := range a.Instance.HostPorts {
				if other, ok := ports[p.Number]; ok {
					t.Fatalf("node %s: port %d used by %s and %s", n.Name, p.Number, other, id)
				}
				ports[p.Number] = id
			}
			if a.Instance.AntiAffinity {
				anti[a.Instance.Group]++
			}
			for _, c := range a.CPUSet {
				if other, ok := held[c]; ok {
					t.Fatalf("node %s: cpu %d given to %s and %s", n.Name, c, other, id)
				}
				held[c] = id
			}
			if len(a.CPUSet) != a.Instance.ExclusiveCPUs {
				t.Fatalf("instance %s: %d cpus for a request of %d", id, len(a.CPUSet), a.Instance.ExclusiveCPUs)
			}
		}
		for g, c := range anti {
			if c > 1 {
				t.Fatalf("node %s: %d anti-affine replicas of %s", n.Name, c, g)
			}
		}
	}
}

// checkWholeCores asserts that each exclusive placement holds whole cores
// and wastes less than one core: only the last core may have idle siblings.
func checkWholeCores(t *rapid.T, nodes []scheduler.Node, p *scheduler.Plan) {
	topo := map[string]scheduler.Topology{}
	for _, n := range nodes {
		topo[n.Name] = n.Topology
	}
	for _, pl := range p.Placements {
		if len(pl.CPUSet) == 0 {
			continue
		}
		got := append(slices.Clone(pl.CPUSet), pl.Reserved...)
		var want []int
		partial := 0
		for _, c := range topo[pl.Node].Cores {
			n := 0
			for _, th := range c.Threads {
				if slices.Contains(got, th) {
					n++
				}
			}
			if n > 0 {
				want = append(want, c.Threads...)
				if len(c.Threads) > 1 {
					partialThreads := 0
					for _, th := range c.Threads {
						if slices.Contains(pl.CPUSet, th) {
							partialThreads++
						}
					}
					if partialThreads < len(c.Threads) {
						partial++
					}
				}
			}
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("instance %s on %s: cpus+idle %v are not whole cores %v", pl.Instance.ID, pl.Node, got, want)
		}
		if partial > 1 {
			t.Fatalf("instance %s on %s: %d cores with idle siblings, at most one needed", pl.Instance.ID, pl.Node, partial)
		}
	}
}

func TestPropertyNoOvercommit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1)
		s, err := scheduler.NewState(nodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		ready := map[string]bool{}
		for _, n := range nodes {
			ready[n.Name] = n.Ready
		}
		for b := range rapid.IntRange(1, 4).Draw(t, "batches") {
			if b > 0 && rapid.Bool().Draw(t, "flip") {
				n := nodes[rapid.IntRange(0, len(nodes)-1).Draw(t, "flipNode")].Name
				ready[n] = !ready[n]
				if err := s.SetReady(n, ready[n]); err != nil {
					t.Fatal(err)
				}
			}
			batch := genBatch(t, fmt.Sprintf("b%d-", b), 40)
			p := s.Place(batch, scheduler.Options{Seed: rapid.Uint64().Draw(t, "seed")})
			if len(p.Placements)+len(p.Failures) != len(batch) {
				t.Fatalf("%d placements + %d failures for %d instances", len(p.Placements), len(p.Failures), len(batch))
			}
			placedOn := map[string]scheduler.Placement{}
			for _, pl := range p.Placements {
				if !ready[pl.Node] {
					t.Fatalf("instance %s placed on NotReady node %s", pl.Instance.ID, pl.Node)
				}
				placedOn[pl.Instance.ID] = pl
			}
			// Evictions make room for a placement on their own node, only
			// ever evict lower priorities, never this batch's instances.
			for _, e := range p.Preemptions {
				pl, ok := placedOn[e.For]
				if !ok || pl.Node != e.Node {
					t.Fatalf("eviction %+v not followed by a placement of %s on %s", e, e.For, e.Node)
				}
				if e.Priority >= pl.Instance.Priority {
					t.Fatalf("eviction %+v for priority %d", e, pl.Instance.Priority)
				}
				if _, mine := placedOn[e.Instance]; mine {
					t.Fatalf("eviction %+v of an instance placed by the same batch", e)
				}
				if _, still := s.Allocation(e.Instance); still {
					t.Fatalf("evicted %s still allocated", e.Instance)
				}
			}
			checkWholeCores(t, nodes, p)
			checkInvariants(t, s)
		}
	})
}

func TestPropertySameSeedSamePlan(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1)
		s, err := scheduler.NewState(nodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		s.Place(genBatch(t, "pre-", 30), scheduler.Options{Seed: 1})
		batch := genBatch(t, "x-", 40)
		seed := rapid.Uint64().Draw(t, "seed")
		a, b := s.Clone(), s.Clone()
		pa := a.Place(batch, scheduler.Options{Seed: seed})
		pb := b.Place(slices.Clone(batch), scheduler.Options{Seed: seed})
		if !reflect.DeepEqual(pa, pb) {
			t.Fatalf("same seed, different plans:\n%s\n%s", schedtest.FormatPlan(pa), schedtest.FormatPlan(pb))
		}
		if !reflect.DeepEqual(a.Allocations(), b.Allocations()) {
			t.Fatal("same seed, different states")
		}
		// A plan made on a snapshot applies cleanly to the state it came
		// from and yields the same allocations.
		if cs := s.Verify(pa); len(cs) != 0 {
			t.Fatalf("plan conflicts with its own base state: %v", cs)
		}
		if cs := s.Apply(pa); len(cs) != 0 {
			t.Fatalf("apply: %v", cs)
		}
		if !reflect.DeepEqual(s.Allocations(), a.Allocations()) {
			t.Fatal("applying the plan gave other allocations than placing it")
		}
	})
}

func TestPropertySpreadEven(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Roomy nodes: only readiness and constraints limit where replicas go.
		n := rapid.IntRange(1, 30).Draw(t, "nodes")
		var nodes []scheduler.Node
		for i := range n {
			nd := schedtest.Node(fmt.Sprintf("n%d", i), schedtest.NodeShape{Cores: 64, Threads: 1, NUMA: 1, MemoryPerCPU: 4 * schedtest.Gi},
				map[string]string{"zone": zones[rapid.IntRange(0, 2).Draw(t, "zone")]})
			nd.Ready = rapid.IntRange(0, 4).Draw(t, "ready") > 0
			nodes = append(nodes, nd)
		}
		s, err := scheduler.NewState(nodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		key := rapid.SampledFrom([]string{"zone", scheduler.SpreadNode}).Draw(t, "key")
		replicas := rapid.IntRange(1, 120).Draw(t, "replicas")
		// Unrelated load packs some nodes first.
		s.Place(genBatch(t, "noise-", 20), scheduler.Options{Seed: 9})
		placed := 0
		for placed < replicas {
			size := min(replicas-placed, rapid.IntRange(1, 50).Draw(t, "size"))
			batch := make([]scheduler.Instance, size)
			for i := range batch {
				batch[i] = scheduler.Instance{
					ID: fmt.Sprintf("web-%d", placed+i), Group: "web", Spread: []string{key},
					Resources: scheduler.Resources{MilliCPU: 100, MemoryBytes: schedtest.Mi, Pids: 1},
				}
			}
			s.Place(batch, scheduler.Options{Seed: rapid.Uint64().Draw(t, "seed"), Candidates: rapid.IntRange(1, 4).Draw(t, "k")})
			placed += size
		}
		counts := map[string]int{}
		for _, nd := range nodes {
			if nd.Ready {
				dom := nd.Name
				if key == "zone" {
					dom = nd.Labels["zone"]
				}
				counts[dom] += 0
			}
		}
		total := 0
		for _, a := range s.Allocations() {
			if a.Instance.Group != "web" {
				continue
			}
			nd, _ := s.Node(a.Node)
			dom := nd.Name
			if key == "zone" {
				dom = nd.Labels["zone"]
			}
			counts[dom]++
			total++
		}
		if len(counts) == 0 {
			return
		}
		if total != replicas {
			t.Fatalf("placed %d of %d replicas on roomy nodes", total, replicas)
		}
		share := (replicas + len(counts) - 1) / len(counts)
		for dom, c := range counts {
			if c > share {
				t.Fatalf("%s %s holds %d replicas, even share is %d: %v", key, dom, c, share, counts)
			}
		}
	})
}

// TestPropertyVerifyDetectsChange: after a newer state takes a node's
// room, verify flags exactly the placements that no longer fit, and apply
// keeps the state within capacity.
func TestPropertyVerifyAfterChange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		nodes := genNodes(t, 1)
		s, err := scheduler.NewState(nodes, nil)
		if err != nil {
			t.Fatal(err)
		}
		snap := s.Clone()
		p := snap.Place(genBatch(t, "p-", 40), scheduler.Options{Seed: 5})
		// The live state moves on: another batch, and maybe a node fails.
		s.Place(genBatch(t, "q-", 40), scheduler.Options{Seed: 6, NoPreemption: true})
		if rapid.Bool().Draw(t, "fail") {
			if err := s.SetReady(nodes[0].Name, false); err != nil {
				t.Fatal(err)
			}
		}
		before := s.Allocations()
		conflicts := s.Verify(p)
		if !reflect.DeepEqual(before, s.Allocations()) {
			t.Fatal("verify changed the state")
		}
		applied := s.Apply(p)
		if !reflect.DeepEqual(conflicts, applied) {
			t.Fatalf("verify said %v, apply said %v", conflicts, applied)
		}
		checkInvariants(t, s)
		bad := map[string]bool{}
		for _, c := range conflicts {
			bad[c.Instance] = true
		}
		for _, pl := range p.Placements {
			a, ok := s.Allocation(pl.Instance.ID)
			if bad[pl.Instance.ID] == (ok && a.Node == pl.Node) {
				t.Fatalf("instance %s: conflict %v but allocated %v", pl.Instance.ID, bad[pl.Instance.ID], ok)
			}
		}
	})
}

// TestPropertyFewestVictims: on one node with a handful of lower-priority
// instances, preemption evicts exactly as few as a brute force finds.
func TestPropertyFewestVictims(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		node := schedtest.Node("n", schedtest.NodeShape{Cores: 16, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil)
		s, err := scheduler.NewState([]scheduler.Node{node}, nil)
		if err != nil {
			t.Fatal(err)
		}
		type small struct {
			milli, mem int64
			prio       int
		}
		var existing []small
		var batch []scheduler.Instance
		for i := range rapid.IntRange(1, 9).Draw(t, "allocs") {
			e := small{
				milli: int64(rapid.IntRange(1, 8).Draw(t, "cpu")) * 500,
				mem:   int64(rapid.IntRange(1, 8).Draw(t, "mem")) * schedtest.Gi / 2,
				prio:  rapid.IntRange(0, 4).Draw(t, "prio"),
			}
			batch = append(batch, scheduler.Instance{ID: fmt.Sprint("a", i), Priority: e.prio,
				Resources: scheduler.Resources{MilliCPU: e.milli, MemoryBytes: e.mem}})
		}
		p := s.Place(batch, scheduler.Options{NoPreemption: true})
		for _, pl := range p.Placements {
			existing = append(existing, small{pl.Instance.Resources.MilliCPU, pl.Instance.Resources.MemoryBytes, pl.Instance.Priority})
		}
		st, _ := s.Node("n")
		free := scheduler.Resources{MilliCPU: st.Capacity.MilliCPU - st.Used.MilliCPU, MemoryBytes: st.Capacity.MemoryBytes - st.Used.MemoryBytes}
		hi := scheduler.Instance{ID: "hi", Priority: 5, Resources: scheduler.Resources{
			MilliCPU:    int64(rapid.IntRange(1, 32).Draw(t, "hiCPU")) * 500,
			MemoryBytes: int64(rapid.IntRange(1, 32).Draw(t, "hiMem")) * schedtest.Gi / 2,
		}}
		want := -1
		for mask := 0; mask < 1<<len(existing); mask++ {
			m, mem, k := free.MilliCPU, free.MemoryBytes, 0
			for i, e := range existing {
				if mask&(1<<i) != 0 {
					m, mem, k = m+e.milli, mem+e.mem, k+1
				}
			}
			if m >= hi.Resources.MilliCPU && mem >= hi.Resources.MemoryBytes && (want < 0 || k < want) {
				want = k
			}
		}
		p = s.Place([]scheduler.Instance{hi}, scheduler.Options{Seed: 1})
		if want < 0 {
			if len(p.Placements) != 0 {
				t.Fatalf("placed %v though no eviction set makes room", p.Placements)
			}
			return
		}
		if len(p.Placements) != 1 || len(p.Preemptions) != want {
			t.Fatalf("evicted %d (%v), fewest possible is %d", len(p.Preemptions), p.Preemptions, want)
		}
	})
}
