package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
)

// openStore is a store on an embedded etcd of the test's own.
var openStore = controller.OpenTestStore

// clock is a settable clock for the node lifecycle.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type harness struct {
	t   *testing.T
	ctx context.Context
	s   *store.Store
	m   *controller.Manager
	clk *clock
}

func newHarness(t *testing.T, nodes ...string) *harness {
	s := openStore(t)
	clk := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := &harness{t: t, ctx: context.Background(), s: s, clk: clk,
		m: controller.NewManager(s, controller.Options{Logger: slog.New(slog.DiscardHandler), Clock: clk.now,
			LostGrace: 5 * time.Second})}
	for _, n := range nodes {
		node := &api.Node{Metadata: api.Metadata{Name: n}, Spec: api.NodeSpec{
			Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
		if err := s.Create(h.ctx, node); err != nil {
			t.Fatal(err)
		}
		h.heartbeat(n)
	}
	return h
}

func (h *harness) heartbeat(node string) {
	h.t.Helper()
	n, err := store.Get[api.Node](h.ctx, h.s, "", node)
	if err != nil {
		h.t.Fatal(err)
	}
	n.Status.Condition = api.NodeReady
	n.Status.LastHeartbeat = h.clk.now()
	if err := h.s.UpdateStatus(h.ctx, n, 0); err != nil {
		h.t.Fatal(err)
	}
	if err := h.s.KeepNodeAlive(h.ctx, node, 10*time.Second); err != nil {
		h.t.Fatal(err)
	}
}

// service creates service name of replicas busybox instances placed as
// p says.
func (h *harness) service(name string, replicas int, p api.Placement) {
	h.t.Helper()
	svc := &api.Service{Metadata: api.Metadata{Name: name}, Spec: api.ServiceSpec{Replicas: replicas,
		Template: api.Template{Image: "demo/busybox:1"}, Placement: p}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		h.t.Fatal(err)
	}
}

// outlive stops lost's heartbeat and lets 24 s pass, alive heartbeating
// and the manager passing every 4 s.
func (h *harness) outlive(lost, alive string) {
	h.t.Helper()
	h.stopHeartbeat(lost)
	for range 6 {
		h.clk.add(4 * time.Second)
		h.heartbeat(alive)
		h.pass()
	}
}

// stopHeartbeat ends a node's lease, as its agent dying would after the TTL.
func (h *harness) stopHeartbeat(node string) {
	h.t.Helper()
	if err := h.s.ExpireNode(h.ctx, node); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) pass() {
	h.t.Helper()
	if err := h.m.Pass(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) instances() []*api.Instance {
	h.t.Helper()
	in, _, err := store.List[api.Instance](h.ctx, h.s, "")
	if err != nil {
		h.t.Fatal(err)
	}
	return in
}

// agent plays the node agents: every bound, non-terminal instance becomes what phase says.
func (h *harness) agent(phase func(*api.Instance) api.Phase) {
	h.t.Helper()
	for _, in := range h.instances() {
		if in.Spec.Node == "" || in.Status.Phase.Terminal() {
			continue
		}
		p := phase(in)
		if p == in.Status.Phase {
			continue
		}
		in.Status.Phase, in.Status.Healthy = p, p == api.PhaseRunning
		if p == api.PhaseFailed {
			in.Status.ExitCode = 1
		}
		if err := h.s.UpdateStatus(h.ctx, in, 0); err != nil {
			h.t.Fatal(err)
		}
	}
}

func running(*api.Instance) api.Phase { return api.PhaseRunning }

func (h *harness) count(cond func(*api.Instance) bool) int {
	n := 0
	for _, in := range h.instances() {
		if cond(in) {
			n++
		}
	}
	return n
}

func (h *harness) scale(name string, replicas int) {
	svc, err := store.Get[api.Service](h.ctx, h.s, "default", name)
	if err != nil {
		h.t.Fatal(err)
	}
	svc.Spec.Replicas = replicas
	if err := h.s.Update(h.ctx, svc, 0); err != nil {
		h.t.Fatal(err)
	}
}

func TestServiceScaleAndHeal(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 3,
		Template:  api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 0.5, Memory: 64 << 20}},
		Placement: api.Placement{Spread: []string{"node"}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.pass()
	bound := func(in *api.Instance) bool { return in.Spec.Node != "" }
	if n := h.count(bound); n != 3 {
		t.Fatalf("%d instances bound, want 3", n)
	}
	perNode := map[string]int{}
	for _, in := range h.instances() {
		perNode[in.Spec.Node]++
	}
	if perNode["n1"]+perNode["n2"] != 3 || perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Errorf("spread over nodes: %v", perNode)
	}
	h.agent(running)
	h.pass()
	got, _ := store.Get[api.Service](h.ctx, h.s, "default", "web")
	if got.Status.ReadyReplicas != 3 {
		t.Errorf("readyReplicas %d, want 3", got.Status.ReadyReplicas)
	}

	h.scale("web", 5)
	h.pass()
	h.agent(running)
	if n := h.count(bound); n != 5 {
		t.Fatalf("after scale to 5: %d instances, want 5", n)
	}
	newest := h.instances()
	h.scale("web", 1)
	h.pass()
	left := h.instances()
	if len(left) != 1 {
		t.Fatalf("after scale to 1: %d instances, want 1", len(left))
	}
	oldest := newest[0]
	for _, in := range newest {
		if in.Metadata.CreatedAt.Before(oldest.Metadata.CreatedAt) {
			oldest = in
		}
	}
	if left[0].Metadata.Name != oldest.Metadata.Name {
		t.Errorf("scale down kept %s, want the oldest %s", left[0].Metadata.Name, oldest.Metadata.Name)
	}

	// A failed instance (its restart policy said not to run it again)
	// stays, and the service says so, in its status and an event, once.
	failed := h.instances()[0].Metadata.Name
	h.agent(func(*api.Instance) api.Phase { return api.PhaseFailed })
	h.pass()
	h.pass()
	if left := h.instances(); len(left) != 1 || left[0].Metadata.Name != failed {
		t.Errorf("after a failure: %d instances, want %s alone", len(left), failed)
	}
	got, _ = store.Get[api.Service](h.ctx, h.s, "default", "web")
	if !strings.Contains(got.Status.Message, failed+" failed") {
		t.Errorf("status message %q does not name the failed instance", got.Status.Message)
	}
	evs, _, _ := store.List[api.Event](h.ctx, h.s, "default")
	exited := 0
	for _, ev := range evs {
		if ev.Reason == "InstanceExited" && ev.Object.Name == "web" {
			exited++
		}
	}
	if exited != 1 {
		t.Errorf("%d InstanceExited events, want 1", exited)
	}
	// A lost one is replaced.
	lost := h.instances()[0]
	lost.Status.Phase = api.PhaseLost
	if err := h.s.UpdateStatus(h.ctx, lost, 0); err != nil {
		t.Fatal(err)
	}
	h.pass()
	if n := h.count(func(in *api.Instance) bool { return !in.Status.Phase.Terminal() }); n != 1 {
		t.Errorf("after a loss: %d live instances, want 1", n)
	}

	// Deleting the service removes its instances.
	if err := h.s.Delete(h.ctx, api.KindService, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	h.pass()
	if n := len(h.instances()); n != 0 {
		t.Errorf("%d instances left after the service was deleted", n)
	}
}

func TestJobShards(t *testing.T) {
	h := newHarness(t, "n1")
	job := &api.Job{Metadata: api.Metadata{Name: "tests"}, Spec: api.JobSpec{Completions: 8, Parallelism: 4, BackoffLimit: 2,
		Template: api.Template{Image: "demo/busybox:1", Command: []string{"true"}}}}
	if err := h.s.Create(h.ctx, job); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for range 20 {
		h.pass()
		active := h.count(func(in *api.Instance) bool { return !in.Status.Phase.Terminal() })
		if active > 4 {
			t.Fatalf("%d shards at once, parallelism is 4", active)
		}
		for _, in := range h.instances() {
			if in.Spec.Template.Env["BERTH_JOB_INDEX"] != fmt.Sprint(in.Spec.Index) || in.Spec.Template.Env["BERTH_JOB_COMPLETIONS"] != "8" {
				t.Fatalf("instance %s env %v", in.Metadata.Name, in.Spec.Template.Env)
			}
			seen[in.Spec.Template.Env["BERTH_JOB_INDEX"]] = true
		}
		h.agent(func(*api.Instance) api.Phase { return api.PhaseSucceeded })
		j, _ := store.Get[api.Job](h.ctx, h.s, "default", "tests")
		if j.Status.Phase == api.JobSucceeded {
			if len(seen) != 8 || j.Status.Succeeded != 8 {
				t.Errorf("succeeded with %d indices seen, status %+v", len(seen), j.Status)
			}
			return
		}
	}
	t.Fatal("job never succeeded")
}

func TestJobFailsAfterBackoffLimit(t *testing.T) {
	h := newHarness(t, "n1")
	job := &api.Job{Metadata: api.Metadata{Name: "flaky"}, Spec: api.JobSpec{Completions: 5, Parallelism: 5, BackoffLimit: 2,
		Template: api.Template{Image: "demo/busybox:1"}}}
	if err := h.s.Create(h.ctx, job); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		h.pass()
		h.agent(func(in *api.Instance) api.Phase {
			if in.Spec.Index == 3 {
				return api.PhaseFailed
			}
			return api.PhaseSucceeded
		})
		j, _ := store.Get[api.Job](h.ctx, h.s, "default", "flaky")
		if j.Status.Phase == api.JobFailed {
			if j.Status.Failed != 3 || !j.Status.Indexes[3].Failed || j.Status.Indexes[3].Attempts != 3 {
				t.Errorf("failed job status %+v", j.Status)
			}
			return
		}
		if j.Status.Phase == api.JobSucceeded {
			t.Fatal("a job whose index 3 always fails succeeded")
		}
	}
	t.Fatal("job never failed")
}

func TestLostNodeInstancesAreReplaced(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	h.service("web", 2, api.Placement{AntiAffinity: true})
	h.pass()
	h.agent(running)
	// n2 stops heartbeating; n1 keeps on.
	h.outlive("n2", "n1")
	n2, _ := store.Get[api.Node](h.ctx, h.s, "", "n2")
	if n2.Status.Condition != api.NodeNotReady {
		t.Fatalf("n2 is %s after 24s without heartbeat", n2.Status.Condition)
	}
	lost := h.count(func(in *api.Instance) bool { return in.Status.Phase == api.PhaseLost })
	if lost != 0 {
		// Lost ones are replaced in the same or the next pass.
		h.pass()
	}
	for _, in := range h.instances() {
		if in.Spec.Node == "n2" && !in.Status.Phase.Terminal() {
			t.Errorf("instance %s still live on the lost node", in.Metadata.Name)
		}
	}
	// With anti-affinity and one node left, the replacement waits and says why.
	var waiting *api.Instance
	for _, in := range h.instances() {
		if in.Spec.Node == "" {
			waiting = in
		}
	}
	if waiting == nil || waiting.Status.Message == "" {
		t.Fatalf("no replacement waiting with a reason: %+v", h.instances())
	}
	t.Logf("waiting: %s", waiting.Status.Message)
}

// A node lost with more instances than one transaction takes has every
// one marked lost (in batches) and replaced on the node left.
func TestLostNodeManyInstancesReplaced(t *testing.T) {
	h := newHarness(t, "n1")
	const replicas = 400 // over the store's BindBatch (341): two transactions
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: replicas,
		Template: api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 0.01, Memory: 4 << 20, Pids: 1}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.pass()
	h.agent(running)
	if n := h.count(func(in *api.Instance) bool { return in.Spec.Node == "n1" }); n != replicas {
		t.Fatalf("%d instances on n1, want %d", n, replicas)
	}
	n2 := &api.Node{Metadata: api.Metadata{Name: "n2"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
	if err := h.s.Create(h.ctx, n2); err != nil {
		t.Fatal(err)
	}
	h.heartbeat("n2")
	h.stopHeartbeat("n1")
	h.passUntil("every instance of n1 replaced on n2", func() bool {
		h.clk.add(4 * time.Second)
		h.heartbeat("n2")
		return h.count(func(in *api.Instance) bool { return in.Spec.Node == "n2" && !in.Status.Phase.Terminal() }) == replicas
	})
	if live := h.count(func(in *api.Instance) bool { return in.Spec.Node == "n1" && !in.Status.Phase.Terminal() }); live != 0 {
		t.Fatalf("%d instances still live on the lost node", live)
	}
	if total := len(h.instances()); total > 2*replicas {
		t.Fatalf("%d instances for %d replicas", total, replicas)
	}
}

// Instances are named per namespace: losing a node must not touch a
// same-named instance of another namespace on a healthy node.
func TestLostIsPerNamespace(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	for ns, node := range map[string]string{"a": "n1", "b": "n2"} {
		job := &api.Job{Metadata: api.Metadata{Namespace: ns, Name: "batch"}, Spec: api.JobSpec{Completions: 1,
			Template:  api.Template{Image: "demo/busybox:1"},
			Placement: api.Placement{Constraints: []api.Constraint{{Key: "node.name", Op: api.OpEq, Values: []string{node}}}}}}
		if err := h.s.Create(h.ctx, job); err != nil {
			t.Fatal(err)
		}
	}
	h.pass()
	h.agent(running)
	h.outlive("n2", "n1")
	for _, in := range h.instances() {
		lost := in.Status.Phase == api.PhaseLost
		if want := in.Spec.Node == "n2"; lost != want {
			t.Errorf("%s/%s on %s: lost=%v, want %v", in.Metadata.Namespace, in.Metadata.Name, in.Spec.Node, lost, want)
		}
	}
}

// runManager runs a manager with opt (and the harness's store) until the test ends.
func runManager(t *testing.T, h *harness, opt controller.Options) {
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = controller.NewManager(h.s, opt).Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			if state != nil {
				what += "\n" + state()
			}
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// settle waits, with a manager running, until service name has replicas
// instances bound, plays the agents running them and waits until the
// pass that saw them running wrote the service's status.
func (h *harness) settle(name string, replicas int) {
	h.t.Helper()
	waitFor(h.t, 5*time.Second, fmt.Sprintf("%d instances of %s bound", replicas, name), func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Owner.Name == name && in.Spec.Node != "" }) == replicas
	}, func() string { return dump(h.instances()) })
	h.agent(running)
	waitFor(h.t, 5*time.Second, fmt.Sprintf("%s's status to count %d ready", name, replicas), func() bool {
		s, err := store.Get[api.Service](h.ctx, h.s, "default", name)
		return err == nil && s.Status.ReadyReplicas == replicas
	}, nil)
}

