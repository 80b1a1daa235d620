package scheduler

import (
	"fmt"
	"slices"
)

// Verify checks a plan, made from an older snapshot, against s: the
// evictions it names are taken as done (those already gone are skipped)
// and each placement, in order, must still fit. It returns the placements
// that do not; s is left as it was.
func (s *State) Verify(p *Plan) []Conflict {
	conflicts, undo := s.apply(p)
	undo()
	return conflicts
}

// Apply commits a plan to s: its evictions, then every placement that
// still fits. Placements that no longer fit are left out and returned, so
// the caller can put their instances back in the queue.
func (s *State) Apply(p *Plan) []Conflict {
	conflicts, _ := s.apply(p)
	return conflicts
}

func (s *State) apply(p *Plan) ([]Conflict, func()) {
	var evicted, added []*alloc
	for _, e := range p.Preemptions {
		a, ok := s.allocs[e.Instance]
		if !ok || s.nodes[a.node].name != e.Node {
			continue
		}
		s.removeAlloc(a)
		evicted = append(evicted, a)
	}
	var conflicts []Conflict
	for i := range p.Placements {
		pl := &p.Placements[i]
		a, reason := s.applyPlacement(pl)
		if reason != "" {
			conflicts = append(conflicts, Conflict{Instance: pl.Instance.ID, Node: pl.Node, Reason: reason})
			continue
		}
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
