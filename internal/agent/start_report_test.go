package agent_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// A container that starts quickly costs its instance one status report,
// Running, not Starting and then Running: each report is a write the
// server decodes, stores and sends every watcher, and at 300,000
// instances a second one per start was a good part of what an apply
// cost the server.
func TestQuickStartIsOneReport(t *testing.T) {
	rt := simrt.New(simrt.Config{StartDelay: 20 * time.Millisecond})
	cp := newControlPlane()
	f := startSim(t, agent.Config{}, rt, cp)
	cp.assign <- []agent.Assignment{{Instance: instance("web", reconcile.Always)}}
	f.waitStatus("web", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	// Another instance's start is a later pass, which would report web
	// again were it to.
	cp.assign <- []agent.Assignment{{Instance: instance("api", reconcile.Always)}}
	f.waitStatus("api", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if got := cp.statuses["web"]; len(got) != 1 {
		t.Fatalf("%d reports for one quick start, want 1 (Running): %+v", len(got), got)
	}
}
