package controller

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// Snapshots share the cache's slices and lease sets while nothing
// changes, and keep what they were given when something does: a change
// applied after a snapshot, or a pass's own change to its snapshot,
// shows in no other snapshot.
func TestSnapshotsKeepWhatTheCacheLent(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	tmpl := api.Template{Image: "demo/busybox:1"}
	web := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 2, Template: tmpl}}
	objs := []api.Object{web}
	for _, n := range []string{"n1", "n2"} {
		objs = append(objs, &api.Node{Metadata: api.Metadata{Name: n}, Status: api.NodeStatus{Condition: api.NodeReady}})
	}
	for i, n := range []string{"n1", "n2"} {
		objs = append(objs, &api.Instance{Metadata: api.Metadata{Name: fmt.Sprintf("web-%d", i)}, Spec: api.InstanceSpec{Template: &tmpl, Node: n,
			Owner: api.Owner{Kind: api.KindService, Name: "web", UID: web.Metadata.UID}}, Status: api.InstanceStatus{Phase: api.PhaseRunning}})
	}
	for _, o := range objs {
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"n1", "n2"} {
		if err := s.KeepNodeAlive(ctx, n, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	c := newCache(s)
	if _, err := c.fill(ctx); err != nil {
		t.Fatal(err)
	}
	sn1, live1 := c.snapshot()
	sn2, _ := c.snapshot()
	if &sn1.instances[0] != &sn2.instances[0] || &sn1.nodes[0] != &sn2.nodes[0] {
		t.Error("two snapshots with nothing changed between them hold copies of the cached slices, not the same")
	}
	if g1, g2 := sn1.byOwner(), sn2.byOwner(); reflect.ValueOf(g1).UnsafePointer() != reflect.ValueOf(g2).UnsafePointer() || len(g1) != 1 {
		t.Errorf("two snapshots with nothing changed between them group their instances apart, or wrong: %v, %v", g1, g2)
	}
	if len(sn1.onDead) != 0 {
		t.Errorf("with every node beating, instances on dead nodes: %v", sn1.onDead)
	}
	was, wasLive, wasLapsed := render(sn1), maps.Clone(live1), maps.Clone(sn1.lapsed)

	// A pass changes its own snapshot: the others keep theirs.
	lost := own(sn2.instances[0])
	lost.Status.Phase = api.PhaseLost
	sn2.setInstance(0, lost)
	down := own(sn2.nodes[0])
	down.Status.Condition = api.NodeNotReady
	sn2.setNode(0, down)
	if got := render(sn1); got != was {
		t.Fatalf("a change to one snapshot shows in another:\n%s\nwas\n%s", got, was)
	}

	// The store changes: n1's lease goes, it lapses, an instance's status
	// changes. Later snapshots see it; the earlier one keeps its view.
	moved := own(sn1.instances[1])
	moved.Status.Phase, moved.Metadata.Revision = api.PhaseFailed, moved.Metadata.Revision+1000
	c.apply(store.ChangeBatch{Revision: c.rev + 1, Changes: []store.Change{
		{Type: store.Deleted, Lease: "n1"},
		{Type: store.Added, Lapsed: "n1"},
		{Type: store.Modified, Kind: api.KindInstance, Namespace: "default", Name: moved.Metadata.Name, Object: moved},
	}})
	sn3, live3 := c.snapshot()
	if live3["n1"] || !live3["n2"] || !sn3.lapsed["n1"] {
		t.Errorf("after n1 lapsed the snapshot has leases %v and lapsed %v", live3, sn3.lapsed)
	}
	if sn3.instances[1].Status.Phase != api.PhaseFailed {
		t.Errorf("after its status changed %s is %s in the snapshot", moved.Metadata.Name, sn3.instances[1].Status.Phase)
	}
	for _, insts := range sn3.byOwner() {
		if len(insts) != 2 || insts[1].Status.Phase != api.PhaseFailed {
			t.Errorf("after %s changed its owner's instances are grouped as %v", moved.Metadata.Name, insts)
		}
	}
	if got := sn3.onDead["n1"]; !slices.Equal(got, []int{0}) {
		t.Errorf("n1 without its lease has instances %v in the snapshot, want [0]", sn3.onDead)
	}
	if got := render(sn1); got != was || !maps.Equal(live1, wasLive) || !maps.Equal(sn1.lapsed, wasLapsed) {
		t.Fatalf("a change applied after a snapshot shows in it: leases %v, lapsed %v,\n%s\nwas\n%s", live1, sn1.lapsed, got, was)
	}

	// n1 beats again: no instance is on a dead node any more.
	c.apply(store.ChangeBatch{Revision: c.rev + 1, Changes: []store.Change{
		{Type: store.Added, Lease: "n1"},
		{Type: store.Deleted, Lapsed: "n1"},
	}})
	if sn4, live4 := c.snapshot(); !live4["n1"] || sn4.lapsed["n1"] || len(sn4.onDead) != 0 {
		t.Errorf("after n1 came back the snapshot has leases %v, lapsed %v, instances on dead nodes %v", live4, sn4.lapsed, sn4.onDead)
	}
	if live3["n1"] || !sn3.lapsed["n1"] {
		t.Errorf("a lease applied after a snapshot shows in it: leases %v, lapsed %v", live3, sn3.lapsed)
	}
}

// A manager whose nodes all beat, passing over the cache's lent
// snapshots, still sees a node stop.
func TestNodesPassOverLentSnapshotsSeesOneStop(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	m := beatingNodes(t, s, "n1", "n2")
	if err := s.ExpireNode(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	// The cache learns of the lease's removal as its watch would tell it.
	m.cache.apply(store.ChangeBatch{Revision: s.LastWrite(), Changes: []store.Change{{Type: store.Deleted, Lease: "n2"}}})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	n2, err := store.Get[api.Node](ctx, s, "", "n2")
	if err != nil {
		t.Fatal(err)
	}
	if n2.Status.Condition != api.NodeNotReady {
		t.Errorf("n2 without its lease is %q, want NotReady", n2.Status.Condition)
	}
}

// Once a pass found every node as its lease says, the next passes leave
// the nodes alone until the cache's nodes or leases change: handed the
// cache's snapshot at the same generations, nodesPass does not look at
// the leases it is given; once the cache learns that n1's lease went, a
// pass marks it NotReady.
func TestNodesPassSkipsSettledNodes(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	m := beatingNodes(t, s, "n1")
	if m.nodesAt == [2]int64{} {
		t.Fatal("a pass over one node beating and Ready left the nodes unsettled")
	}
	condition := func() api.NodeCondition {
		t.Helper()
		n, err := store.Get[api.Node](ctx, s, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return n.Status.Condition
	}
	sn, _ := m.cache.snapshot()
	if err := m.nodesPass(ctx, sn, map[string]bool{}); err != nil {
		t.Fatal(err)
	}
	if c := condition(); c != api.NodeReady {
		t.Fatalf("n1 after a pass of the same generations is %q, want it left Ready", c)
	}
	if err := s.ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	m.cache.apply(store.ChangeBatch{Revision: s.LastWrite(), Changes: []store.Change{{Type: store.Deleted, Lease: "n1"}}})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if c := condition(); c != api.NodeNotReady {
		t.Errorf("n1 without its lease, once the cache knows, after a pass is %q, want NotReady", c)
	}
}

// Nodes that stop together are marked NotReady in one transaction, not
// one write each, and each still gets its event.
func TestNodesLostTogetherMarkedInOneWrite(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	const n = 40
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("n%02d", i))
	}
	m := beatingNodes(t, s, names...)
	var gone []store.Change
	for _, name := range names {
		if err := s.ExpireNode(ctx, name); err != nil {
			t.Fatal(err)
		}
		gone = append(gone, store.Change{Type: store.Deleted, Lease: name})
	}
	m.cache.apply(store.ChangeBatch{Revision: s.LastWrite(), Changes: gone})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	nodes, _, err := store.List[api.Node](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	revs := map[int64]int{}
	for _, nd := range nodes {
		if nd.Status.Condition != api.NodeNotReady {
			t.Errorf("%s without its lease is %q, want NotReady", nd.Metadata.Name, nd.Status.Condition)
		}
		revs[nd.Metadata.Revision]++
	}
	if len(revs) != 1 {
		t.Errorf("%d nodes marked NotReady at %d revisions (%v), want one transaction", n, len(revs), revs)
	}
	evs, _, err := store.List[api.Event](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	notReady := 0
	for _, ev := range evs {
		if ev.Reason == "NodeNotReady" {
			notReady++
		}
	}
	if notReady != n {
		t.Errorf("%d NodeNotReady events, want %d", notReady, n)
	}
}

// The replacements of the instances of many services lost with a node
// are stored in one transaction, not one per service, and the lost ones
// all go.
func TestLostInstancesOfManyServicesReplacedTogether(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	const services = 30
	for i := range services {
		svc := &api.Service{Metadata: api.Metadata{Name: fmt.Sprintf("svc-%02d", i)},
			Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1"}}}
		if err := s.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
	}
	addNode := func(name string) {
		n := &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 64000, Memory: 1 << 40, Pids: 1 << 20}},
			Status: api.NodeStatus{Condition: api.NodeReady}}
		if err := s.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := s.KeepNodeAlive(ctx, name, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// Every instance is placed on n1, the only node; then n2 comes.
	addNode("n1")
	beatingNodes(t, s)
	addNode("n2")
	m := beatingNodes(t, s)
	insts, _, err := store.List[api.Instance](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != services {
		t.Fatalf("%d instances before n1 is lost, want %d", len(insts), services)
	}
	for _, in := range insts {
		if in.Spec.Node != "n1" {
			t.Fatalf("%s on %q before n1 is lost, want n1", in.Metadata.Name, in.Spec.Node)
		}
	}

	if err := s.ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	m.cache.apply(store.ChangeBatch{Revision: s.LastWrite(), Changes: []store.Change{{Type: store.Deleted, Lease: "n1"}}})
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	insts, _, err = store.List[api.Instance](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	revs := map[int64]int{}
	owners := map[string]bool{}
	for _, in := range insts {
		if in.Spec.Node != "n2" {
			t.Errorf("%s (%s) on %q after n1 was lost, want replaced on n2", in.Metadata.Name, in.Status.Phase, in.Spec.Node)
		}
		revs[in.Metadata.Revision]++
		owners[in.Spec.Owner.Name] = true
	}
	if len(insts) != services || len(owners) != services {
		t.Errorf("%d instances of %d services after n1 was lost, want one of each of %d", len(insts), len(owners), services)
	}
	if len(revs) != 1 {
		t.Errorf("the replacements of %d services stored at %d revisions (%v), want one transaction", services, len(revs), revs)
	}
}

// beatingNodes stores the nodes named, Ready and beating, and returns a
// manager over a cache of them after its first pass.
func beatingNodes(t *testing.T, s *store.Store, names ...string) *Manager {
	t.Helper()
	ctx := context.Background()
	for _, n := range names {
		if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: n}, Status: api.NodeStatus{Condition: api.NodeReady}}); err != nil {
			t.Fatal(err)
		}
		if err := s.KeepNodeAlive(ctx, n, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), StartGrace: -1})
	m.cache = newCache(s)
	if _, err := m.cache.fill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	return m
}
