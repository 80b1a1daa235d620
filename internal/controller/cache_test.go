package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// OpenTestStore is a store on an embedded etcd of the test's own; the
// external tests use it too.
func OpenTestStore(t *testing.T) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The cache, fed by its watch, holds what the store holds after any mix
// of creates, status writes, deletes and lease changes; and once it has
// reached LastWrite it shows every write this process made.
func TestCacheMatchesStore(t *testing.T) {
	s := OpenTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Some objects before the cache lists, some after.
	mk := func(i int) {
		svc := &api.Service{Metadata: api.Metadata{Name: fmt.Sprintf("svc-%d", i)}, Spec: api.ServiceSpec{Replicas: 1,
			Template: api.Template{Image: "demo/busybox:1"}}}
		in := &api.Instance{Metadata: api.Metadata{Name: fmt.Sprintf("in-%d", i)}, Spec: api.InstanceSpec{
			Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: svc.Metadata.Name}}}
		if i%3 != 0 { // some bound, to a node stored or not
			in.Spec.Node = fmt.Sprintf("n%d", i%3)
		}
		if err := s.CreateMany(ctx, []api.Object{svc, in}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		mk(i)
	}
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c := newCache(s)
	go c.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})

	rng := rand.New(rand.NewPCG(1, 2))
	for i := 20; i < 120; i++ {
		switch rng.IntN(4) {
		case 0:
			mk(i)
		case 1:
			name := fmt.Sprintf("in-%d", rng.IntN(i))
			if in, err := store.Get[api.Instance](ctx, s, "default", name); err == nil {
				in.Status.Phase = []api.Phase{api.PhaseRunning, api.PhaseFailed, api.PhasePending}[rng.IntN(3)]
				in.Status.Message = fmt.Sprint("write ", i)
				if err := s.UpdateStatus(ctx, in, 0); err != nil {
					t.Fatal(err)
				}
			}
		case 2:
			_ = s.Delete(ctx, api.KindService, "default", fmt.Sprintf("svc-%d", rng.IntN(i)), 0)
			// An instance gone too: the snapshot's order must drop it.
			_ = s.Delete(ctx, api.KindInstance, "default", fmt.Sprintf("in-%d", rng.IntN(i)), 0)
		case 3:
			if rng.IntN(2) == 0 {
				if err := s.ExpireNode(ctx, "n1"); err != nil {
					t.Fatal(err)
				}
			} else if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 != 0 {
			continue
		}
		if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		got, live := c.snapshot()
		want, err := (&Manager{s: s}).list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantLive, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := render(got), render(want); g != w {
			t.Fatalf("after write %d the cache holds\n%s\nand the store\n%s", i, g, w)
		}
		if fmt.Sprint(live) != fmt.Sprint(wantLive) {
			t.Fatalf("after write %d the cache has leases %v, the store %v", i, live, wantLive)
		}
		// It numbers the owners as they are.
		if got.ownerOf == nil {
			t.Fatalf("after write %d the snapshot numbers no owners", i)
		}
		if g, w := renderOwned(got.byOwner()), renderOwned(byOwner(want.instances)); g != w {
			t.Fatalf("after write %d the cache groups the instances by owner as\n%s\nand the store's are\n%s", i, g, w)
		}
		// Its tally counts what the store holds.
		counted := newTally()
		for _, in := range want.instances {
			counted.add(in, 1)
		}
		phases, ok := c.instancePhases()
		if !got.counted || got.unbound != counted.unbound || !ok || fmt.Sprint(phases) != fmt.Sprint(counted.phases) {
			t.Fatalf("after write %d the cache counts %d unbound, phases %v; the store holds %d, %v",
				i, got.unbound, phases, counted.unbound, counted.phases)
		}
	}
}

