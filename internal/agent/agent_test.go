package agent_test

import (
	"context"

	"log/slog"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// controlPlane is an in-memory stand-in for the API: it hands out
// assignments and records the statuses the agent reports.
type controlPlane struct {
	mu       sync.Mutex
	statuses map[string][]agent.Status // by instance name
	assign   chan []agent.Assignment
	initial  []agent.Assignment
}

func newControlPlane(initial ...*agent.Instance) *controlPlane {
	cp := &controlPlane{statuses: map[string][]agent.Status{}, assign: make(chan []agent.Assignment, 16)}
	for _, i := range initial {
		cp.initial = append(cp.initial, agent.Assignment{Instance: i})
	}
	return cp
}

func (c *controlPlane) RegisterNode(context.Context, agent.NodeInfo) error { return nil }
func (c *controlPlane) Heartbeat(context.Context, string) error            { return nil }
func (c *controlPlane) WatchAssigned(ctx context.Context, _ string, ch chan<- []agent.Assignment) error {
	c.mu.Lock()
	first := append(append([]agent.Assignment(nil), c.initial...), agent.Resync)
	c.mu.Unlock()
	ch <- first
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case b := <-c.assign:
			ch <- b
		}
	}
}
func (c *controlPlane) ReportStatus(_ context.Context, _, name, _ string, st agent.Status) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.statuses[name] = append(c.statuses[name], st)
	return nil
}

func (c *controlPlane) last(name string) (agent.Status, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.statuses[name]
	if len(s) == 0 {
		return agent.Status{}, false
	}
	return s[len(s)-1], true
}

// dirImages serves one directory as every image.
type dirImages struct{ dir string }

func (d dirImages) Prepare(context.Context, string, string) (agent.Rootfs, error) {
	return agent.Rootfs{LowerDirs: []string{d.dir}}, nil
}
func (d dirImages) Release(context.Context, string) error { return nil }

