package scheduler

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
)

// req is an instance prepared for the hot loop.
type req struct {
	inst  *Instance
	milli int64
	mem   int64
	pids  int64
	excl  int
	ports []uint32
	grp   *group
	anti  bool
	cls   *class
	trk   []*tracker
}

func (s *State) prepare(inst *Instance) *req {
	r := &req{
		inst:  inst,
		milli: inst.Resources.MilliCPU,
		mem:   inst.Resources.MemoryBytes,
		pids:  inst.Resources.Pids,
		excl:  inst.ExclusiveCPUs,
		grp:   s.group(inst.Group),
		cls:   s.classFor(inst.Constraints),
	}
	if r.excl > 0 {
		r.milli = max(r.milli, int64(r.excl)*1000)
	}
	for _, p := range inst.HostPorts {
		r.ports = append(r.ports, portKey(p))
	}
	if r.grp != nil {
		r.anti = inst.AntiAffinity
		for _, key := range inst.Spread {
			r.trk = append(r.trk, s.trackerFor(r.grp, key, r.cls))
		}
	}
	return r
}

// shape is a key for everything that decides where an instance is
// feasible; within a batch, nodes only fill up until something is evicted,
// so an instance whose shape already failed fails again for the same reason.
func (r *req) shape(buf []byte) []byte {
	buf = buf[:0]
	buf = strconv.AppendInt(buf, r.milli, 36)
	buf = append(buf, ',')
	buf = strconv.AppendInt(buf, r.mem, 36)
	buf = append(buf, ',')
	buf = strconv.AppendInt(buf, r.pids, 36)
	buf = append(buf, ',')
	buf = strconv.AppendInt(buf, int64(r.excl), 36)
	buf = append(buf, ',')
	buf = strconv.AppendInt(buf, int64(r.inst.Priority), 36)
	for _, p := range r.ports {
		buf = append(buf, ',')
		buf = strconv.AppendUint(buf, uint64(p), 36)
	}
	if r.anti {
		buf = append(buf, "\x00anti\x00"...)
		buf = append(buf, r.grp.name...)
	}
	buf = append(buf, '\x00')
	buf = append(buf, classKey(r.inst.Constraints)...)
	return buf
}

// Place finds nodes for a batch of instances and commits the result to s,
// so the next call sees it. Instances are handled by priority, then size,
// largest first; the plan lists them in that order. Place does no I/O and
// takes its randomness from opts.Seed only.
//
// Pipeline per instance: the cached class of nodes that are ready and
// meet the constraints is walked in a seeded random order; each node is
// checked for resources, ports, anti-affinity and whole free cores; the
// first opts.Candidates feasible ones are ranked (spread first, then
// bin-packing) unless spread needs a longer look; the best is committed.
//
// The state keeps the instances as given, slices included: do not modify
// them after the call.
//
// Long because it is the pipeline described above, kept in one loop on the
// scheduler's hot path.
func (s *State) Place(batch []Instance, opts Options) *Plan {
	s.seq++
	k := opts.Candidates
	if k <= 0 {
		k = DefaultCandidates
	}
	rng := rand.New(rand.NewPCG(opts.Seed, opts.Seed^0x9e3779b97f4a7c15))
	order := make([]int, len(batch))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		x, y := &batch[a], &batch[b]
		return cmp.Or(
			cmp.Compare(y.Priority, x.Priority),
			cmp.Compare(y.ExclusiveCPUs, x.ExclusiveCPUs),
			cmp.Compare(y.Resources.MilliCPU, x.Resources.MilliCPU),
			cmp.Compare(y.Resources.MemoryBytes, x.Resources.MemoryBytes),
			cmp.Compare(x.ID, y.ID),
		)
	})
	plan := &Plan{Placements: make([]Placement, 0, len(batch))}
	inBatch := make(map[string]struct{}, len(batch))
	// A failed shape stays failed for the rest of the batch, except on
	// nodes where evictions made room since; those are rechecked.
	type failure struct {
		reason string
		dirty  int // len(dirty) when the reason was found
	}
	failed := make(map[string]*failure)
	var dirty []int32
	walks := make(map[*class]*walk)
	// lowest bounds the priorities present, for preemption; computed on
	// first need and lowered as this batch places (evictions may leave it
	// below the true minimum, which only costs a longer search).
	lowest, haveLowest := 0, false
	var buf []byte
	for _, i := range order {
		inst := &batch[i]
		if err := validate(inst); err != nil {
			plan.Failures = append(plan.Failures, Failure{Instance: inst.ID, Reason: err.Error()})
			continue
		}
		if _, dup := inBatch[inst.ID]; dup {
			plan.Failures = append(plan.Failures, Failure{Instance: inst.ID, Reason: "duplicate instance in batch"})
			continue
		}
		inBatch[inst.ID] = struct{}{}
		if a, ok := s.allocs[inst.ID]; ok {
			plan.Failures = append(plan.Failures, Failure{Instance: inst.ID, Reason: "already allocated on " + s.nodes[a.node].name})
			continue
		}
		r := s.prepare(inst)
		buf = r.shape(buf)
		if f, ok := failed[string(buf)]; ok && s.stillFails(r, dirty[f.dirty:]) {
			f.dirty = len(dirty)
			plan.Failures = append(plan.Failures, Failure{Instance: inst.ID, Reason: f.reason})
			continue
		}
		w := walks[r.cls]
		if w == nil {
			w = newWalk(len(r.cls.nodes), rng)
			walks[r.cls] = w
		}
		if ni, ch, ok := s.search(r, w, k); ok {
			plan.Placements = append(plan.Placements, s.commit(ni, r, ch))
			lowest = min(lowest, inst.Priority)
			continue
		}
		attempted := false
		if !opts.NoPreemption {
			if !haveLowest {
				lowest, haveLowest = s.lowestPriority(), true
			}
			placed, node := false, int32(0)
			if attempted, placed, node = s.preempt(r, lowest, rng, plan); placed {
				dirty = append(dirty, node)
				lowest = min(lowest, inst.Priority)
				continue
			}
		}
		reason := s.explain(r)
		if attempted {
			reason += "; preemption: no node frees enough lower-priority instances"
		}
		failed[string(buf)] = &failure{reason: reason, dirty: len(dirty)}
		plan.Failures = append(plan.Failures, Failure{Instance: inst.ID, Reason: reason})
	}
	return plan
}

