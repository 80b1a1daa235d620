package schedtest

import (
	"reflect"
	"slices"
	"testing"
)

func TestTopologyNumbering(t *testing.T) {
	topo := Topology(4, 2, 2)
	want := [][]int{{0, 4}, {1, 5}, {2, 6}, {3, 7}}
	for i, c := range topo.Cores {
		if !slices.Equal(c.Threads, want[i]) || c.NUMA != i/2 {
			t.Fatalf("core %d: %+v, want threads %v on NUMA %d", i, c, want[i], i/2)
		}
	}
}

func TestSyntheticNodesMixed(t *testing.T) {
	nodes := Nodes(2000, 1)
	if !reflect.DeepEqual(nodes, Nodes(2000, 1)) {
		t.Fatal("same seed, different nodes")
	}
	smt, flat, numa := 0, 0, map[int]bool{}
	minCores, maxCores := 1<<30, 0
	for _, n := range nodes {
		cores := len(n.Topology.Cores)
		minCores, maxCores = min(minCores, cores), max(maxCores, cores)
		if len(n.Topology.Cores[0].Threads) == 2 {
			smt++
		} else {
			flat++
		}
		numa[n.Topology.Cores[cores-1].NUMA+1] = true
		if n.Capacity.MilliCPU != int64(cores*len(n.Topology.Cores[0].Threads))*1000 {
			t.Fatalf("node %s: capacity %d for %d cores", n.Name, n.Capacity.MilliCPU, cores)
		}
		if n.Labels["zone"] == "" || n.Labels["rack"] == "" {
			t.Fatalf("node %s: labels %v", n.Name, n.Labels)
		}
	}
	if minCores != 2 || maxCores != 128 || smt == 0 || flat == 0 || !numa[1] || !numa[4] {
		t.Fatalf("not mixed: cores %d..%d, smt %d, flat %d, numa %v", minCores, maxCores, smt, flat, numa)
	}
}

func TestWorkloadMixed(t *testing.T) {
	w := Workload(5000, 1, "x-")
	if !reflect.DeepEqual(w, Workload(5000, 1, "x-")) {
		t.Fatal("same seed, different workload")
	}
	ids := map[string]bool{}
	var excl, spread, anti, ports, cons, prio int
	for _, inst := range w {
		if ids[inst.ID] {
			t.Fatalf("duplicate id %s", inst.ID)
		}
		ids[inst.ID] = true
		if inst.ExclusiveCPUs > 0 {
			excl++
		}
		if len(inst.Spread) > 0 {
			spread++
		}
		if inst.AntiAffinity {
			anti++
		}
		if len(inst.HostPorts) > 0 {
			ports++
		}
		if len(inst.Constraints) > 0 {
			cons++
		}
		if inst.Priority > 0 {
			prio++
		}
	}
	for name, n := range map[string]int{"exclusive": excl, "spread": spread, "anti": anti, "ports": ports, "constraints": cons, "priority": prio} {
		if n == 0 {
			t.Errorf("no instance with %s", name)
		}
	}
}

func TestQuantities(t *testing.T) {
	for in, want := range map[string]int64{"500m": 500, "2": 2000, "1.5": 1500} {
		if got, err := ParseMilliCPU(in); err != nil || got != want {
			t.Errorf("ParseMilliCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"256Mi": 256 << 20, "8Gi": 8 << 30, "1G": 1e9, "512": 512, "1.5Gi": 3 << 29} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if got, err := expand("web-[2-4]"); err != nil || !slices.Equal(got, []string{"web-2", "web-3", "web-4"}) {
		t.Errorf("expand = %v, %v", got, err)
	}
	if _, err := expand("web-[4-2]"); err == nil {
		t.Error("expand accepted a reversed range")
	}
	if got := fields(`a where="zone in (a, b)" b`); !slices.Equal(got, []string{"a", "where=zone in (a, b)", "b"}) {
		t.Errorf("fields = %q", got)
	}
}
