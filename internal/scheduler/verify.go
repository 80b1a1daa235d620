package scheduler

import (
	"fmt"
	"slices"
)

// Verify checks a plan, made from an older snapshot, against s: each
// placement, in order, with the evictions made for it (those already gone
// are skipped), must still fit. It returns the placements that do not; s
// is left as it was.
func (s *State) Verify(p *Plan) []Conflict {
	conflicts, undo := s.apply(p)
	undo()
	return conflicts
}

// Apply commits a plan to s: every placement that still fits, each with
// the evictions made for it. Placements that no longer fit are left out
// and returned, so the caller can put their instances back in the queue;
// their evictions are not applied either, since nothing needs the room.
func (s *State) Apply(p *Plan) []Conflict {
	conflicts, _ := s.apply(p)
	return conflicts
}

func (s *State) apply(p *Plan) ([]Conflict, func()) {
	var evicted, added []*alloc
	evict := func(e Eviction) *alloc {
		a, ok := s.allocs[e.Instance]
		if !ok || s.nodes[a.node].name != e.Node {
			return nil // gone already: the room is there
		}
		s.removeAlloc(a)
		return a
	}
	victims := make(map[string][]Eviction)
	placed := make(map[string]bool, len(p.Placements))
	for _, pl := range p.Placements {
		placed[pl.Instance.ID] = true
	}
	for _, e := range p.Preemptions {
		if placed[e.For] {
			victims[e.For] = append(victims[e.For], e)
		} else if a := evict(e); a != nil {
			evicted = append(evicted, a) // not tied to a placement: as the plan says
		}
	}
	var conflicts []Conflict
	for i := range p.Placements {
		pl := &p.Placements[i]
		var removed []*alloc
		for _, e := range victims[pl.Instance.ID] {
			if a := evict(e); a != nil {
				removed = append(removed, a)
			}
		}
		a, reason := s.applyPlacement(pl)
		if reason != "" {
			for _, v := range slices.Backward(removed) {
				s.addAlloc(v.node, v.inst, v.cpus, v.reserved, v.cores, v.seq)
			}
			conflicts = append(conflicts, Conflict{Instance: pl.Instance.ID, Node: pl.Node, Reason: reason})
			continue
		}
		evicted = append(evicted, removed...)
		added = append(added, a)
	}
	undo := func() {
		for _, a := range slices.Backward(added) {
			s.removeAlloc(a)
		}
		for _, a := range slices.Backward(evicted) {
			s.addAlloc(a.node, a.inst, a.cpus, a.reserved, a.cores, a.seq)
		}
	}
	return conflicts, undo
}

func (s *State) applyPlacement(pl *Placement) (*alloc, string) {
	inst := &pl.Instance
	if err := validate(inst); err != nil {
		return nil, err.Error()
	}
	if a, ok := s.allocs[inst.ID]; ok {
		return nil, "already allocated on " + s.nodes[a.node].name
	}
	ni, ok := s.byName[pl.Node]
	if !ok {
		return nil, "node gone"
	}
	n := &s.nodes[ni]
	if !n.ready && n.cordoned {
		return nil, "node cordoned (SchedulingDisabled)"
	}
	if !n.ready {
		return nil, "node not ready"
	}
	if c := failedConstraint(inst.Constraints, n); c >= 0 {
		return nil, "not matching " + inst.Constraints[c].String()
	}
	if len(pl.CPUSet) != inst.ExclusiveCPUs {
		return nil, fmt.Sprintf("cpu set has %d cpus, instance asks for %d", len(pl.CPUSet), inst.ExclusiveCPUs)
	}
	cpus, reserved, cores, err := s.claimCPUs(ni, pl.CPUSet)
	if err != nil {
		return nil, err.Error()
	}
	// Check the scalars and ports as Place does, but with the plan's cores
	// rather than a fresh choice.
	r := req{
		inst:  inst,
		milli: inst.Resources.MilliCPU,
		mem:   inst.Resources.MemoryBytes,
		pids:  inst.Resources.Pids,
		grp:   s.group(inst.Group),
		anti:  inst.AntiAffinity && inst.Group != "",
	}
	if len(cores) > 0 {
		r.milli = max(r.milli, int64(n.cpu.heldThreads(cores))*1000)
	}
	for _, p := range inst.HostPorts {
		r.ports = append(r.ports, portKey(p))
	}
	if code, param, _ := s.check(ni, &r); code != fitOK {
		return nil, reasonText(reasonKey{code, param}, &r)
	}
	return s.addAlloc(ni, *inst, cpus, reserved, cores, s.seq), ""
}
