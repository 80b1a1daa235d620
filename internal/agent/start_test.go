package agent_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/reconcile"
	"github.com/berth-dev/berth/internal/runtime"
)

// subnetPlane is a control plane that also hands out the node's pod subnet.
type subnetPlane struct{ *controlPlane }

func (subnetPlane) PodSubnet(context.Context, string) (string, error) { return "10.88.0.0/24", nil }

// startSteps fakes both the images and the network of an agent, records
// what the agent asks of them, and fails Prepare or Attach when told to.
// Each of the two waits (a while) for the other to have begun, so they
// only both get on at once when they run concurrently.
type startSteps struct {
	prepErr, attErr error

	prepBegan, attBegan        chan struct{}
	prepOnce, attOnce          sync.Once
	mu                         sync.Mutex
	prepared, released         []string
	attached, detached         []string
	prepOverlap, attachOverlap bool
}

func newStartSteps() *startSteps {
	return &startSteps{prepBegan: make(chan struct{}), attBegan: make(chan struct{})}
}

// meet says it began and waits for the other step to begin.
func meet(once *sync.Once, mine, theirs chan struct{}) bool {
	once.Do(func() { close(mine) })
	select {
	case <-theirs:
		return true
	case <-time.After(5 * time.Second):
		return false
	}
}

func (s *startSteps) Prepare(_ context.Context, _, id string) (agent.Rootfs, error) {
	met := meet(&s.prepOnce, s.prepBegan, s.attBegan)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.prepared = append(s.prepared, id)
	s.prepOverlap = met
	return agent.Rootfs{LowerDirs: []string{"/nonexistent"}}, s.prepErr
}

func (s *startSteps) Release(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released = append(s.released, id)
	return nil
}

func (s *startSteps) Attach(_ context.Context, id, _ string) (agent.NetAttachment, error) {
	met := meet(&s.attOnce, s.attBegan, s.prepBegan)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attached = append(s.attached, id)
	s.attachOverlap = met
	if s.attErr != nil {
		return agent.NetAttachment{}, s.attErr
	}
	return agent.NetAttachment{NetNS: "/nonexistent", IP: netip.MustParseAddr("10.88.0.2")}, nil
}

func (s *startSteps) Detach(_ context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.detached = append(s.detached, id)
	return nil
}

func (s *startSteps) ReleaseStale(context.Context, []string) error { return nil }

// stepsAgent runs an agent whose images and network are steps, with inst
// assigned, until the test ends.
func stepsAgent(t *testing.T, steps interface {
	agent.Images
	agent.Network
}, inst *agent.Instance) *fixture {
	t.Helper()
	rt, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cp := newControlPlane(inst)
	return runAgent(t, agent.Config{
		Node: agent.NodeInfo{Name: "n1"}, ControlPlane: subnetPlane{cp}, Runtime: rt, Images: steps,
		Logger: slog.New(slog.DiscardHandler), Resync: time.Hour,
		Network: func(context.Context, netip.Prefix) (agent.Network, error) { return steps, nil },
	}, cp, rt)
}

// runWithSteps runs stepsAgent until inst is reported Failed and returns
// that status.
func runWithSteps(t *testing.T, steps interface {
	agent.Images
	agent.Network
}, inst *agent.Instance) agent.Status {
	t.Helper()
	f := stepsAgent(t, steps, inst)
	defer f.stop()
	return f.waitStatus(inst.Name, "Failed", func(s agent.Status) bool { return s.Phase == api.PhaseFailed })
}

func (s *startSteps) check(t *testing.T, st agent.Status, wantMsg string, released, detached bool) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.prepared) != 1 || len(s.attached) != 1 || s.prepared[0] != s.attached[0] {
		t.Fatalf("prepared %v and attached %v, want one container each, the same", s.prepared, s.attached)
	}
	id := s.prepared[0]
	if !s.prepOverlap || !s.attachOverlap {
		t.Errorf("prepare and attach did not run at the same time (prepare saw attach: %v, attach saw prepare: %v)", s.prepOverlap, s.attachOverlap)
	}
	if st.Reason != "StartError" || !strings.Contains(st.Message, id) || !strings.Contains(st.Message, wantMsg) {
		t.Errorf("status %q: %q, want StartError naming %s and saying %q", st.Reason, st.Message, id, wantMsg)
	}
	if got := slices.Contains(s.released, id); got != released {
		t.Errorf("image of %s released: %v, want %v (released %v)", id, got, released, s.released)
	}
	if got := slices.Contains(s.detached, id); got != detached {
		t.Errorf("network of %s detached: %v, want %v (detached %v)", id, got, detached, s.detached)
	}
}