// A lapsed heartbeat lease is the whole wait: the running manager hears
// of it through the lease's key (not its resync) and marks the node
// NotReady, its instances Lost and their replacements bound elsewhere
// in one go.
func TestLapsedLeaseReplacesAtOnce(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: time.Hour, StartGrace: -1})
	h.service("web", 2, api.Placement{Spread: []string{"node"}})
	h.settle("web", 2)
	if n := h.count(func(in *api.Instance) bool { return in.Spec.Node == "n2" }); n != 1 {
		t.Fatalf("%d instances on n2 before it goes, want 1", n)
	}
	h.stopHeartbeat("n2")
	waitFor(t, 5*time.Second, "n2's instance replaced on n1", func() bool {
		// The lost one is marked Lost and then removed once replaced.
		live := h.count(func(in *api.Instance) bool {
			return in.Spec.Node == "n2" && !in.Status.Phase.Terminal()
		})
		onN1 := h.count(func(in *api.Instance) bool {
			return in.Spec.Node == "n1" && !in.Status.Phase.Terminal()
		})
		return live == 0 && onN1 == 2
	}, func() string { return dump(h.instances()) })
	if n, _ := store.Get[api.Node](h.ctx, h.s, "", "n2"); n.Status.Condition != api.NodeNotReady {
		t.Errorf("n2 is %q, want NotReady", n.Status.Condition)
	}
}

