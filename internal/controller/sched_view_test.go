package controller

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/scheduler"
)

// viewCluster is a cluster that changes as passes see it: its snapshots
// say which owners' instances changed since the last one, as the
// cache's do.
type viewCluster struct {
	rng     *rand.Rand
	nodes   []*api.Node
	insts   []*api.Instance // by name, as a snapshot holds them
	changed map[ownerID]bool
	nodeGen int64
	seq     int
}

func (c *viewCluster) instance(owner int) *api.Instance {
	c.seq++
	return &api.Instance{
		Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("svc-%d-%05d", owner, c.seq), Revision: int64(c.seq)},
		Spec: api.InstanceSpec{Owner: api.Owner{Kind: api.KindService, Name: fmt.Sprintf("svc-%d", owner), UID: fmt.Sprint(owner)},
			Template: &api.Template{Image: "sim/none:1", Resources: api.Resources{CPU: 0.25, Memory: 64 << 20, Pids: 10}}},
	}
}

// set puts in at i (a new object: the cache's are never changed in place).
func (c *viewCluster) set(i int, in *api.Instance) {
	c.insts[i] = in
	c.changed[instanceOwner(in)] = true
}

// step changes the cluster at random as stores and agents would.
func (c *viewCluster) step() {
	i := c.rng.IntN(len(c.insts) + 1)
	switch op := c.rng.IntN(10); {
	case op == 0 || i == len(c.insts): // a new instance, bound or not
		in := c.instance(c.rng.IntN(4))
		if c.rng.IntN(2) == 0 {
			in.Spec.Node = c.nodes[c.rng.IntN(len(c.nodes))].Metadata.Name
			in.Status.Phase = api.PhaseRunning
		}
		c.insts = append(c.insts, in)
		slices.SortFunc(c.insts, func(a, b *api.Instance) int { return strings.Compare(a.Metadata.Name, b.Metadata.Name) })
		c.changed[instanceOwner(in)] = true
	case op == 1: // deleted
		in := c.insts[i]
		c.insts = slices.Delete(c.insts, i, i+1)
		c.changed[instanceOwner(in)] = true
	case op <= 4: // bound, or moved
		in := own(c.insts[i])
		in.Spec.Node = c.nodes[c.rng.IntN(len(c.nodes))].Metadata.Name
		in.Status.Phase = api.PhaseScheduled
		c.set(i, in)
	case op <= 6: // ended or lost
		in := own(c.insts[i])
		in.Status.Phase = []api.Phase{api.PhaseSucceeded, api.PhaseFailed, api.PhaseLost}[c.rng.IntN(3)]
		c.set(i, in)
	case op == 7: // its status reported, nothing the scheduler counts
		in := own(c.insts[i])
		in.Status.Message = fmt.Sprint(c.rng.Int())
		c.set(i, in)
	case op == 8: // a node's readiness
		j := c.rng.IntN(len(c.nodes))
		n := own(c.nodes[j])
		n.Status.Condition = map[bool]api.NodeCondition{true: api.NodeNotReady, false: api.NodeReady}[n.Status.Condition == api.NodeReady]
		c.nodes[j] = n
		c.nodeGen++
	default: // nothing
	}
}

func (c *viewCluster) snapshot() *snapshot {
	sn := &snapshot{nodes: slices.Clone(c.nodes), instances: slices.Clone(c.insts), changed: c.changed, nodeGen: c.nodeGen, lent: true}
	c.changed = map[ownerID]bool{}
	return sn
}

// sameState says where two scheduler states differ, if they do.
func sameState(a, b *scheduler.State) string {
	if x, y := a.Allocations(), b.Allocations(); !reflect.DeepEqual(x, y) {
		return fmt.Sprintf("allocations differ: %d and %d", len(x), len(y))
	}
	if x, y := a.Nodes(), b.Nodes(); !reflect.DeepEqual(x, y) {
		for i := range x {
			if !reflect.DeepEqual(x[i], y[i]) {
				return fmt.Sprintf("node %s: %+v, built afresh %+v", x[i].Name, x[i], y[i])
			}
		}
		return "nodes differ"
	}
	return ""
}