// stillFails rechecks a failed shape on the nodes changed since.
func (s *State) stillFails(r *req, changed []int32) bool {
	for _, ni := range changed {
		if r.cls.has(ni) {
			if code, _, _ := s.check(ni, r); code == fitOK {
				return false
			}
		}
	}
	return true
}

func validate(inst *Instance) error {
	switch {
	case inst.ID == "":
		return fmt.Errorf("invalid: empty instance id")
	case inst.Resources.MilliCPU < 0 || inst.Resources.MemoryBytes < 0 || inst.Resources.Pids < 0:
		return fmt.Errorf("invalid: negative resources")
	case inst.ExclusiveCPUs < 0:
		return fmt.Errorf("invalid: negative exclusive cpus")
	case len(inst.Spread) > MaxSpreadKeys:
		return fmt.Errorf("invalid: more than %d spread keys", MaxSpreadKeys)
	}
	for _, p := range inst.HostPorts {
		if p.Number <= 0 || p.Number > 65535 {
			return fmt.Errorf("invalid: host port %d", p.Number)
		}
	}
	for _, c := range inst.Constraints {
		if c.Op < OpEq || c.Op > OpNotIn || c.Key == "" {
			return fmt.Errorf("invalid: constraint %v", c)
		}
	}
	return nil
}

