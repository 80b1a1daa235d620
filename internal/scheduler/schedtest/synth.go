// Package schedtest holds what tests and benchmarks of the scheduler share:
// an in-memory store of nodes and allocations with revisions, generators
// of synthetic clusters and workloads, and the runner of the data-driven
// scripts in internal/scheduler/testdata.
package schedtest

import (
	"fmt"
	"math/rand/v2"

	"github.com/berth-dev/berth/internal/scheduler"
)

// Gi is a gibibyte.
const Gi = int64(1) << 30

// Mi is a mebibyte.
const Mi = int64(1) << 20

// Topology lays out cores physical cores with threads SMT siblings each
// over numa NUMA nodes, numbered as Linux does on x86: thread t of core c
// is CPU c + t*cores, and cores are split evenly across NUMA nodes.
func Topology(cores, threads, numa int) scheduler.Topology {
	if numa < 1 {
		numa = 1
	}
	per := (cores + numa - 1) / numa
	t := scheduler.Topology{Cores: make([]scheduler.Core, cores)}
	for c := range cores {
		th := make([]int, threads)
		for i := range threads {
			th[i] = c + i*cores
		}
		t.Cores[c] = scheduler.Core{ID: c, NUMA: c / per, Threads: th}
	}
	return t
}

// NodeShape describes one synthetic node.
type NodeShape struct {
	Cores, Threads, NUMA int
	MemoryPerCPU         int64
}

// Node builds a Ready node of the given shape: capacity is one CPU per
// logical thread, memory per thread as given, 512 pids per thread.
func Node(name string, sh NodeShape, labels map[string]string) scheduler.Node {
	cpus := int64(sh.Cores * sh.Threads)
	return scheduler.Node{
		Name:   name,
		Ready:  true,
		Labels: labels,
		Capacity: scheduler.Resources{
			MilliCPU:    cpus * 1000,
			MemoryBytes: cpus * sh.MemoryPerCPU,
			Pids:        cpus * 512,
		},
		Topology: Topology(sh.Cores, sh.Threads, sh.NUMA),
	}
}

// Zones are the zone label values synthetic clusters use.
var Zones = []string{"zone-a", "zone-b", "zone-c", "zone-d"}

// Nodes builds n Ready nodes with mixed, realistic shapes: 2 to 128 cores,
// SMT on for most, 1 to 4 NUMA nodes on the bigger ones, 2 to 8 GiB per
// CPU, spread over Zones and racks of 40, with disk and arch labels. The
// same seed gives the same nodes.
func Nodes(n int, seed uint64) []scheduler.Node {
	rng := rand.New(rand.NewPCG(seed, 1))
	coreChoices := []int{2, 4, 4, 8, 8, 8, 16, 16, 16, 24, 32, 32, 48, 64, 96, 128}
	nodes := make([]scheduler.Node, n)
	for i := range n {
		cores := coreChoices[rng.IntN(len(coreChoices))]
		threads := 2
		if rng.IntN(10) < 3 {
			threads = 1
		}
		numa := 1
		switch {
		case cores >= 64:
			numa = 2 + rng.IntN(3)
		case cores >= 16:
			numa = 1 + rng.IntN(2)
		}
		mem := []int64{2 * Gi, 4 * Gi, 4 * Gi, 8 * Gi}[rng.IntN(4)]
		arch := "amd64"
		if rng.IntN(10) == 0 {
			arch = "arm64"
		}
		disk := "ssd"
		if rng.IntN(4) == 0 {
			disk = "hdd"
		}
		labels := map[string]string{
			"zone": Zones[i%len(Zones)],
			"rack": fmt.Sprintf("rack-%d", i/40),
			"arch": arch,
			"disk": disk,
		}
		nodes[i] = Node(fmt.Sprintf("node-%05d", i), NodeShape{cores, threads, numa, mem}, labels)
	}
	return nodes
}

// Workload builds n pending instances in services of 1 to 30 replicas with
// mixed sizes: mostly small shared-CPU instances, some large ones, about
// 4% asking for 1 to 8 exclusive CPUs, a fifth spread over zone and node,
// some with anti-affinity, host ports, label constraints or a higher
// priority. The same seed gives the same instances; prefix keeps IDs of
// several workloads apart.
func Workload(n int, seed uint64, prefix string) []scheduler.Instance {
	rng := rand.New(rand.NewPCG(seed, 2))
	out := make([]scheduler.Instance, 0, n)
	svc := 0
	for len(out) < n {
		svc++
		group := fmt.Sprintf("%ssvc-%d", prefix, svc)
		replicas := 1 + rng.IntN(30)
		tmpl := scheduler.Instance{Group: group}
		switch r := rng.IntN(100); {
		case r < 60:
			tmpl.Resources = scheduler.Resources{MilliCPU: int64(100 * (1 + rng.IntN(10))), MemoryBytes: int64(128*(1+rng.IntN(16))) * Mi, Pids: 64}
		case r < 90:
			tmpl.Resources = scheduler.Resources{MilliCPU: int64(500 * (1 + rng.IntN(8))), MemoryBytes: int64(1+rng.IntN(8)) * Gi, Pids: 256}
		case r < 96:
			tmpl.Resources = scheduler.Resources{MilliCPU: int64(1000 * (4 + rng.IntN(13))), MemoryBytes: int64(8+rng.IntN(57)) * Gi, Pids: 1024}
		default:
			cpus := []int{1, 2, 2, 4, 4, 8}[rng.IntN(6)]
			tmpl.ExclusiveCPUs = cpus
			tmpl.Resources = scheduler.Resources{MilliCPU: int64(cpus) * 1000, MemoryBytes: int64(cpus) * 4 * Gi, Pids: 256}
		}
		switch r := rng.IntN(100); {
		case r < 20:
			tmpl.Spread = []string{"zone", scheduler.SpreadNode}
		case r < 25:
			tmpl.Spread = []string{scheduler.SpreadNode}
			tmpl.AntiAffinity = true
		}
		if rng.IntN(100) < 3 {
			tmpl.HostPorts = []scheduler.Port{{Number: 8000 + rng.IntN(100)}}
		}
		switch r := rng.IntN(100); {
		case r < 5:
			tmpl.Constraints = []scheduler.Constraint{{Key: "disk", Op: scheduler.OpEq, Values: []string{"ssd"}}}
		case r < 8:
			tmpl.Constraints = []scheduler.Constraint{{Key: "zone", Op: scheduler.OpIn, Values: []string{"zone-a", "zone-b"}}}
		case r < 10:
			tmpl.Constraints = []scheduler.Constraint{{Key: "arch", Op: scheduler.OpNe, Values: []string{"arm64"}}}
		}
		if rng.IntN(10) == 0 {
			tmpl.Priority = 100
		}
		for r := 0; r < replicas && len(out) < n; r++ {
			inst := tmpl
			inst.ID = fmt.Sprintf("%s-%d", group, r)
			out = append(out, inst)
		}
	}
	// Services arrive interleaved, not one service per batch.
	rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}