// A node removed while its instances run there has them marked lost and
// replaced, though its lease is still held: the running manager finds
// them through its cache's index of instances by node.
func TestRemovedNodeInstancesAreReplaced(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: time.Hour, StartGrace: -1})
	h.service("web", 2, api.Placement{Spread: []string{"node"}})
	h.settle("web", 2)
	on := func(node string) int {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node == node && !in.Status.Phase.Terminal() })
	}
	if on("n2") == 0 {
		t.Fatalf("no instance on n2 before it goes\n%s", dump(h.instances()))
	}
	if err := h.s.Delete(h.ctx, api.KindNode, "", "n2", 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n2's instances replaced on n1", func() bool {
		return on("n2") == 0 && on("n1") == 2
	}, func() string { return dump(h.instances()) })
}

// A manager that just started marks a node without a lease NotReady but
// leaves its instances alone until the nodes had a TTL to reach it.
func TestStartGraceKeepsInstances(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	h.service("web", 2, api.Placement{Spread: []string{"node"}})
	h.pass()
	h.agent(running)
	h.stopHeartbeat("n2")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: 20 * time.Millisecond, StartGrace: time.Hour})
	waitFor(t, 5*time.Second, "n2 NotReady", func() bool {
		n, err := store.Get[api.Node](h.ctx, h.s, "", "n2")
		return err == nil && n.Status.Condition == api.NodeNotReady
	}, nil)
	// A pass after that one must not mark it Lost either: a service made
	// now and bound shows that passes went on.
	h.service("later", 1, api.Placement{})
	waitFor(t, 5*time.Second, "a later service's instance bound", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Owner.Name == "later" && in.Spec.Node != "" }) == 1
	}, nil)
	if n := h.count(func(in *api.Instance) bool { return in.Status.Phase == api.PhaseLost }); n != 0 {
		t.Errorf("%d instances Lost within the start grace, want none", n)
	}
}