func renderOwned(owned map[ownerID][]*api.Instance) string {
	var lines []string
	for k, insts := range owned {
		line := fmt.Sprint(k, ":")
		for _, in := range insts {
			line += " " + in.Metadata.Name
		}
		lines = append(lines, line)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

func render(sn *snapshot) string {
	out := ""
	for _, n := range sn.nodes {
		out += fmt.Sprintf("node %s@%d\n", n.Metadata.Name, n.Metadata.Revision)
	}
	for _, s := range sn.services {
		out += fmt.Sprintf("service %s@%d\n", s.Metadata.Name, s.Metadata.Revision)
	}
	for _, in := range sn.instances {
		out += fmt.Sprintf("instance %s@%d %s %q\n", in.Metadata.Name, in.Metadata.Revision, in.Status.Phase, in.Status.Message)
	}
	return out
}

// A pass changes copies, never the cache's objects: after a pass that
// marks a node NotReady and its instance Lost, finishes a drain, hands out
// a pod subnet and a VIP, writes service and job statuses and records
// why an instance waits, every cached object is as it was.
func TestPassLeavesCachedObjectsAlone(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	mustCreate := func(objs ...api.Object) {
		t.Helper()
		for _, o := range objs {
			if err := s.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	node := func(name string) *api.Node {
		return &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{
			Capacity: api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30, Pids: 1000}},
			Status: api.NodeStatus{Condition: api.NodeReady}}
	}
	draining := node("n3")
	draining.Spec.Draining, draining.Spec.Unschedulable = true, true
	mustCreate(node("n1"), node("n2"), draining)
	for _, n := range []string{"n1", "n3"} {
		if err := s.KeepNodeAlive(ctx, n, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	tmpl := api.Template{Image: "demo/busybox:1"}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1, Template: tmpl}}
	big := &api.Service{Metadata: api.Metadata{Name: "big"}, Spec: api.ServiceSpec{Replicas: 1,
		Template: api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 64}}}}
	job := &api.Job{Metadata: api.Metadata{Name: "batch"}, Spec: api.JobSpec{Completions: 1, Template: tmpl}}
	mustCreate(svc, big, job)
	onN2 := &api.Instance{Metadata: api.Metadata{Name: "web-old"}, Spec: api.InstanceSpec{Template: &tmpl, Node: "n2",
		Owner: api.Owner{Kind: api.KindService, Name: "web", UID: svc.Metadata.UID}, SpecHash: tmpl.Hash()},
		Status: api.InstanceStatus{Phase: api.PhaseRunning}}
	waiting := &api.Instance{Metadata: api.Metadata{Name: "big-1"}, Spec: api.InstanceSpec{Template: &big.Spec.Template,
		Owner: api.Owner{Kind: api.KindService, Name: "big", UID: big.Metadata.UID}, SpecHash: big.Spec.Template.Hash()},
		Status: api.InstanceStatus{Phase: api.PhasePending}}
	mustCreate(onN2, waiting)

	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork})
	m.cache = newCache(s)
	if _, err := m.cache.fill(ctx); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for k, objs := range m.cache.objs {
		for key, o := range objs {
			b, _ := json.Marshal(o)
			before[string(k)+"/"+key.String()] = string(b)
		}
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	for k, objs := range m.cache.objs {
		for key, o := range objs {
			b, _ := json.Marshal(o)
			if before[string(k)+"/"+key.String()] != string(b) {
				t.Errorf("the pass changed the cached %s %s:\nwas %s\nnow %s", k, key, before[string(k)+"/"+key.String()], b)
			}
		}
	}
	// And it did do all that, in the store.
	n2, _ := store.Get[api.Node](ctx, s, "", "n2")
	n3, _ := store.Get[api.Node](ctx, s, "", "n3")
	n1, _ := store.Get[api.Node](ctx, s, "", "n1")
	old, oldErr := store.Get[api.Instance](ctx, s, "default", "web-old")
	w, _ := store.Get[api.Instance](ctx, s, "default", "big-1")
	web, _ := store.Get[api.Service](ctx, s, "default", "web")
	b, _ := store.Get[api.Job](ctx, s, "default", "batch")
	switch {
	case n2.Status.Condition != api.NodeNotReady:
		t.Errorf("n2 is %q, want NotReady", n2.Status.Condition)
	case oldErr == nil && old.Status.Phase != api.PhaseLost:
		t.Errorf("web-old is %q, want Lost (or removed once replaced)", old.Status.Phase)
	case n3.Spec.Draining:
		t.Error("n3 still draining")
	case n1.Spec.PodSubnet == "":
		t.Error("n1 got no pod subnet")
	case web.Status.VIP == "":
		t.Error("web got no VIP")
	case b.Status.Phase == "":
		t.Error("the job's status was not written")
	case !strings.HasPrefix(w.Status.Message, "unschedulable"):
		t.Errorf("big-1 says %q, want why it waits", w.Status.Message)
	}
	insts, _, err := store.List[api.Instance](ctx, s, "default")
	if err != nil {
		t.Fatal(err)
	}
	replaced := false
	for _, in := range insts {
		replaced = replaced || in.Spec.Owner.Name == "web" && in.Spec.Node == "n1"
	}
	if !replaced {
		t.Error("web-old was not replaced on n1")
	}
}