// coprime returns the first stride from x on that visits all n slots.
func coprime(x, n int) int {
	for gcd(x, n) != 1 {
		x++
		if x >= n {
			x = 1
		}
	}
	return x
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// walk is the order a batch visits one class's nodes in: a seeded random
// start and a stride coprime to their number, so a search visits every
// node at most once. Each search starts where the last one placed, so
// instances keep filling the same few nodes while they fit (tight
// bin-packing) instead of spreading over random samples of the cluster.
type walk struct {
	pos, stride int
}

func newWalk(n int, rng *rand.Rand) *walk {
	if n == 0 {
		return &walk{}
	}
	w := &walk{pos: rng.IntN(n), stride: 1}
	if n > 2 {
		w.stride = coprime(1+rng.IntN(n-1), n)
	}
	return w
}

// search looks for the best node for r along w.
func (s *State) search(r *req, w *walk, k int) (int32, choice, bool) {
	nodes := r.cls.nodes
	n := len(nodes)
	if n == 0 {
		return -1, choice{}, false
	}
	pos, stride, bestPos := w.pos, w.stride, 0
	var ideal, sp, bestSp [MaxSpreadKeys]int32
	for i, t := range r.trk {
		ideal[i] = t.min
	}
	best, bestScore, bestCh, found := int32(-1), 0.0, choice{}, 0
	for range n {
		at, ni := pos, nodes[pos]
		if pos += stride; pos >= n {
			pos -= n
		}
		code, _, ch := s.check(ni, r)
		if code != fitOK {
			continue
		}
		found++
		for i, t := range r.trk {
			sp[i] = s.count(t, r.grp, ni)
		}
		score := s.score(ni, r, ch)
		if best < 0 || better(sp, score, ni, bestSp, bestScore, best) {
			best, bestSp, bestScore, bestCh, bestPos = ni, sp, score, ch, at
		}
		if found >= k && bestSp == ideal {
			break
		}
	}
	if best >= 0 && len(r.trk) == 0 {
		// Spread placements leave the cursor alone: they move on purpose.
		w.pos = bestPos
	}
	return best, bestCh, best >= 0
}

func better(sp [MaxSpreadKeys]int32, score float64, ni int32, bsp [MaxSpreadKeys]int32, bscore float64, bni int32) bool {
	for i := range sp {
		if sp[i] != bsp[i] {
			return sp[i] < bsp[i]
		}
	}
	if score != bscore {
		return score > bscore
	}
	return ni < bni
}

// score ranks a feasible node for bin-packing: a node already in use beats
// an empty one, then the fuller the node would be, the better, so that
// whole nodes stay free for big requests (and can be drained). For
// exclusive CPUs, idle siblings and sets spanning NUMA nodes cost more
// than any packing gain.
func (s *State) score(ni int32, r *req, ch choice) float64 {
	n := &s.nodes[ni]
	milli := r.milli
	if r.excl > 0 {
		milli = max(milli, int64(ch.held)*1000)
	}
	f := &s.free[ni]
	sc := frac(n.cap.MilliCPU-f.MilliCPU+milli, n.cap.MilliCPU) + frac(n.cap.MemoryBytes-f.MemoryBytes+r.mem, n.cap.MemoryBytes)
	if len(n.allocs) > 0 {
		sc += 2
	}
	if r.excl > 0 {
		sc -= 2 * float64(ch.held-r.excl)
		sc -= 2 * float64(ch.spans-1)
	}
	return sc
}

func frac(a, b int64) float64 {
	if b <= 0 {
		return 1
	}
	return float64(a) / float64(b)
}

type reasonCode uint8

const (
	fitOK reasonCode = iota
	rNotReady
	rCordoned
	rConstraint
	rCPU
	rMemory
	rPids
	rPort
	rAntiAffinity
	rNoTopology
	rWholeCores
)

// check tells whether instance r fits node ni now, ignoring readiness and
// constraints (the class took care of those). The returned choice says
// which cores an exclusive request would get.
func (s *State) check(ni int32, r *req) (reasonCode, uint32, choice) {
	f := &s.free[ni]
	if r.mem > f.MemoryBytes {
		return rMemory, 0, choice{}
	}
	if r.pids > f.Pids {
		return rPids, 0, choice{}
	}
	if r.excl == 0 {
		// Shared CPU: decided here unless ports or anti-affinity need the
		// node's own state. Exclusive requests check cores first, for the
		// more telling reason.
		if r.milli > f.MilliCPU {
			return rCPU, 0, choice{}
		}
		if len(r.ports) == 0 && !r.anti {
			return fitOK, 0, choice{}
		}
	}
	n := &s.nodes[ni]
	milli := r.milli
	var ch choice
	if r.excl > 0 {
		if n.cpu == nil {
			return rNoTopology, 0, ch
		}
		var ok bool
		if ch, ok = n.cpu.choose(r.excl); !ok {
			return rWholeCores, 0, ch
		}
		milli = max(milli, int64(ch.held)*1000)
	}
	if milli > f.MilliCPU {
		return rCPU, 0, ch
	}
	if len(r.ports) > 0 && len(n.ports) > 0 {
		for _, p := range r.ports {
			if _, used := n.ports[p]; used {
				return rPort, p, ch
			}
		}
	}
	if r.anti && r.grp.perNode[ni] > 0 {
		return rAntiAffinity, 0, ch
	}
	return fitOK, 0, ch
}

func (s *State) commit(ni int32, r *req, ch choice) Placement {
	n := &s.nodes[ni]
	var cpus, reserved []int
	var cores []int32
	if r.excl > 0 {
		cpus, reserved, cores = n.cpu.take(r.excl, ch)
	}
	s.addAlloc(ni, *r.inst, cpus, reserved, cores, s.seq)
	return Placement{Instance: *r.inst, Node: n.name, CPUSet: cpus, Reserved: reserved}
}