// A manager that just started gives up at once the instances of a node
// that a server saw miss its beats (its key lapsed): only one whose key
// went without that (its server's lease ended; ExpireNode) may be beating
// on its way to another server, and keeps its instances through the start
// grace.
func TestStartGraceSparesOnlyNodesNotSeenToLapse(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	h.service("web", 3, api.Placement{Spread: []string{"node"}})
	h.pass()
	h.agent(running)
	// n2's last beat gives it a millisecond: the sweep deletes its key as lapsed.
	if err := h.s.KeepNodeAlive(h.ctx, "n2", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n2's key lapsed", func() bool {
		lapsed, err := h.s.LapsedNodesAt(h.ctx, 0)
		return err == nil && lapsed["n2"]
	}, nil)
	h.stopHeartbeat("n3")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: 20 * time.Millisecond, StartGrace: time.Hour})
	waitFor(t, 5*time.Second, "n2's instance given up", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node == "n2" && !in.Status.Phase.Terminal() }) == 0
	}, func() string { return dump(h.instances()) })
	// A pass after that one must not give up n3's either: a service made
	// now and bound shows that passes went on.
	h.service("later", 1, api.Placement{})
	waitFor(t, 5*time.Second, "a later service's instance bound", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Owner.Name == "later" && in.Spec.Node != "" }) == 1
	}, nil)
	if n := h.count(func(in *api.Instance) bool { return in.Spec.Node == "n3" && in.Status.Phase == api.PhaseRunning }); n != 1 {
		t.Errorf("%d instances Running on n3 within the start grace, want 1\n%s", n, dump(h.instances()))
	}
}