// Instances of a service made from the same template hold one copy of it
// in the cache, listed or watched alike; an instance whose template
// differs keeps its own, whatever its owner says.
func TestCacheSharesTemplates(t *testing.T) {
	s := OpenTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	mk := func(name, v string) {
		in := &api.Instance{Metadata: api.Metadata{Name: name, Labels: map[string]string{"berth.owner": "web"}}, Spec: api.InstanceSpec{
			Template: &api.Template{Image: "demo/busybox:1", Env: map[string]string{"V": v}}, Owner: api.Owner{Kind: api.KindService, Name: "web", UID: "u1"}}}
		if err := s.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	mk("web-1", "1")
	mk("web-2", "1")
	c := newCache(s)
	go c.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})
	mk("web-3", "1") // through the watch, maybe
	mk("web-4", "2")
	if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	sn, _ := c.snapshot()
	if len(sn.instances) != 4 {
		t.Fatalf("%d instances cached, want 4", len(sn.instances))
	}
	same := func(a, b map[string]string) bool {
		return reflect.ValueOf(a).UnsafePointer() == reflect.ValueOf(b).UnsafePointer()
	}
	in := sn.instances
	for _, i := range []int{1, 2} {
		if !same(in[0].Spec.Template.Env, in[i].Spec.Template.Env) || !same(in[0].Metadata.Labels, in[i].Metadata.Labels) {
			t.Errorf("%s holds a template or labels of its own, not web-1's", in[i].Metadata.Name)
		}
	}
	if same(in[0].Spec.Template.Env, in[3].Spec.Template.Env) {
		t.Errorf("web-4 shares web-1's template, though its environment differs")
	}
	for i, want := range []string{"1", "1", "1", "2"} {
		if got := in[i].Spec.Template.Env["V"]; got != want {
			t.Errorf("%s: V=%q, want %q", in[i].Metadata.Name, got, want)
		}
	}
}

// A pass read from the cache, which counts the instances on each node
// instead of looking at each, still finds the one bound to a node since
// removed, and the one left to place.
func TestCachedPassFindsInstancesOfRemovedNodesAndUnbound(t *testing.T) {
	s := OpenTestStore(t)
	ctx := context.Background()
	tmpl := api.Template{Image: "demo/busybox:1"}
	n1 := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30, Pids: 1000}},
		Status: api.NodeStatus{Condition: api.NodeReady}}
	web := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1, Template: tmpl}}
	db := &api.Service{Metadata: api.Metadata{Name: "db"}, Spec: api.ServiceSpec{Replicas: 1, Template: tmpl}}
	for _, o := range []api.Object{n1, web, db} {
		if err := s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	in := func(name, node string, svc *api.Service, phase api.Phase) *api.Instance {
		return &api.Instance{Metadata: api.Metadata{Name: name}, Spec: api.InstanceSpec{Template: &tmpl, Node: node, SpecHash: tmpl.Hash(),
			Owner: api.Owner{Kind: api.KindService, Name: svc.Metadata.Name, UID: svc.Metadata.UID}},
			Status: api.InstanceStatus{Phase: phase}}
	}
	if err := s.CreateMany(ctx, []api.Object{in("db-old", "gone", db, api.PhaseRunning), in("web-1", "", web, api.PhasePending)}); err != nil {
		t.Fatal(err)
	}
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, StartGrace: -1})
	m.cache = newCache(s)
	if _, err := m.cache.fill(ctx); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	old, err := store.Get[api.Instance](ctx, s, "default", "db-old")
	if err == nil && (old.Status.Phase != api.PhaseLost || !strings.Contains(old.Status.Message, "node gone was removed")) {
		t.Errorf("db-old, on a node removed, is %s (%q), want Lost saying its node was removed", old.Status.Phase, old.Status.Message)
	}
	insts, _, err := store.List[api.Instance](ctx, s, "default")
	if err != nil {
		t.Fatal(err)
	}
	bound, replaced := map[string]string{}, false
	for _, in := range insts {
		bound[in.Metadata.Name] = in.Spec.Node
		replaced = replaced || in.Spec.Owner.Name == "db" && in.Spec.Node == "n1"
	}
	if bound["web-1"] != "n1" {
		t.Errorf("web-1 is bound to %q, want n1 (instances: %v)", bound["web-1"], bound)
	}
	if !replaced {
		t.Errorf("db-old was not replaced on n1 (instances: %v)", bound)
	}
}

// Passes from the cache skip looking at every node's pod subnet while
// the nodes are as they were when all had one; a node that joins
// still gets its own.
func TestCachedPassesGiveAJoiningNodeItsSubnet(t *testing.T) {
	s := OpenTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := func(name string) *api.Node {
		return &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{Capacity: api.NodeCapacity{MilliCPU: 1000, Memory: 1 << 30, Pids: 1000}},
			Status: api.NodeStatus{Condition: api.NodeReady}}
	}
	subnet := func(name string) string {
		t.Helper()
		n, err := store.Get[api.Node](ctx, s, "", name)
		if err != nil {
			t.Fatal(err)
		}
		return n.Spec.PodSubnet
	}
	if err := s.Create(ctx, node("n1")); err != nil {
		t.Fatal(err)
	}
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, StartGrace: -1})
	m.cache = newCache(s)
	go m.cache.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})
	pass := func() {
		t.Helper()
		if err := m.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pass()
	pass() // n1's subnet seen: the nodes are settled
	if subnet("n1") == "" {
		t.Fatal("n1 got no pod subnet")
	}
	if m.subnetsDone == 0 {
		t.Fatal("the passes never found every node with its subnet")
	}
	if err := s.Create(ctx, node("n2")); err != nil {
		t.Fatal(err)
	}
	pass()
	if got, other := subnet("n2"), subnet("n1"); got == "" || got == other {
		t.Errorf("n2 joined and got pod subnet %q (n1 has %q), want one of its own", got, other)
	}
}

