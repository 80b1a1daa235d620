package controller

import (
	"fmt"
	"maps"
	"reflect"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/scheduler"
)

// schedView is the scheduler's view of the cluster (its nodes and what
// runs on them) kept from pass to pass while Run runs, and brought up to
// date with what changed since, not built again: at 300,000 instances a
// build took half a second of CPU, and the loss of a node took it in
// each of the passes that marked its instances lost and replaced them.
//
// Each pass brings it up to date twice: before it places (the instances
// its controllers changed so far) and at its end (the rest), so that it
// never holds on to instances the cache has let go of for longer than a
// pass.
type schedView struct {
	st *scheduler.State
	// nodes holds each node as the state took it, by name; nodeGen is
	// the snapshot's nodeGen then (zero when the pass changed a node).
	nodes   map[string]*api.Node
	nodeGen int64
	// owners holds, by owner, the instances the state took, as the
	// snapshot held them (a change to one is a new object), each with
	// the ID of its allocation ("" for none: bound to no node, ended, or
	// one the engine refuses) and the update that last found it.
	owners map[ownerID]map[*api.Instance]viewEntry
	// placed are the allocations the last Place added: its plan is not
	// the store's until written, so the next update takes them out and
	// takes what the store then holds.
	placed []string
	stamp  uint32
	// at is the snapshot of the last update, and its edits then: the
	// update at a pass's end has nothing to do when the controllers
	// after the scheduler changed nothing.
	at    *snapshot
	edits int
	// size is the allocations at the build and churn those removed
	// since: the slots of the removed are not used again, so a view that
	// removed more than half as many is built afresh.
	size, churn int
}

// rebuildAbove is the fewest changes for which the view may be built
// afresh rather than updated: below, an update costs nothing worth
// saving.
const rebuildAbove = 1024

type viewEntry struct {
	id   string
	seen uint32
}

// schedNode is the scheduler's view of a node.
func schedNode(n *api.Node) scheduler.Node {
	sn := scheduler.Node{
		Name:     n.Metadata.Name,
		Ready:    n.Status.Condition == api.NodeReady,
		Cordoned: n.Spec.Unschedulable,
		Labels:   n.Metadata.Labels,
		Capacity: scheduler.Resources{MilliCPU: n.Spec.Capacity.MilliCPU,
			MemoryBytes: int64(n.Spec.Capacity.Memory), Pids: n.Spec.Capacity.Pids},
	}
	for _, c := range n.Spec.Topology.Cores {
		sn.Topology.Cores = append(sn.Topology.Cores, scheduler.Core{ID: c.ID, NUMA: c.NUMA, Threads: c.Threads})
	}
	return sn
}

// schedulerState is the scheduler's state for sn, built afresh.
func schedulerState(sn *snapshot) (*scheduler.State, error) {
	v, err := buildView(sn, false)
	if err != nil {
		return nil, err
	}
	return v.st, nil
}

// buildView builds the scheduler's state from sn's nodes and the
// instances bound to them, and with record the view that keeps it.
func buildView(sn *snapshot, record bool) (*schedView, error) {
	nodes := make([]scheduler.Node, 0, len(sn.nodes))
	v := &schedView{nodes: make(map[string]*api.Node, len(sn.nodes)), nodeGen: sn.nodeGen}
	for _, n := range sn.nodes {
		nodes = append(nodes, schedNode(n))
		v.nodes[n.Metadata.Name] = n
	}
	if sn.nodesOwn {
		v.nodeGen = 0
	}
	// Added as they come, not gathered first: at 300,000 instances the
	// slice of them and its growth were a third of the 1.2 s of CPU this
	// took, in the pass that replaces a lost node's instances. Instances
	// come by owner, so one group name serves each run of them.
	st, err := scheduler.NewStateSized(nodes, len(sn.instances))
	if err != nil {
		return nil, fmt.Errorf("scheduler state: %w", err)
	}
	v.st = st
	if record {
		v.owners = map[ownerID]map[*api.Instance]viewEntry{}
	}
	var prev *api.Instance
	var rec map[*api.Instance]viewEntry
	group := ""
	for _, in := range sn.instances {
		if prev == nil || !sameOwner(in, prev) {
			group = ""
			if record {
				rec = v.ownerEntries(instanceOwner(in))
			}
		}
		prev = in
		id, err := v.add(in, &group)
		if err != nil {
			return nil, err
		}
		if record {
			rec[in] = viewEntry{id: id}
		}
		if id != "" {
			v.size++
		}
	}
	return v, nil
}

// ownerEntries is o's record, made when it has none.
func (v *schedView) ownerEntries(o ownerID) map[*api.Instance]viewEntry {
	rec := v.owners[o]
	if rec == nil {
		rec = map[*api.Instance]viewEntry{}
		v.owners[o] = rec
	}
	return rec
}

// add allocates in on its node when it runs there and the engine takes
// it, and returns its allocation's ID ("" when not). group is its
// owner's group name, worked out by the first of a run of them ("").
func (v *schedView) add(in *api.Instance, group *string) (string, error) {
	if in.Spec.Node == "" || v.nodes[in.Spec.Node] == nil || phaseOf(in).Terminal() {
		return "", nil
	}
	if *group == "" {
		*group = instanceGroup(in)
	}
	si, err := schedInstanceIn(in, *group)
	if err != nil {
		return "", nil // it runs already; a template the engine refuses cannot be counted
	}
	if err := v.st.AddAllocation(scheduler.Allocation{Instance: si, Node: in.Spec.Node, CPUSet: in.Spec.CPUSet}); err != nil {
		return "", fmt.Errorf("scheduler state: %w", err)
	}
	return si.ID, nil
}

