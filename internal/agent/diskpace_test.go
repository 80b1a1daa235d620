package agent_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// rootCounting counts the disk checks: each reads the free space of the
// runtime's root once.
type rootCounting struct {
	*simrt.Runtime
	roots atomic.Int64
}

func (r *rootCounting) Root() string {
	r.roots.Add(1)
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
	checks := func(over time.Duration) int64 {
		n := rt.roots.Load()
		time.Sleep(over)
		return rt.roots.Load() - n
	}
	time.Sleep(time.Second) // the back-off reaches most
	if n := checks(2 * time.Second); n > 12 || n == 0 {
		t.Errorf("%d disk checks in 2 s with no limit, want 1 to 12 (one each %v)", n, most)
	}

	limited := instance("capped", reconcile.Always)
	limited.DiskBytes = 1 << 20
	cp.assign <- []agent.Assignment{{Instance: limited}}
	f.waitStatus("capped", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	if n := checks(time.Second); n < 20 {
		t.Errorf("%d disk checks in 1 s with a limit assigned, want one each %v (50)", n, base)
	}
}
