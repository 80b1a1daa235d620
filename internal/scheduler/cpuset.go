package scheduler

import (
	"fmt"
	"slices"
)

// cpuState tracks which physical cores of a node are held by exclusive
// instances. A core is held whole or not at all, so an exclusive instance
// never shares a core with another workload.
type cpuState struct {
	cores     []coreState // sorted by NUMA, then core ID
	numaIDs   []int       // distinct NUMA ids, ascending
	numaFree  []int       // free threads on whole free cores, per numaIDs index
	free      int         // free threads on whole free cores, node total
	threadIdx []int32     // logical CPU id → index in cores, -1 if absent
}

type coreState struct {
	id      int
	numa    int // index into numaIDs
	threads []int
	held    bool
}

// maxCPUID bounds logical CPU ids, which index a slice per node.
const maxCPUID = 1 << 16

func newCPUState(t Topology) (*cpuState, error) {
	if len(t.Cores) == 0 {
		return nil, nil
	}
	c := &cpuState{}
	for _, core := range t.Cores {
		if len(core.Threads) == 0 {
			return nil, fmt.Errorf("core %d: no threads: %w", core.ID, ErrInvalid)
		}
		if !slices.Contains(c.numaIDs, core.NUMA) {
			c.numaIDs = append(c.numaIDs, core.NUMA)
		}
	}
	slices.Sort(c.numaIDs)
	cores := slices.Clone(t.Cores)
	slices.SortFunc(cores, func(a, b Core) int {
		if a.NUMA != b.NUMA {
			return a.NUMA - b.NUMA
		}
		return a.ID - b.ID
	})
	c.numaFree = make([]int, len(c.numaIDs))
	maxCPU := -1
	for _, core := range cores {
		for _, cpu := range core.Threads {
			if cpu < 0 || cpu > maxCPUID {
				return nil, fmt.Errorf("core %d: cpu %d out of range: %w", core.ID, cpu, ErrInvalid)
			}
			maxCPU = max(maxCPU, cpu)
		}
	}
	c.threadIdx = make([]int32, maxCPU+1)
	for i := range c.threadIdx {
		c.threadIdx[i] = -1
	}
	for i, core := range cores {
		th := slices.Clone(core.Threads)
		slices.Sort(th)
		for _, cpu := range th {
			if c.threadIdx[cpu] >= 0 {
				return nil, fmt.Errorf("core %d: cpu %d listed twice: %w", core.ID, cpu, ErrInvalid)
			}
			c.threadIdx[cpu] = int32(i)
		}
		n := slices.Index(c.numaIDs, core.NUMA)
		c.cores = append(c.cores, coreState{id: core.ID, numa: n, threads: th})
		c.numaFree[n] += len(th)
		c.free += len(th)
	}
	return c, nil
}

func (c *cpuState) clone() *cpuState {
	if c == nil {
		return nil
	}
	d := *c
	d.cores = slices.Clone(c.cores)
	d.numaFree = slices.Clone(c.numaFree)
	// numaIDs, threads and threadIdx never change after construction.
	return &d
}

// choice is the outcome of choosing cores for a request of n CPUs.
type choice struct {
	numa  int // NUMA index when one node suffices, -1 when the set spans several
	held  int // threads held: n plus idle siblings of the last core
	spans int // NUMA nodes touched
}

// choose picks cores for n CPUs without taking them: whole free cores only,
// on the single NUMA node that fits most tightly when one does, otherwise
// from the NUMA nodes with most free cores first.
func (c *cpuState) choose(n int) (choice, bool) {
	if c == nil || n <= 0 || c.free < n {
		return choice{}, false
	}
	best := -1
	for i, f := range c.numaFree {
		if f >= n && (best < 0 || f < c.numaFree[best]) {
			best = i
		}
	}
	if best >= 0 {
		held := 0
		for i := range c.cores {
			k := &c.cores[i]
			if k.numa != best || k.held {
				continue
			}
			held += len(k.threads)
			if held >= n {
				break
			}
		}
		return choice{numa: best, held: held, spans: 1}, true
	}
	held, spans := 0, 0
	for _, nu := range c.numaOrder() {
		spans++
		for i := range c.cores {
			k := &c.cores[i]
			if k.numa != nu || k.held {
				continue
			}
			held += len(k.threads)
			if held >= n {
				return choice{numa: -1, held: held, spans: spans}, true
			}
		}
	}
	return choice{}, false
}

// numaOrder lists NUMA indexes by free threads, most first, ties by id.
func (c *cpuState) numaOrder() []int {
	order := make([]int, len(c.numaIDs))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return c.numaFree[b] - c.numaFree[a] })
	return order
}

// take lists the cores choose picked (the caller holds them), the CPUs
// given to the instance and the idle siblings held with them.
func (c *cpuState) take(n int, ch choice) (cpus, reserved []int, cores []int32) {
	var order []int
	if ch.numa >= 0 {
		order = []int{ch.numa}
	} else {
		order = c.numaOrder()
	}
	for _, nu := range order {
		for i := range c.cores {
			k := &c.cores[i]
			if k.numa != nu || k.held {
				continue
			}
			cores = append(cores, int32(i))
			for _, t := range k.threads {
				if len(cpus) < n {
					cpus = append(cpus, t)
				} else {
					reserved = append(reserved, t)
				}
			}
			if len(cpus) >= n {
				slices.Sort(cpus)
				return cpus, reserved, cores
			}
		}
	}
	panic("scheduler: cpu choice no longer valid") // choose and take run back to back
}

func (c *cpuState) hold(i int) {
	k := &c.cores[i]
	k.held = true
	c.numaFree[k.numa] -= len(k.threads)
	c.free -= len(k.threads)
}

func (c *cpuState) release(i int) {
	k := &c.cores[i]
	k.held = false
	c.numaFree[k.numa] += len(k.threads)
	c.free += len(k.threads)
}

// coresOf maps a CPU set to the cores it touches, checking that each is
// known and whole-free.
func (c *cpuState) coresOf(cpus []int) ([]int32, error) {
	if c == nil {
		return nil, fmt.Errorf("cpus %v: node has no cpu topology: %w", cpus, ErrDoesNotFit)
	}
	var out []int32
	for _, cpu := range cpus {
		if cpu < 0 || cpu >= len(c.threadIdx) || c.threadIdx[cpu] < 0 {
			return nil, fmt.Errorf("cpu %d: not on node: %w", cpu, ErrInvalid)
		}
		i := c.threadIdx[cpu]
		if slices.Contains(out, i) {
			continue
		}
		if c.cores[i].held {
			return nil, fmt.Errorf("cpu %d: core %d held by another instance: %w", cpu, c.cores[i].id, ErrDoesNotFit)
		}
		out = append(out, i)
	}
	return out, nil
}

// heldThreads counts the threads of the given cores.
func (c *cpuState) heldThreads(cores []int32) int {
	n := 0
	for _, i := range cores {
		n += len(c.cores[i].threads)
	}
	return n
}