// schedulerStateFor is the scheduler's state for sn's pass: while Run
// runs, the view kept from the passes before, brought up to date; else
// one built for the pass.
func (m *Manager) schedulerStateFor(sn *snapshot) (*scheduler.State, error) {
	if m.cache == nil || !sn.lent || sn.changed == nil {
		m.sched = nil
		return schedulerState(sn)
	}
	if err := m.keepView(sn); err != nil {
		return nil, err
	}
	return m.sched.st, nil
}

// updateView brings the kept view, if any, up to date at a pass's end,
// so that the next pass that places finds it ready: a view built
// afresh at a node's loss took a second of its reaction.
func (m *Manager) updateView(sn *snapshot) {
	switch {
	case m.sched == nil: // none wanted yet: made when a pass first places
	case !sn.lent || sn.changed == nil:
		// A snapshot listed from the store: none of its instances is
		// the cache's, which the next snapshot's are.
		m.sched = nil
	default:
		_ = m.keepView(sn) // a view that cannot be built is the next placing pass's error
	}
}

// keepView brings the kept view up to date with sn, or builds it afresh
// when it cannot be, or when that costs no more.
func (m *Manager) keepView(sn *snapshot) error {
	if v := m.sched; v != nil && v.at == sn && v.edits == sn.edits {
		return nil
	}
	if m.sched == nil || !m.sched.update(sn) {
		m.sched = nil // let go before the next is built
		v, err := buildView(sn, true)
		if err != nil {
			return err
		}
		m.sched = v
	}
	m.sched.at, m.sched.edits = sn, sn.edits
	return nil
}

// placed notes the allocations a plan added to the view's state.
func (m *Manager) placed(plan *scheduler.Plan) {
	if m.sched == nil {
		return
	}
	if len(plan.Preemptions) > 0 {
		// Evicted allocations are not the store's either until deleted:
		// too rare to track.
		m.sched = nil
		return
	}
	for _, p := range plan.Placements {
		m.sched.placed = append(m.sched.placed, p.Instance.ID)
	}
}

// update brings the view up to date with sn, whose changed owners are
// all that changed since the last update, and says whether it could:
// not when nodes came or went or changed other than in readiness, nor
// when building it again would be as cheap.
func (v *schedView) update(sn *snapshot) bool {
	for _, id := range v.placed {
		if v.st.RemoveAllocation(id) != nil {
			return false
		}
	}
	v.placed = v.placed[:0]
	if !v.updateNodes(sn) || v.churn > v.size/2+rebuildAbove {
		return false
	}
	if len(sn.changed) == 0 {
		return true
	}
	v.stamp++
	var adds []*api.Instance
	var prev *api.Instance
	var rec map[*api.Instance]viewEntry
	for _, in := range sn.instances {
		if prev == nil || !sameOwner(in, prev) {
			rec = nil
			if o := instanceOwner(in); sn.changed[o] {
				rec = v.ownerEntries(o)
			}
		}
		prev = in
		if rec == nil {
			continue
		}
		if e, ok := rec[in]; ok {
			e.seen = v.stamp
			rec[in] = e
			continue
		}
		adds = append(adds, in)
	}
	if len(adds) > rebuildAbove && len(adds) > len(sn.instances)/2 {
		return false
	}
	// What changed or went first: a changed instance's new self takes
	// its ID, and what it held may be what another takes.
	for o := range sn.changed {
		rec := v.owners[o]
		for in, e := range rec {
			if e.seen == v.stamp {
				continue
			}
			delete(rec, in)
			if e.id == "" {
				continue
			}
			if v.st.RemoveAllocation(e.id) != nil {
				return false
			}
			v.churn++
		}
		if len(rec) == 0 {
			delete(v.owners, o)
		}
	}
	group := ""
	prev = nil
	for _, in := range adds {
		if prev == nil || !sameOwner(in, prev) {
			group, rec = "", v.ownerEntries(instanceOwner(in))
		}
		prev = in
		id, err := v.add(in, &group)
		if err != nil {
			return false
		}
		rec[in] = viewEntry{id: id, seen: v.stamp}
	}
	return true
}

// updateNodes brings the view's nodes up to date with sn's and says
// whether it could: only a change of readiness is taken as it comes.
func (v *schedView) updateNodes(sn *snapshot) bool {
	if sn.nodeGen != 0 && sn.nodeGen == v.nodeGen && !sn.nodesOwn {
		return true
	}
	if len(sn.nodes) != len(v.nodes) {
		return false
	}
	for _, n := range sn.nodes {
		was, ok := v.nodes[n.Metadata.Name]
		if !ok {
			return false
		}
		if was == n {
			continue
		}
		a, b := schedNode(was), schedNode(n)
		if a.Name != b.Name || a.Cordoned != b.Cordoned || a.Capacity != b.Capacity ||
			!maps.Equal(a.Labels, b.Labels) || !reflect.DeepEqual(a.Topology, b.Topology) {
			return false
		}
		if a.Ready != b.Ready && v.st.SetReady(b.Name, b.Ready) != nil {
			return false
		}
		v.nodes[n.Metadata.Name] = n
	}
	v.nodeGen = sn.nodeGen
	if sn.nodesOwn {
		v.nodeGen = 0
	}
	return true
}