// TestSchedViewFollowsChanges: the scheduler's view kept from pass to
// pass and brought up to date with each snapshot's changes (instances
// made, bound, ended, reported, deleted; nodes' readiness; plans placed
// and not all written) holds what a view built afresh from the
// snapshot holds.
func TestSchedViewFollowsChanges(t *testing.T) {
	c := &viewCluster{rng: rand.New(rand.NewPCG(3, 5)), changed: map[ownerID]bool{}, nodeGen: 1}
	for i := range 6 {
		c.nodes = append(c.nodes, &api.Node{Metadata: api.Metadata{Name: fmt.Sprintf("n%d", i)},
			Spec:   api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 1000}},
			Status: api.NodeStatus{Condition: api.NodeReady}})
	}
	for range 40 {
		c.step()
	}
	m := NewManager(nil, Options{})
	m.cache = newCache(nil)
	sn := c.snapshot()
	if _, err := m.schedulerStateFor(sn); err != nil {
		t.Fatal(err)
	}
	kept := m.sched
	for pass := range 300 {
		for range c.rng.IntN(6) {
			c.step()
		}
		sn := c.snapshot()
		st, err := m.schedulerStateFor(sn)
		if err != nil {
			t.Fatal(err)
		}
		if m.sched != kept {
			t.Fatalf("pass %d: the view was built again", pass)
		}
		fresh, err := schedulerState(sn)
		if err != nil {
			t.Fatal(err)
		}
		if diff := sameState(st, fresh); diff != "" {
			t.Fatalf("pass %d, before placing: %s", pass, diff)
		}
		// The pass places its unbound instances; the store takes some
		// of the bindings (the next snapshot shows them), not others.
		var batch []scheduler.Instance
		at := map[string]int{}
		for i, in := range sn.instances {
			if in.Spec.Node == "" && !phaseOf(in).Terminal() {
				si, err := schedInstance(in)
				if err != nil {
					t.Fatal(err)
				}
				batch, at[si.ID] = append(batch, si), i
			}
		}
		plan := st.Place(batch, scheduler.Options{Seed: uint64(pass)})
		m.placed(plan)
		for _, p := range plan.Placements {
			if c.rng.IntN(3) == 0 {
				continue // its write failed
			}
			i := slices.Index(c.insts, sn.instances[at[p.Instance.ID]])
			in := own(c.insts[i])
			in.Spec.Node, in.Status.Phase = p.Node, api.PhaseScheduled
			c.set(i, in)
		}
		// The pass's end brings the view up to date when a controller
		// after the scheduler changed the snapshot (none does yet): its
		// plan is taken out then, else at the next pass's update.
		late := pass%2 == 1
		if late {
			sn.edits++
		}
		m.updateView(sn)
		if m.sched != kept {
			t.Fatalf("pass %d: the view was let go at the pass's end", pass)
		}
		if diff := sameState(m.sched.st, fresh); late && diff != "" {
			t.Fatalf("pass %d, at its end: %s", pass, diff)
		}
	}
}

// TestSchedViewBuiltAgain: a node come or gone, or changed other than
// in readiness, or a snapshot that does not say what changed (the cache
// listed the store again), makes the view built afresh.
func TestSchedViewBuiltAgain(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *viewCluster, sn *snapshot)
	}{
		{"node added", func(c *viewCluster, sn *snapshot) {
			sn.nodes = append(sn.nodes, &api.Node{Metadata: api.Metadata{Name: "n9"}})
			sn.nodeGen++
		}},
		{"node removed", func(c *viewCluster, sn *snapshot) { sn.nodes = sn.nodes[1:]; sn.nodeGen++ }},
		{"node cordoned", func(c *viewCluster, sn *snapshot) {
			n := own(sn.nodes[0])
			n.Spec.Unschedulable = true
			sn.nodes[0] = n
			sn.nodeGen++
		}},
		{"node relabelled", func(c *viewCluster, sn *snapshot) {
			n := own(sn.nodes[0])
			n.Metadata.Labels = map[string]string{"zone": "b"}
			sn.nodes[0] = n
			sn.nodeGen++
		}},
		{"store listed", func(c *viewCluster, sn *snapshot) { sn.changed = nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &viewCluster{rng: rand.New(rand.NewPCG(1, 2)), changed: map[ownerID]bool{}, nodeGen: 1}
			for i := range 3 {
				c.nodes = append(c.nodes, &api.Node{Metadata: api.Metadata{Name: fmt.Sprintf("n%d", i)},
					Spec:   api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30}},
					Status: api.NodeStatus{Condition: api.NodeReady}})
			}
			m := NewManager(nil, Options{})
			m.cache = newCache(nil)
			if _, err := m.schedulerStateFor(c.snapshot()); err != nil {
				t.Fatal(err)
			}
			kept := m.sched
			sn := c.snapshot()
			tc.change(c, sn)
			st, err := m.schedulerStateFor(sn)
			if err != nil {
				t.Fatal(err)
			}
			if tc.name == "store listed" {
				if m.sched != nil {
					t.Fatal("a view was kept for a listed snapshot")
				}
			} else if m.sched == kept || m.sched == nil {
				t.Fatal("the view was not built again")
			}
			fresh, err := schedulerState(sn)
			if err != nil {
				t.Fatal(err)
			}
			if diff := sameState(st, fresh); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}
