package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/berth-dev/berth/api"
)

// nodesPass marks nodes Ready or NotReady by their heartbeat leases
// (live), and their instances lost once the node controller gives them up.
// It looks only at the instances of the nodes without a lease, or gone
// (sn.deadNodes): a pass over a cluster whose nodes all beat reads none.
//
// A lease key goes for one of two reasons: a server saw the node miss a
// whole TTL of beats (sn.lapsed says so), or the server holding its beats
// lost its lease (it died, or was too starved to renew it), when the node
// may only need a moment to beat to another server, or the server to bind
// its keys to a new lease. A running manager (Run) gives up the first at
// once, and the second only once it has been without a lease for the
// start grace: a manager that just took over cannot tell how long it has.
//
// A pass looks at every node while any node without its lease has
// instances, or has not had its start grace: such a node is given up on
// the clock, with no change to announce it. Once a pass found every node
// as its lease says and none of them to wait for, the next passes skip
// the nodes until the cache's nodes or leases change: at 15,000 nodes
// the look took a tenth of a core of a settled server whose services
// were applied a few times a second.
func (m *Manager) nodesPass(ctx context.Context, sn *snapshot, live map[string]bool) error {
	if m.nodesSettled(sn) {
		return nil
	}
	at, dueWas := [2]int64{sn.nodeGen, sn.liveGen}, m.due
	m.nodesAt = [2]int64{}
	now := m.opt.Clock()
	onDead := sn.deadNodes(live)
	states := make([]NodeState, 0, len(sn.nodes))
	index := make(map[string]int, len(sn.nodes)) // into sn.nodes and states
	waiting := 0
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
		st := NodeState{Name: name, Alive: alive, Ready: ready, NotReadySince: m.notReady[name]}
		// Only a node that stopped can lose its instances.
		if alive || sn.lapsed[name] {
			delete(m.unexplained, name)
		}
		if !alive {
			if m.spare(name, now, sn.lapsed[name]) {
				waiting += len(onDead[name])
			} else {
				for _, j := range onDead[name] {
					st.Instances = append(st.Instances, view(sn.instances[j]))
				}
			}
		}
		states = append(states, st)
	}
	if waiting > 0 {
		m.log.Debug("not marking instances lost yet: their nodes' leases went with a server's, and they have not had a heartbeat TTL to come back", "instances", waiting)
	}
	m.forgetRemoved(index)
	res := ComputeNodes(states, now, m.opt.LostGrace)
	m.dueLost(states, now)
	m.logNodes(res)
	events, err := m.markNodes(ctx, sn, index, res, now)
	err = errors.Join(err, m.markLost(ctx, sn, index, onDead, res.Lost))
	events()
	if err == nil && len(onDead) == 0 && m.due.Equal(dueWas) && res.empty() {
		m.nodesAt = at
	}
	return err
}

// markNodes marks the nodes res names Ready or NotReady, as many to a
// transaction as etcd takes, and returns what records their events, for
// after their instances are marked lost: 150 nodes lost at once were 300
// writes one after another before their instances could be. A node
// written meanwhile is left out, not an error.
func (m *Manager) markNodes(ctx context.Context, sn *snapshot, index map[string]int, res NodeResult, now time.Time) (func(), error) {
	var marks []*api.Node
	was := map[*api.Node]api.NodeCondition{}
	mark := func(name string, cond api.NodeCondition, msg string) {
		n := own(sn.nodes[index[name]])
		was[n] = n.Status.Condition
		n.Status.Condition, n.Status.Message = cond, msg
		marks = append(marks, n)
	}
	for _, name := range res.MarkReady {
		mark(name, api.NodeReady, "its heartbeat lease is held again")
	}
	for _, name := range res.MarkNotReady {
		m.notReady[name] = now
		mark(name, api.NodeNotReady, "its heartbeat lease expired")
	}
	done, err := updateStatuses(ctx, m, marks)
	for _, n := range done {
		sn.setNode(index[n.Metadata.Name], n) // the rest of the pass sees it so
	}
	return func() {
		for _, n := range done {
			switch {
			case n.Status.Condition == api.NodeNotReady:
				m.event(ctx, n, api.EventWarning, "NodeNotReady", n.Status.Message)
			case was[n] == api.NodeNotReady:
				// A node that just registered has nothing to recover from.
				m.event(ctx, n, api.EventNormal, "NodeReady", n.Status.Message)
			}
		}
	}, err
}