// warnings records what a follower warns of.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) Warn(msg string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, fmt.Sprintln(append([]any{msg}, args...)...))
}

func (w *warnings) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

// The check behind the watch finds what the watch did not bring: an
// object missing from the cache, one at a revision older than the
// store's, one the store no longer holds, a heartbeat lease; the cache
// then lists everything again. While the watch brings every change, as
// writes go on, it finds nothing and lists nothing.
func TestCacheCheckFindsWhatTheWatchMissed(t *testing.T) {
	s := OpenTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	create := func(name string) {
		t.Helper()
		in := &api.Instance{Metadata: api.Metadata{Name: name}, Spec: api.InstanceSpec{
			Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
		if err := s.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5 {
		create(fmt.Sprintf("in-%d", i))
	}
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	c := newCache(s)
	warned := &warnings{}
	go c.follow(ctx, warned, 20*time.Millisecond, func() {})
	checked := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.checked
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10 s; warnings %q", what, warned.all())
			}
			time.Sleep(5 * time.Millisecond)
		}
	}

	// Writes of every kind through the watch, checks in between.
	from := checked()
	for i := 5; i < 40; i++ {
		create(fmt.Sprintf("in-%d", i))
		in, err := store.Get[api.Instance](ctx, s, "default", fmt.Sprintf("in-%d", i-1))
		if err != nil {
			t.Fatal(err)
		}
		in.Status.Message = fmt.Sprint("write ", i)
		if err := s.UpdateStatus(ctx, in, 0); err != nil {
			t.Fatal(err)
		}
		if i%5 == 0 {
			if err := s.Delete(ctx, api.KindInstance, "default", fmt.Sprintf("in-%d", i-3), 0); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(2 * time.Millisecond) // let checks fall among the writes
	}
	if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	wait("three checks after the writes", func() bool { return checked() >= from+3 })
	if w := warned.all(); len(w) != 0 {
		t.Fatalf("the check found differences the watch brought: %q", w)
	}

	cached := func(name string) api.Object {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.objs[api.KindInstance][objID{"default", name}]
	}
	stored := func(name string) *api.Instance {
		t.Helper()
		in, err := store.Get[api.Instance](ctx, s, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	for _, tc := range []struct {
		name, warning string
		miss          func() // takes from the cache what a watch would have brought
		healed        func() bool
	}{
		{"a creation", "default/in-1 missing",
			func() { delete(c.objs[api.KindInstance], objID{"default", "in-1"}) },
			func() bool { return cached("in-1") != nil }},
		{"a change", "default/in-4 at revision",
			func() {
				old := own(c.objs[api.KindInstance][objID{"default", "in-4"}].(*api.Instance))
				old.Metadata.Revision--
				c.objs[api.KindInstance][objID{"default", "in-4"}] = old
			},
			func() bool {
				o := cached("in-4")
				return o != nil && o.GetMetadata().Revision == stored("in-4").Metadata.Revision
			}},
		{"a removal", "instances cached",
			func() {
				ghost := own(c.objs[api.KindInstance][objID{"default", "in-3"}].(*api.Instance))
				ghost.Metadata.Name = "ghost"
				c.objs[api.KindInstance][objID{"default", "ghost"}] = ghost
			},
			func() bool { return cached("ghost") == nil }},
		{"a lease", "node heartbeat leases differ",
			func() { delete(c.leases, "n1") },
			func() bool { c.mu.Lock(); defer c.mu.Unlock(); return c.leases["n1"] }},
	} {
		before := len(warned.all())
		c.mu.Lock()
		tc.miss()
		c.mu.Unlock()
		wait("the cache to list "+tc.name+" again", tc.healed)
		w := warned.all()[before:]
		if len(w) != 1 || !strings.Contains(w[0], "the watch missed changes") || !strings.Contains(w[0], tc.warning) {
			t.Fatalf("missed %s, the cache warned %q; want one warning naming %q", tc.name, w, tc.warning)
		}
	}
	// And it matches the store again, through the watch.
	create("in-after")
	if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, _ := c.snapshot()
	want, err := (&Manager{s: s}).list(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := render(got), render(want); g != w {
		t.Fatalf("after the lists the cache holds\n%s\nand the store\n%s", g, w)
	}
}