// A running manager too gives up at once only a node whose key lapsed:
// one whose key went with its server's lease (ExpireNode) keeps its
// instance for the grace, as the server may bind it again, or the node
// beat to another, within moments.
func TestRunningManagerSparesNodesNotSeenToLapse(t *testing.T) {
	h := newHarness(t, "n1", "n2", "n3")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: 20 * time.Millisecond, StartGrace: time.Hour})
	h.service("web", 3, api.Placement{Spread: []string{"node"}})
	h.settle("web", 3)
	h.stopHeartbeat("n3")
	if err := h.s.KeepNodeAlive(h.ctx, "n2", time.Millisecond); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "n2's instance given up", func() bool {
		return h.count(func(in *api.Instance) bool { return in.Spec.Node == "n2" && !in.Status.Phase.Terminal() }) == 0
	}, func() string { return dump(h.instances()) })
	waitFor(t, 5*time.Second, "n3 NotReady", func() bool {
		n, err := store.Get[api.Node](h.ctx, h.s, "", "n3")
		return err == nil && n.Status.Condition == api.NodeNotReady
	}, nil)
	if n := h.count(func(in *api.Instance) bool { return in.Spec.Node == "n3" && in.Status.Phase == api.PhaseRunning }); n != 1 {
		t.Errorf("%d instances Running on n3 within the grace, want 1\n%s", n, dump(h.instances()))
	}
}

