package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// turnedAway is a control plane that refuses the node's registration
// with err, fails times over, then takes it.
type turnedAway struct {
	mu       sync.Mutex
	err      error
	fails    int
	tries    int
	watching chan struct{}
}

func (c *turnedAway) RegisterNode(context.Context, agent.NodeInfo) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.tries++
	if c.tries <= c.fails {
		return c.err
	}
	return nil
}
func (c *turnedAway) Heartbeat(context.Context, string) error { return nil }
func (c *turnedAway) WatchAssigned(ctx context.Context, _ string, ch chan<- []agent.Assignment) error {
	select {
	case c.watching <- struct{}{}:
	default:
	}
	ch <- []agent.Assignment{agent.Resync}
	<-ctx.Done()
	return ctx.Err()
}
func (c *turnedAway) ReportStatus(context.Context, string, string, string, agent.Status) error {
	return nil
}

// A control plane too busy to register the node (its etcd timing out
// under a fleet's joins) has the agent try again until it can; a refusal
// of another kind ends the agent at once.
func TestAgentRegistersAgainWhileTheControlPlaneIsUnavailable(t *testing.T) {
	registered := make(chan string, 2)
	run := func(cp *turnedAway) (chan error, context.CancelFunc) {
		ctx, cancel := context.WithCancel(t.Context())
		a := agent.New(agent.Config{Node: agent.NodeInfo{Name: "hollow"}, ControlPlane: cp, Runtime: simrt.New(simrt.Config{}),
			Images: simrt.Images{}, Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: time.Hour, Resync: time.Hour,
			Registered: func(node string) { registered <- node }})
		done := make(chan error, 1)
		go func() { done <- a.Run(ctx) }()
		return done, cancel
	}

	busy := &turnedAway{err: fmt.Errorf("write node: %w: etcdserver: request timed out", errdefs.ErrUnavailable), fails: 3, watching: make(chan struct{}, 1)}
	done, cancel := run(busy)
	defer cancel()
	select {
	case <-busy.watching:
	case err := <-done:
		t.Fatalf("agent ended while the control plane was busy: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("agent not registered 10s after the control plane could take it")
	}
	busy.mu.Lock()
	tries := busy.tries
	busy.mu.Unlock()
	if tries != 4 {
		t.Errorf("%d registrations, want 4 (3 turned away, then one taken)", tries)
	}
	// Registered says so once, when the registration is taken.
	if got := <-registered; got != "hollow" || len(registered) != 0 {
		t.Errorf("Registered called for %q (and %d more times), want once for hollow", got, len(registered))
	}
	cancel()
	<-done

	refused := &turnedAway{err: fmt.Errorf("node cert: %w", errdefs.ErrUnauthorized), fails: 1 << 30, watching: make(chan struct{}, 1)}
	done2, cancel2 := run(refused)
	defer cancel2()
	select {
	case err := <-done2:
		if !errdefs.IsUnauthorized(err) {
			t.Fatalf("agent refused ended with %v, want the refusal", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("agent refused for a bad certificate still trying after 10s")
	}
	refused.mu.Lock()
	defer refused.mu.Unlock()
	if refused.tries != 1 {
		t.Errorf("%d registrations after a refusal, want 1", refused.tries)
	}
	if len(registered) != 0 {
		t.Error("Registered called for a node whose registration was refused")
	}
}