// forgetRemoved forgets the nodes no longer in index.
func (m *Manager) forgetRemoved(index map[string]int) {
	for name := range m.unexplained {
		if _, ok := index[name]; !ok {
			delete(m.unexplained, name)
		}
	}
}

// nodesSettled says a pass found the nodes of sn as their leases say,
// none to wait for, with the same nodes and leases: sn's from the cache,
// at the same generations, and still no instance on a node without its
// lease.
func (m *Manager) nodesSettled(sn *snapshot) bool {
	return sn.nodeGen != 0 && [2]int64{sn.nodeGen, sn.liveGen} == m.nodesAt && sn.onDead != nil && len(sn.onDead) == 0
}

// logNodes says in the log, a few named, which nodes a pass marks Ready
// or NotReady. Their events are in the store; a cluster that never
// replaced a stopped node's instances has to show in its servers' logs
// where the chain stopped.
func (m *Manager) logNodes(res NodeResult) {
	if n := len(res.MarkReady); n > 0 {
		m.log.Info("marking nodes Ready: their heartbeat leases are held", "count", n, "nodes", res.MarkReady[:min(n, 5)])
	}
	if n := len(res.MarkNotReady); n > 0 {
		m.log.Info("marking nodes NotReady: their heartbeat leases are gone", "count", n, "nodes", res.MarkNotReady[:min(n, 5)])
	}
}

// spare says whether the instances of node, without a lease, are kept for
// now: a running manager keeps those of a node not lapsed (see nodesPass)
// until it has been so for the start grace, and asks for a pass then.
func (m *Manager) spare(node string, now time.Time, lapsed bool) bool {
	if m.started.IsZero() || lapsed {
		return false
	}
	since, ok := m.unexplained[node]
	if !ok {
		since = now
		m.unexplained[node] = now
	}
	if now.Sub(since) >= m.opt.StartGrace {
		return false
	}
	m.dueAt(since.Add(m.opt.StartGrace))
	return true
}

// deadNodes returns, by node, where in sn.instances the instances of the
// nodes without a lease (not in live) or without a node object are: the
// cache's index when the snapshot came from it, else a look through all.
func (sn *snapshot) deadNodes(live map[string]bool) map[string][]int {
	if sn.onDead != nil {
		return sn.onDead
	}
	exists := make(map[string]bool, len(sn.nodes))
	for _, n := range sn.nodes {
		exists[n.Metadata.Name] = true
	}
	out := map[string][]int{}
	for i, in := range sn.instances {
		if node := in.Spec.Node; node != "" && (!live[node] || !exists[node]) {
			out[node] = append(out[node], i)
		}
	}
	return out
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
// Both are among the instances of onDead (see deadNodes), which are all
// it looks at.
func (m *Manager) markLost(ctx context.Context, sn *snapshot, index map[string]int, onDead map[string][]int, names []string) error {
	var lost map[string]bool
	if len(names) > 0 {
		lost = make(map[string]bool, len(names))
		for _, name := range names {
			lost[name] = true
		}
	}
	var positions []int
	for _, idx := range onDead {
		positions = append(positions, idx...)
	}
	slices.Sort(positions) // the instances' order, as a list gives them
	var marked []*api.Instance
	at := map[*api.Instance]int{} // into sn.instances
	for _, i := range positions {
		in := sn.instances[i]
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
	if len(done) > 0 {
		names := make([]string, 0, min(len(done), 5))
		for _, in := range done[:min(len(done), 5)] {
			names = append(names, in.Metadata.Namespace+"/"+in.Metadata.Name)
		}
		m.log.Info("marked instances lost with their nodes", "count", len(done), "instances", names)
	}
	for _, in := range done {
		sn.setInstance(at[in], in) // so that the service and job controllers replace it this pass
		sn.touch(in)
	}
	return err
}
