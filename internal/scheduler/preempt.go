package scheduler

import (
	"cmp"
	"slices"
	"strings"
)

// preempt looks for the node where evicting the fewest, then the
// lowest-priority, instances of lower priority than r makes it fit, evicts
// them and places r there. Instances placed by the current batch are never
// evicted. attempted reports whether any lower-priority instance was a
// candidate at all.
func (s *State) preempt(r *req, plan *Plan) (attempted, placed bool) {
	best := int32(-1)
	var bestVictims []*alloc
	var bestCost [3]int
	for _, ni := range r.cls.nodes {
		victims, ok, seen := s.victimsOn(ni, r)
		attempted = attempted || seen
		if !ok {
			continue
		}
		cost := [3]int{len(victims), 0, 0}
		for _, v := range victims {
			cost[1] = max(cost[1], v.inst.Priority)
			cost[2] += v.inst.Priority
		}
		if best < 0 || slices.Compare(cost[:], bestCost[:]) < 0 {
			best, bestVictims, bestCost = ni, victims, cost
		}
	}
	if best < 0 {
		return attempted, false
	}
	slices.SortFunc(bestVictims, func(a, b *alloc) int { return strings.Compare(a.inst.ID, b.inst.ID) })
	for _, v := range bestVictims {
		plan.Preemptions = append(plan.Preemptions, Eviction{
			Instance: v.inst.ID, Node: s.nodes[best].name, Priority: v.inst.Priority, For: r.inst.ID,
		})
		s.removeAlloc(v)
	}
	code, _, ch := s.check(best, r)
	if code != fitOK {
		panic("scheduler: preemption victims did not free enough") // victimsOn checked this
	}
	plan.Placements = append(plan.Placements, s.commit(best, r, ch))
	return true, true
}

// victimsOn finds a small set of lower-priority allocations on node ni
// whose eviction lets r fit. Owners of conflicting host ports and, with
// anti-affinity, replicas of r's group must go; the rest are taken lowest
// priority and largest first, then any that turn out unnecessary are put
// back.
func (s *State) victimsOn(ni int32, r *req) (victims []*alloc, ok, movableSeen bool) {
	n := &s.nodes[ni]
	var must, cands []*alloc
	for _, a := range n.allocs {
		movable := a.inst.Priority < r.inst.Priority && a.seq != s.seq
		blocks := r.anti && a.grp == r.grp
		for _, p := range a.ports {
			blocks = blocks || slices.Contains(r.ports, p)
		}
		switch {
		case blocks && !movable:
			return nil, false, movableSeen
		case blocks:
			must = append(must, a)
		case movable:
			cands = append(cands, a)
		}
		movableSeen = movableSeen || movable
	}
	if len(must)+len(cands) == 0 {
		return nil, false, false
	}
	all := append(slices.Clone(must), cands...)
	if !s.fitsWithout(ni, r, all) {
		return nil, false, movableSeen
	}
	weight := func(a *alloc) float64 {
		return frac(a.milli, n.cap.MilliCPU) + frac(a.inst.Resources.MemoryBytes, n.cap.MemoryBytes)
	}
	slices.SortFunc(cands, func(a, b *alloc) int {
		return cmp.Or(
			cmp.Compare(a.inst.Priority, b.inst.Priority),
			cmp.Compare(weight(b), weight(a)),
			strings.Compare(a.inst.ID, b.inst.ID),
		)
	})
	victims = must
	for _, c := range cands {
		if s.fitsWithout(ni, r, victims) {
			break
		}
		victims = append(victims, c)
	}
	for i := len(victims) - 1; i >= len(must); i-- {
		trial := slices.Delete(slices.Clone(victims), i, i+1)
		if s.fitsWithout(ni, r, trial) {
			victims = trial
		}
	}
	return victims, true, movableSeen
}

// fitsWithout tells whether r would fit node ni once victims are gone.
// Ports and anti-affinity are the caller's concern.
func (s *State) fitsWithout(ni int32, r *req, victims []*alloc) bool {
	n := &s.nodes[ni]
	var milli, mem, pids int64
	for _, v := range victims {
		milli += v.milli
		mem += v.inst.Resources.MemoryBytes
		pids += v.inst.Resources.Pids
	}
	need := r.milli
	if r.excl > 0 {
		if n.cpu == nil {
			return false
		}
		// Release the victims' cores for a moment to see what choose
		// would find, then hold them again.
		for _, v := range victims {
			for _, c := range v.cores {
				n.cpu.release(int(c))
			}
		}
		ch, ok := n.cpu.choose(r.excl)
		for _, v := range victims {
			for _, c := range v.cores {
				n.cpu.hold(int(c))
			}
		}
		if !ok {
			return false
		}
		need = max(need, int64(ch.held)*1000)
	}
	return n.used.MilliCPU-milli+need <= n.cap.MilliCPU &&
		n.used.MemoryBytes-mem+r.mem <= n.cap.MemoryBytes &&
		n.used.Pids-pids+r.pids <= n.cap.Pids
}
