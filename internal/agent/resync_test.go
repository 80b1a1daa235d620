package agent_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/agent/simrt"
	"github.com/berth-dev/berth/internal/runtime"
)

// countingRuntime counts the reads a resync makes: whole lists, single
// states, and listings of names (one each resync, timed).
type countingRuntime struct {
	*simrt.Runtime
	lists, states atomic.Int64
	ids           calls
}

func (c *countingRuntime) List(ctx context.Context) ([]runtime.Status, error) {
	c.lists.Add(1)
	return c.Runtime.List(ctx)
}

func (c *countingRuntime) State(ctx context.Context, id string) (runtime.Status, error) {
	c.states.Add(1)
	return c.Runtime.State(ctx, id)
}

func (c *countingRuntime) IDs() ([]string, error) {
	c.ids.add()
	list, err := c.Runtime.List(context.Background())
	out := make([]string, len(list))
	for i, st := range list {
		out[i] = st.ID
	}
	return out, err
}

// A resync re-reads only what its watchers do not follow: running
// containers whose exit watchers wait are taken from the cache, while a
// container that exits is read again and restarted.
func TestResyncReadsOnlyUnwatchedContainers(t *testing.T) {
	rt := &countingRuntime{Runtime: simrt.New(simrt.Config{})}
	var insts []*agent.Instance
	for i := range 20 {
		insts = append(insts, instance(fmt.Sprintf("web-%d", i), reconcile.Always))
	}
	f := startSim(t, agent.Config{Runtime: rt, Resync: 20 * time.Millisecond, IdleResync: 20 * time.Millisecond}, rt.Runtime, newControlPlane(insts...))
	var first agent.Status
	for i := range insts {
		st := f.waitStatus(insts[i].Name, "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
		if i == 0 {
			first = st
		}
	}

	// Ten resyncs with nothing changed read no container's state.
	states := rt.states.Load()
	rt.ids.wait(t, rt.ids.n()+10, 10*time.Second, "idle resyncs")
	if got := rt.states.Load() - states; got != 0 {
		t.Errorf("%d container states read over 10 idle resyncs, want 0", got)
	}
	if rt.lists.Load() > 1 {
		t.Errorf("%d whole lists, want only the first", rt.lists.Load())
	}

	// An exit is still seen, read and acted on.
	if err := rt.Exit(first.ContainerID, 1); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(insts[0].Name, "restarted", func(s agent.Status) bool { return s.Phase == api.PhaseRunning && s.Restarts == 1 })
}

// A quiet node resyncs ever less often, down to once an IdleResync,
// and a container the runtime has without the agent having been told
// (an event missed) is still found by a resync and removed in that time.
func TestResyncBacksOffWhileQuiet(t *testing.T) {
	const base, most = 20 * time.Millisecond, 200 * time.Millisecond
	rt := &countingRuntime{Runtime: simrt.New(simrt.Config{})}
	var insts []*agent.Instance
	for i := range 5 {
		insts = append(insts, instance(fmt.Sprintf("web-%d", i), reconcile.Always))
	}
	f := startSim(t, agent.Config{Runtime: rt, Resync: base, IdleResync: most}, rt.Runtime, newControlPlane(insts...))
	for _, in := range insts {
		f.waitStatus(in.Name, "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	}

	// Five quiet resyncs take the wait from base up to most (20, 40, 80,
	// 160, 200 ms); from then on they come one each 200 ms at most, where
	// the pace of a change would be ten times that.
	settled := rt.ids.n() + 5
	rt.ids.spacedAtLeast(t, settled, 10, most, "resyncs while quiet")

	// A container of an instance the node does not have, made behind the
	// agent's back: no event says so, the next resync finds it.
	if _, err := rt.Run(context.Background(), runtime.Config{ID: "stray", Labels: map[string]string{"berth.uid": "gone", "berth.instance": "default/gone"}}); err != nil {
		t.Fatal(err)
	}
	made := time.Now()
	deadline := made.Add(5 * time.Second)
	for {
		if _, err := rt.State(context.Background(), "stray"); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the stray container is still there after 5 s of resyncs each %v at most", most)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("the stray container removed %v after it was made", time.Since(made).Round(time.Millisecond))
}

// slowPlane answers each status report only once several are in flight
// at once (or after a second): reports sent one by one take a second each.
type slowPlane struct {
	*controlPlane
	inflight, most atomic.Int64
}

func (s *slowPlane) ReportStatus(ctx context.Context, ns, name, uid string, st agent.Status) error {
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
	}
	deadline := time.Now().Add(time.Second)
	for s.most.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	return s.controlPlane.ReportStatus(ctx, ns, name, uid, st)
}

// An agent starting many instances reports their status several at a
// time, not one round trip after another with its loop held.
func TestStatusReportsGoInParallel(t *testing.T) {
	var insts []*agent.Instance
	for i := range 16 {
		insts = append(insts, instance(fmt.Sprintf("web-%d", i), reconcile.Always))
	}
	cp := &slowPlane{controlPlane: newControlPlane(insts...)}
	f := startSim(t, agent.Config{ControlPlane: cp, Resync: time.Hour}, simrt.New(simrt.Config{}), cp.controlPlane)
	for _, in := range insts {
		f.waitStatus(in.Name, "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	}
	if m := cp.most.Load(); m < 4 {
		t.Fatalf("at most %d status reports in flight at once, want several", m)
	}
}

// slowFailing fails the starts of the instances named bad, each after a
// tenth of a second.
type slowFailing struct {
	*simrt.Runtime
	bad      map[string]bool // by UID
	attempts atomic.Int64    // starts of bad ones
}

func (s *slowFailing) Run(ctx context.Context, c runtime.Config) (runtime.Status, error) {
	if s.bad[c.Labels["berth.uid"]] {
		s.attempts.Add(1)
		time.Sleep(100 * time.Millisecond)
		return runtime.Status{}, fmt.Errorf("start %s: no such command", c.ID)
	}
	return s.Runtime.Run(ctx, c)
}

// A burst of removals is taken in one pass: an agent busy failing to
// start forty instances, told one by one that they are gone, gets to a
// new instance at once rather than after a slow pass per removal.
func TestBurstOfChangesTakenInOnePass(t *testing.T) {
	rt := &slowFailing{Runtime: simrt.New(simrt.Config{}), bad: map[string]bool{}}
	var bad []*agent.Instance
	for i := range 40 {
		in := instance(fmt.Sprintf("bad-%d", i), reconcile.Always)
		rt.bad[in.UID] = true
		bad = append(bad, in)
	}
	cp := newControlPlane(bad...)
	f := startSim(t, agent.Config{Runtime: rt, Resync: time.Hour}, rt.Runtime, cp)
	f.waitStatus("bad-39", "a start error", func(s agent.Status) bool { return s.Reason == "StartError" })
	for _, in := range bad {
		cp.assign <- []agent.Assignment{{Deleted: in.UID}}
	}
	good := instance("good", reconcile.Always)
	cp.assign <- []agent.Assignment{{Instance: good}}
	f.waitStatus("good", "Running", func(s agent.Status) bool { return s.Phase == api.PhaseRunning })
	// The first pass tried each once; one more pass may have begun before
	// the removals came. A pass per removal tries them again and again.
	if n := rt.attempts.Load(); n > 2*int64(len(bad)) {
		t.Errorf("%d starts of %d removed instances, want at most two passes' worth", n, len(bad))
	}
}