// fixture is an agent a test runs: the control plane it reports to and
// the runtime whose containers the test reads.
type fixture struct {
	t      *testing.T
	cp     *controlPlane
	rt     agent.Runtime
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

// runAgent runs an agent with cfg until stop or the end of the test; the
// fixture reads statuses from cp and containers from rt, which cfg may
// wrap.
func runAgent(t *testing.T, cfg agent.Config, cp *controlPlane, rt agent.Runtime) *fixture {
	ctx, cancel := context.WithCancel(context.Background())
	a := agent.New(cfg)
	f := &fixture{t: t, cp: cp, rt: rt, cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- a.Run(ctx) }()
	t.Cleanup(f.stop)
	return f
}

func start(t *testing.T, rootfs, stateDir string, cp *controlPlane) *fixture {
	rt, err := runtime.New(stateDir)
	if err != nil {
		t.Fatal(err)
	}
	return runAgent(t, agent.Config{
		Node: agent.NodeInfo{Name: "n1"}, ControlPlane: cp, Runtime: rt, Images: dirImages{rootfs},
		Logger: slog.New(slog.DiscardHandler), Resync: time.Second,
	}, cp, rt)
}

func (f *fixture) stop() { f.once.Do(f.stopOnce) }

func (f *fixture) stopOnce() {
	t0 := time.Now()
	defer func() { f.t.Logf("agent stopped in %v", time.Since(t0)) }()
	f.cancel()
	select {
	case err := <-f.done:
		if err != nil {
			f.t.Errorf("agent run: %v", err)
		}
	case <-time.After(15 * time.Second):
		f.t.Error("agent did not stop")
	}
}

func (f *fixture) waitStatus(name string, what string, cond func(agent.Status) bool) agent.Status {
	f.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if st, ok := f.cp.last(name); ok && cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			st, _ := f.cp.last(name)
			f.t.Fatalf("%s: timed out waiting for %s; last status %+v", name, what, st)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// containersOf counts the containers of instance uid in the runtime.
func (f *fixture) containersOf(uid string) int {
	list, err := f.rt.List(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	n := 0
	for _, st := range list {
		if st.Labels["berth.uid"] == uid {
			n++
		}
	}
	return n
}

func instance(name string, policy reconcile.Policy, cmd ...string) *agent.Instance {
	return &agent.Instance{Namespace: "default", Name: name, UID: "uid-" + name, Image: "demo/busybox:1",
		Command: cmd, Restart: policy, StopGrace: 200 * time.Millisecond}
}

func cleanupAll(t *testing.T, stateDir string) {
	t.Cleanup(func() {
		rt, err := runtime.New(stateDir)
		if err != nil {
			return
		}
		list, _ := rt.List(context.Background())
		for _, st := range list {
			_ = rt.Delete(context.Background(), st.ID, true)
		}
	})
}

func TestAgentRunsHealsAndRemoves(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	stateDir := t.TempDir()
	cleanupAll(t, stateDir)
	web := instance("web", reconcile.Always, "sleep", "300")
	shard := instance("shard", reconcile.Never, "sh", "-c", "exit 3")
	cp := newControlPlane(web, shard)
	f := start(t, rootfs, stateDir, cp)

	t0 := time.Now()
	run := f.waitStatus("web", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	t.Logf("assigned to running: %v", time.Since(t0))
	failed := f.waitStatus("shard", "Failed", func(s agent.Status) bool { return s.Phase == api.PhaseFailed })
	if failed.ExitCode != 3 || failed.Restarts != 0 {
		t.Errorf("shard: exit %d restarts %d, want exit 3 with no restart", failed.ExitCode, failed.Restarts)
	}

	// Kill the main process from outside: the agent brings up attempt 1.
	t0 = time.Now()
	if err := syscall.Kill(run.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	healed := f.waitStatus("web", "a restart", func(s agent.Status) bool { return s.Phase == api.PhaseRunning && s.Restarts == 1 })
	t.Logf("killed to running again: %v", time.Since(t0))
	if healed.ContainerID == run.ContainerID {
		t.Error("restart reused the dead container")
	}

	// An agent restarted over the same state adopts what runs: no new attempt.
	f.stop()
	cp.mu.Lock()
	clear(cp.statuses)
	cp.mu.Unlock()
	t0 = time.Now()
	f = start(t, rootfs, stateDir, cp)
	again := f.waitStatus("web", "running after agent restart", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	if again.ContainerID != healed.ContainerID || again.Pid != healed.Pid {
		t.Errorf("after an agent restart web runs as %s pid %d, want the adopted %s pid %d", again.ContainerID, again.Pid, healed.ContainerID, healed.Pid)
	}

	t.Logf("agent restart to status reported: %v", time.Since(t0))
	// Unassigning the instance stops and removes its containers.
	cp.assign <- []agent.Assignment{{Deleted: web.UID}}
	deadline := time.Now().Add(20 * time.Second)
	for left := f.containersOf(web.UID); left > 0; left = f.containersOf(web.UID) {
		if time.Now().After(deadline) {
			t.Fatalf("%d containers of an unassigned instance remain", left)
		}
		time.Sleep(10 * time.Millisecond)
	}
	f.stop()
}

func TestAgentRestartsUnhealthy(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	stateDir := t.TempDir()
	cleanupAll(t, stateDir)
	// Healthy while /tmp/ok exists; the container removes it after a moment.
	inst := instance("flaky", reconcile.Always, "sh", "-c", "touch /tmp/ok; sleep 0.5; rm /tmp/ok; sleep 300")
	inst.Health = &health.Check{Exec: []string{"test", "-f", "/tmp/ok"}, Interval: 100 * time.Millisecond, Timeout: time.Second, Failures: 2}
	cp := newControlPlane(inst)
	f := start(t, rootfs, stateDir, cp)
	defer f.stop()
	f.waitStatus("flaky", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning && s.Healthy })
	f.waitStatus("flaky", "a health restart", func(s agent.Status) bool { return s.Restarts >= 1 && s.Phase == api.PhaseRunning })
	reported := false
	f.cp.mu.Lock()
	for _, s := range f.cp.statuses["flaky"] {
		if !s.Healthy && s.Phase == api.PhaseRunning {
			reported = true
		}
	}
	f.cp.mu.Unlock()
	if !reported {
		t.Error("the unhealthy verdict was never reported before the restart")
	}
}
