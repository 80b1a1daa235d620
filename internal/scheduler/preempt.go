package scheduler

import (
	"cmp"
	"math/rand/v2"
	"slices"
	"strings"
)

// preemptCandidates bounds how many nodes with a workable set of victims
// are compared before the best is taken, as kube-scheduler does: on a large
// full cluster, comparing every node costs milliseconds per instance. The
// walk stops early on a node that needs a single victim of the lowest
// priority in the cluster, since nothing beats it.
const preemptCandidates = 16

// preempt looks for the node where evicting the fewest, then the
// lowest-priority, instances of lower priority than r makes it fit, evicts
// them and places r there. Instances placed by the current batch are never
// evicted. attempted reports whether any lower-priority instance was a
// candidate at all.
func (s *State) preempt(r *req, lowest int, rng *rand.Rand, plan *Plan) (attempted, placed bool, node int32) {
	nodes := r.cls.nodes
	n := len(nodes)
	if n == 0 {
		return false, false, -1
	}
	if lowest >= r.inst.Priority {
		return false, false, -1
	}
	pos, stride := rng.IntN(n), 1
	if n > 2 {
		stride = coprime(1+rng.IntN(n-1), n)
	}
	best, found := int32(-1), 0
	var bestVictims []*alloc
	var bestCost [3]int
	for range n {
		ni := nodes[pos]
		if pos += stride; pos >= n {
			pos -= n
		}
		victims, ok, seen := s.victimsOn(ni, r)
		attempted = attempted || seen
		if !ok {
			continue
		}
		found++
		cost := [3]int{len(victims), 0, 0}
		for _, v := range victims {
			cost[1] = max(cost[1], v.inst.Priority)
			cost[2] += v.inst.Priority
		}
		if best < 0 || slices.Compare(cost[:], bestCost[:]) < 0 || (cost == bestCost && ni < best) {
			best, bestVictims, bestCost = ni, victims, cost
		}
		if found >= preemptCandidates || bestCost == [3]int{1, lowest, lowest} {
			break
		}
	}
	if best < 0 {
		return attempted, false, -1
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
	return true, true, best
}

func (s *State) lowestPriority() int {
	lowest, seen := 0, false
	for i := range s.nodes {
		if l := s.nodes[i].levels; len(l) > 0 && (!seen || l[0].prio < lowest) {
			lowest, seen = l[0].prio, true
		}
	}
	if !seen {
		return int(^uint(0) >> 1)
	}
	return lowest
}

// exactVictims: with at most this many evictable instances on a node,
// every subset is tried (at most 1,024 checks), so the victims are truly
// the fewest; beyond it a greedy choice keeps the cost bounded.
const exactVictims = 10

// victimsOn finds a small set of lower-priority allocations on node ni
// whose eviction lets r fit. Owners of conflicting host ports and, with
// anti-affinity, replicas of r's group must go. Of the rest, the smallest
// set that makes room is taken, then the one with the lowest highest and
// summed priority; with many candidates, they are taken lowest priority
// and largest first, then any that turn out unnecessary are put back.
func (s *State) victimsOn(ni int32, r *req) (victims []*alloc, ok, movableSeen bool) {
	n := &s.nodes[ni]
	// Rule the node out from its per-priority sums first: even evicting
	// everything below r's priority must leave room.
	var milli, mem, pids int64
	for _, l := range n.levels {
		if l.prio >= r.inst.Priority {
			break
		}
		movableSeen = true
		milli += l.milli
		mem += l.mem
		pids += l.pids
	}
	f := &s.free[ni]
	if !movableSeen || r.milli > f.MilliCPU+milli || r.mem > f.MemoryBytes+mem || r.pids > f.Pids+pids {
		return nil, false, movableSeen
	}
	var must, cands []*alloc
	for _, a := range n.allocs {
		movable := a.inst.Priority < r.inst.Priority && a.seq != s.seq
		blocks := r.anti && a.grp == r.grp
		for _, p := range a.ports {
			blocks = blocks || slices.Contains(r.ports, p)
		}
		switch {
		case blocks && !movable:
			return nil, false, true
		case blocks:
			must = append(must, a)
		case movable:
			cands = append(cands, a)
		}
	}
	all := append(slices.Clip(must), cands...)
	if len(all) == 0 || !s.fitsWithout(ni, r, all) {
		return nil, false, true
	}
	if len(cands) <= exactVictims {
		return s.fewestVictims(ni, r, must, cands), true, true
	}
	type cand struct {
		a      *alloc
		weight float64
	}
	cs := make([]cand, len(cands))
	for i, a := range cands {
		cs[i] = cand{a, frac(a.milli, n.cap.MilliCPU) + frac(a.inst.Resources.MemoryBytes, n.cap.MemoryBytes)}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		return cmp.Or(
			cmp.Compare(a.a.inst.Priority, b.a.inst.Priority),
			cmp.Compare(b.weight, a.weight),
			strings.Compare(a.a.inst.ID, b.a.inst.ID),
		)
	})
	victims = must
	for _, c := range cs {
		if s.fitsWithout(ni, r, victims) {
			break
		}
		victims = append(victims, c.a)
	}
	for i := len(victims) - 1; i >= len(must); i-- {
		trial := slices.Delete(slices.Clone(victims), i, i+1)
		if s.fitsWithout(ni, r, trial) {
			victims = trial
		}
	}
	return victims, true, true
}

// fewestVictims tries the candidates' subsets by size, smallest first, and
// returns must plus the first-sized subsets' best by highest, then summed,
// priority. The caller has checked that evicting all of them suffices.
func (s *State) fewestVictims(ni int32, r *req, must, cands []*alloc) []*alloc {
	slices.SortFunc(cands, func(a, b *alloc) int { return strings.Compare(a.inst.ID, b.inst.ID) })
	n := len(cands)
	trial := make([]*alloc, 0, len(must)+n)
	best, bestCost := -1, [2]int{}
	for k := 0; k <= n && best < 0; k++ {
		for mask := (1 << k) - 1; mask < 1<<n; mask = nextCombination(mask) {
			trial = append(trial[:0], must...)
			cost := [2]int{}
			for i := range n {
				if mask&(1<<i) != 0 {
					trial = append(trial, cands[i])
					cost[0] = max(cost[0], cands[i].inst.Priority)
					cost[1] += cands[i].inst.Priority
				}
			}
			if (best < 0 || slices.Compare(cost[:], bestCost[:]) < 0) && s.fitsWithout(ni, r, trial) {
				best, bestCost = mask, cost
			}
			if mask == 0 {
				break
			}
		}
	}
	victims := slices.Clone(must)
	for i := range n {
		if best&(1<<i) != 0 {
			victims = append(victims, cands[i])
		}
	}
	return victims
}

// nextCombination returns the next larger integer with as many bits set
// (Gosper's hack); mask must not be zero.
func nextCombination(mask int) int {
	low := mask & -mask
	ripple := mask + low
	return (((ripple ^ mask) >> 2) / low) | ripple
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
	f := &s.free[ni]
	return need <= f.MilliCPU+milli && r.mem <= f.MemoryBytes+mem && r.pids <= f.Pids+pids
}
