package agent_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// rootCounting times the disk checks: each reads the free space of the
// runtime's root once.
type rootCounting struct {
	*simrt.Runtime
	roots calls
}

func (r *rootCounting) Root() string {
	r.roots.add()
	return r.Runtime.Root()
}

// With no disk limit assigned and the free space far above the reserve,
// disk checks slow down to one each DiskIdleInterval; an instance with a
// limit brings them back to each DiskInterval at once, so that its limit
// is enforced as fast as before.
func TestDiskChecksSlowDownWhileQuiet(t *testing.T) {
	const base, most = 20 * time.Millisecond, 200 * time.Millisecond
	rt := &rootCounting{Runtime: simrt.New(simrt.Config{})}
	cp := newControlPlane(instance("web", reconcile.Always))
	// A reserve of one byte: "/" has far more than 200 ms of writes free.
	f := startSim(t, agent.Config{Runtime: rt, Resync: time.Hour, DiskReserve: agent.DiskReserve{Bytes: 1},
		DiskInterval: base, DiskIdleInterval: most}, rt.Runtime, cp)
	f.waitStatus("web", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	// Five quiet checks take the wait up to most (20, 40, 80, 160, 200 ms).
	settled := rt.roots.n() + 5
	rt.roots.spacedAtLeast(t, settled, 10, most, "disk checks with no limit")

	limited := instance("capped", reconcile.Always)
	limited.DiskBytes = 1 << 20
	cp.assign <- []agent.Assignment{{Instance: limited}}
	f.waitStatus("capped", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	// Over 50 of the test's own ticks of base, the idle pace would check
	// 6 times at most; the pace of a limit, about once a tick.
	if n := rt.roots.countOverTicks(50, base); n < 15 {
		t.Errorf("%d disk checks over 50 ticks of %v with a limit assigned, want about one a tick (15 at least)", n, base)
	}
}