func TestStartAttachFailureReleasesImage(t *testing.T) {
	steps := newStartSteps()
	steps.attErr = errors.New("no address left")
	st := runWithSteps(t, steps, instance("web", reconcile.Never, "true"))
	steps.check(t, st, "no address left", true, false)
}

func TestStartPrepareFailureDetaches(t *testing.T) {
	steps := newStartSteps()
	steps.prepErr = errors.New("no such image")
	st := runWithSteps(t, steps, instance("web", reconcile.Never, "true"))
	steps.check(t, st, "no such image", false, true)
}

func TestStartBothFailReportsBoth(t *testing.T) {
	steps := newStartSteps()
	steps.prepErr, steps.attErr = errors.New("no such image"), errors.New("no address left")
	st := runWithSteps(t, steps, instance("web", reconcile.Never, "true"))
	steps.check(t, st, "no such image", false, false)
	if !strings.Contains(st.Message, "no address left") {
		t.Errorf("message %q does not name the network failure", st.Message)
	}
}

// stagedSteps is startSteps with a staged network: Reserve answers at
// once and wire, which the runtime runs while it readies the container,
// fails when told to.
type stagedSteps struct {
	*startSteps
	wireErr error
	wired   int
}

func (s *stagedSteps) Reserve(_ context.Context, id, _ string) (agent.NetAttachment, func() error, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attached = append(s.attached, id)
	return agent.NetAttachment{NetNS: "/nonexistent", IP: netip.MustParseAddr("10.88.0.2")}, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.wired++
		return s.wireErr
	}, nil
}

// A staged network's wiring that fails fails the start: the reason and the
// container are in the status, the image is released and the network
// detached, and wire ran once.
func TestStartStagedWireFailure(t *testing.T) {
	steps := &stagedSteps{startSteps: newStartSteps(), wireErr: errors.New("veth refused")}
	close(steps.attBegan) // Reserve does not wait for Prepare
	st := runWithSteps(t, steps, instance("web", reconcile.Never, "true"))
	steps.mu.Lock()
	defer steps.mu.Unlock()
	if len(steps.attached) != 1 || steps.wired != 1 {
		t.Fatalf("reserved %v, wired %d times; want one container, wired once", steps.attached, steps.wired)
	}
	id := steps.attached[0]
	if st.Reason != "StartError" || !strings.Contains(st.Message, id) || !strings.Contains(st.Message, "veth refused") {
		t.Errorf("status %q: %q, want StartError naming %s and saying veth refused", st.Reason, st.Message, id)
	}
	if !slices.Contains(steps.released, id) || !slices.Contains(steps.detached, id) {
		t.Errorf("released %v, detached %v; want %s in both", steps.released, steps.detached, id)
	}
}

// A start whose image cannot be had for a while (the servers out of
// reach) says it backs off, StartBackOff, and one whose image does not
// exist says StartError: berth run keeps a service in the first case and
// removes it in the second.
func TestStartFailureReasons(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("pull demo/app:1 from https://s1:7443: %w: %w", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, errdefs.ErrUnavailable), api.ReasonStartBackOff},
		{fmt.Errorf("pull demo/app:1: %w", context.DeadlineExceeded), api.ReasonStartBackOff},
		{fmt.Errorf("pull demo/app:1 from https://s1:7443: %w", errdefs.ErrNotFound), api.ReasonStartError},
		{errors.New("no such image"), api.ReasonStartError},
	} {
		steps := newStartSteps()
		steps.prepErr = c.err
		inst := instance("web", reconcile.Always, "true")
		f := stepsAgent(t, steps, inst)
		st := f.waitStatus(inst.Name, "a failed start", func(s agent.Status) bool { return s.Reason != "" })
		f.stop()
		if st.Reason != c.want || st.Phase != api.PhaseStarting || st.RestartAt.IsZero() {
			t.Errorf("start failing with %q: %s %s (retry at %v), want %s, Starting, a retry", c.err, st.Phase, st.Reason, st.RestartAt, c.want)
		}
	}
}
