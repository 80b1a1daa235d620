package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// nodesPass marks nodes Ready or NotReady by their heartbeat leases
// (live), and their instances lost once the node controller gives them up.
func (m *Manager) nodesPass(ctx context.Context, sn *snapshot, live map[string]bool) error {
	now := m.opt.Clock()
	states := make([]NodeState, 0, len(sn.nodes))
	index := make(map[string]int, len(sn.nodes)) // into sn.nodes and states
	var dead map[string]bool
	for i, n := range sn.nodes {
		name := n.Metadata.Name
		index[name] = i
		// Alive while its heartbeat lease is held: etcd, not a clock, decides.
		alive := live[name]
		ready := n.Status.Condition == api.NodeReady
		if ready {
			delete(m.notReady, name)
		} else if _, ok := m.notReady[name]; !ok {
			m.notReady[name] = now
		}
		if !alive {
			if dead == nil {
				dead = map[string]bool{}
			}
			dead[name] = true
		}
		states = append(states, NodeState{Name: name, Alive: alive, Ready: ready, NotReadySince: m.notReady[name]})
	}
	// Only a node that stopped can lose its instances.
	if dead != nil && sn.mayHaveOn(func(n string) bool { return dead[n] }) {
		for _, in := range sn.instances {
			if dead[in.Spec.Node] {
				st := &states[index[in.Spec.Node]]
				st.Instances = append(st.Instances, view(in))
			}
		}
	}
	res := ComputeNodes(states, now, m.opt.LostGrace)
	if !m.started.IsZero() && now.Sub(m.started) < m.opt.StartGrace && len(res.Lost) > 0 {
		m.log.Debug("not marking instances lost yet: the nodes have not had a heartbeat TTL to reach this manager", "instances", len(res.Lost))
		res.Lost = nil
		m.dueAt(m.started.Add(m.opt.StartGrace))
	}
	m.dueLost(states, now)
	var errs []error
	set := func(name string, cond api.NodeCondition, msg string) {
		i := index[name]
		n := own(sn.nodes[i])
		was := n.Status.Condition
		n.Status.Condition, n.Status.Message = cond, msg
		if err := m.s.UpdateStatus(ctx, n, n.Metadata.Revision); err != nil {
			if !errdefs.IsConflict(err) {
				errs = append(errs, err)
			}
			return
		}
		sn.nodes[i] = n // the rest of the pass sees it so
		switch {
		case cond == api.NodeNotReady:
			m.event(ctx, n, api.EventWarning, "NodeNotReady", msg)
		case was == api.NodeNotReady:
			// A node that just registered has nothing to recover from.
			m.event(ctx, n, api.EventNormal, "NodeReady", msg)
		}
	}
	for _, name := range res.MarkReady {
		set(name, api.NodeReady, "its heartbeat lease is held again")
	}
	for _, name := range res.MarkNotReady {
		m.notReady[name] = now
		set(name, api.NodeNotReady, "its heartbeat lease expired")
	}
	errs = append(errs, m.markLost(ctx, sn, index, res.Lost))
	return errors.Join(errs...)
}

// dueLost asks for a pass when the instances of a stopped node are to be
// marked lost: no write to the store comes to start it, only time.
func (m *Manager) dueLost(states []NodeState, now time.Time) {
	for _, st := range states {
		if st.Alive || !slices.ContainsFunc(st.Instances, func(in Instance) bool { return !in.Phase.Terminal() && !in.Deleting }) {
			continue
		}
		since := st.NotReadySince
		if since.IsZero() || st.Ready {
			since = now
		}
		m.dueAt(since.Add(m.opt.LostGrace))
	}
}

// markLost marks lost the instances named (namespace/name) and those
// whose node was removed, as many to a transaction as etcd takes: a node
// lost with hundreds of instances cost as many writes one after another.
func (m *Manager) markLost(ctx context.Context, sn *snapshot, index map[string]int, names []string) error {
	var lost map[string]bool
	if len(names) > 0 {
		lost = make(map[string]bool, len(names))
		for _, name := range names {
			lost[name] = true
		}
	}
	// An instance is lost with its node removed: unless one is bound to
	// a node not stored, only those named need looking for.
	if lost == nil && !sn.mayHaveOn(func(n string) bool { _, ok := index[n]; return !ok }) {
		return nil
	}
	var marked []*api.Instance
	at := map[*api.Instance]int{} // into sn.instances
	for i, in := range sn.instances {
		_, nodeExists := index[in.Spec.Node]
		gone := in.Spec.Node != "" && !nodeExists && !phaseOf(in).Terminal()
		if !gone && (lost == nil || !lost[in.Metadata.Namespace+"/"+in.Metadata.Name]) {
			continue
		}
		in = own(in)
		in.Status.Phase = api.PhaseLost
		in.Status.Healthy = false
		in.Status.Message = fmt.Sprintf("node %s stopped answering", in.Spec.Node)
		if gone {
			in.Status.Message = fmt.Sprintf("node %s was removed", in.Spec.Node)
		}
		marked = append(marked, in)
		at[in] = i
	}
	if len(marked) == 0 {
		return nil
	}
	// One the agent wrote meanwhile is not marked after all: this pass must not act on it.
	done, err := m.updateInstanceStatuses(ctx, marked)
	for _, in := range done {
		sn.instances[at[in]] = in // so that the service and job controllers replace it this pass
		sn.touch(in)
	}
	return err
}