func dump(insts []*api.Instance) string {
	var b strings.Builder
	for _, in := range insts {
		fmt.Fprintf(&b, "%s node=%q phase=%s message=%q\n", in.Metadata.Name, in.Spec.Node, in.Status.Phase, in.Status.Message)
	}
	return b.String()
}

// A new service's instances are placed before they are stored: one
// write makes each, already bound and in its node's assignments.
func TestNewInstancesAreStoredBound(t *testing.T) {
	h := newHarness(t, "n1")
	h.service("web", 2, api.Placement{})
	before, err := h.s.Revision(h.ctx)
	if err != nil {
		t.Fatal(err)
	}
	h.pass()
	insts := h.instances()
	if len(insts) != 2 {
		t.Fatalf("%d instances, want 2", len(insts))
	}
	for _, in := range insts {
		if in.Spec.Node != "n1" || in.Status.Phase != api.PhaseScheduled || in.Status.ScheduledAt.IsZero() {
			t.Errorf("instance %s: node %q phase %s scheduled at %v, want n1, Scheduled, a time", in.Metadata.Name, in.Spec.Node, in.Status.Phase, in.Status.ScheduledAt)
		}
		if in.Metadata.Revision != before+1 {
			t.Errorf("instance %s at revision %d, want %d: made and bound in one write", in.Metadata.Name, in.Metadata.Revision, before+1)
		}
	}
	assigned, _, err := h.s.Assignments(h.ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if len(assigned) != 2 {
		t.Errorf("%d instances in n1's assignments, want 2", len(assigned))
	}
}

// An instance that cannot be placed is stored anyway, waiting, with the
// reason in its status and an event.
func TestNewInstanceThatCannotBePlacedWaits(t *testing.T) {
	h := newHarness(t, "n1")
	svc := &api.Service{Metadata: api.Metadata{Name: "big"}, Spec: api.ServiceSpec{Replicas: 1,
		Template: api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 64}}}}
	if err := h.s.Create(h.ctx, svc); err != nil {
		t.Fatal(err)
	}
	h.pass()
	insts := h.instances()
	if len(insts) != 1 || insts[0].Spec.Node != "" || !strings.HasPrefix(insts[0].Status.Message, "unschedulable: ") {
		t.Fatalf("want one unbound instance saying why, got\n%s", dump(insts))
	}
	evs, _, err := store.List[api.Event](h.ctx, h.s, "")
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, ev := range evs {
		found = found || ev.Reason == "Unschedulable" && ev.Object.Name == insts[0].Metadata.Name
	}
	if !found {
		t.Error("no Unschedulable event for the waiting instance")
	}
}
