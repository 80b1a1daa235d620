package agent_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// These run the agent's sync loop over the simulated runtime: no root, no
// containers, so they run for every user (make test runs them as nobody).

// startSim runs agent "hollow" over rt and cp until the test ends. cfg
// may set another runtime or control plane (one wrapping rt or cp) and
// the resync interval (a second when unset); the fixture reads statuses
// from cp and containers from rt.
func startSim(t *testing.T, cfg agent.Config, rt *simrt.Runtime, cp *controlPlane) *fixture {
	cfg.Node, cfg.Images, cfg.Logger = agent.NodeInfo{Name: "hollow"}, simrt.Images{}, slog.New(slog.DiscardHandler)
	if cfg.Runtime == nil {
		cfg.Runtime = rt
	}
	if cfg.ControlPlane == nil {
		cfg.ControlPlane = cp
	}
	if cfg.Resync == 0 {
		cfg.Resync = time.Second
	}
	return runAgent(t, cfg, cp, rt)
}

func TestSimAgentStartsRestartsAdoptsAndRemoves(t *testing.T) {
	rt := simrt.New(simrt.Config{StartDelay: 5 * time.Millisecond})
	web := instance("web", reconcile.Always)
	batch := instance("batch", reconcile.Never)
	cp := newControlPlane(web, batch)
	f := startSim(t, agent.Config{}, rt, cp)

	run := f.waitStatus("web", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	f.waitStatus("batch", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })

	// A crash of an Always instance brings up attempt 1 in a new container;
	// a Never one that exits non-zero is Failed, not restarted.
	if err := rt.Exit(run.ContainerID, 1); err != nil {
		t.Fatal(err)
	}
	healed := f.waitStatus("web", "a restart", func(s agent.Status) bool { return s.Phase == api.PhaseRunning && s.Restarts == 1 })
	if healed.ContainerID == run.ContainerID {
		t.Errorf("restart reused container %s", run.ContainerID)
	}
	b, _ := f.cp.last("batch")
	if err := rt.Exit(b.ContainerID, 3); err != nil {
		t.Fatal(err)
	}
	failed := f.waitStatus("batch", "Failed", func(s agent.Status) bool { return s.Phase == api.PhaseFailed })
	if failed.ExitCode != 3 || failed.Restarts != 0 {
		t.Errorf("batch: exit %d restarts %d, want exit 3 and no restart", failed.ExitCode, failed.Restarts)
	}

	// A new agent over the same runtime adopts the running container.
	f.stop()
	cp.mu.Lock()
	clear(cp.statuses)
	cp.mu.Unlock()
	f = startSim(t, agent.Config{}, rt, cp)
	again := f.waitStatus("web", "Running after the agent restarted", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	if again.ContainerID != healed.ContainerID {
		t.Errorf("after an agent restart web runs as %s, want the adopted %s", again.ContainerID, healed.ContainerID)
	}

	// Unassigned: its containers (both attempts) are stopped and removed.
	cp.assign <- []agent.Assignment{{Deleted: web.UID}}
	deadline := time.Now().Add(10 * time.Second)
	for f.containersOf(web.UID) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d containers of an unassigned instance left", f.containersOf(web.UID))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if f.containersOf(batch.UID) != 1 {
		t.Errorf("batch has %d containers, want its one exited container kept", f.containersOf(batch.UID))
	}
}

func TestSimAgentReportsStartFailures(t *testing.T) {
	rt := simrt.New(simrt.Config{FailRate: 1})
	once := instance("once", reconcile.Never)
	always := instance("always", reconcile.Always)
	f := startSim(t, agent.Config{}, rt, newControlPlane(once, always))

	st := f.waitStatus("once", "Failed", func(s agent.Status) bool { return s.Phase == api.PhaseFailed })
	if st.Reason != "StartError" {
		t.Errorf("once: reason %q, want StartError", st.Reason)
	}
	// One that restarts stays Starting, with when it tries next.
	st = f.waitStatus("always", "a start error", func(s agent.Status) bool { return s.Reason == "StartError" })
	if st.Phase != api.PhaseStarting || st.RestartAt.IsZero() {
		t.Errorf("always: phase %s restartAt %v, want Starting with a retry time", st.Phase, st.RestartAt)
	}
	if n := f.containersOf(always.UID); n != 0 {
		t.Errorf("%d containers after failed starts, want none", n)
	}
}
