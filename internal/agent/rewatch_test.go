package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// cutOff is a control plane behind a link that can go down: heartbeats
// fail while it is down, and its watch streams never say anything after
// the first list, like a connection that died without a reset.
type cutOff struct {
	mu       sync.Mutex
	down     bool
	failed   int
	watches  int
	watching chan int
}

func (c *cutOff) RegisterNode(context.Context, agent.NodeInfo) error { return nil }
func (c *cutOff) Heartbeat(context.Context, string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down {
		c.failed++
		return errors.New("no route to host")
	}
	return nil
}
func (c *cutOff) WatchAssigned(ctx context.Context, _ string, ch chan<- []agent.Assignment) error {
	c.mu.Lock()
	c.watches++
	n := c.watches
	c.mu.Unlock()
	c.watching <- n
	ch <- []agent.Assignment{agent.Resync}
	<-ctx.Done()
	return ctx.Err()
}
func (c *cutOff) ReportStatus(context.Context, string, string, string, agent.Status) error {
	return nil
}

func (c *cutOff) set(down bool) {
	c.mu.Lock()
	c.down = down
	c.mu.Unlock()
}

func (c *cutOff) failures() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failed
}

// A node cut off from the control plane and back again must not wait for
// its silent watch stream to time out: once heartbeats get through again,
// the watch starts over.
func TestWatchStartsOverWhenHeartbeatsReturn(t *testing.T) {
	runtimetest.RequireRoot(t)
	rt, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cp := &cutOff{watching: make(chan int, 8)}
	ctx, cancel := context.WithCancel(context.Background())
	a := agent.New(agent.Config{Node: agent.NodeInfo{Name: "n1"}, ControlPlane: cp, Runtime: rt, Images: dirImages{t.TempDir()},
		Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: 20 * time.Millisecond, Resync: time.Hour})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	wait := func(what string) int {
		t.Helper()
		select {
		case n := <-cp.watching:
			return n
		case <-time.After(5 * time.Second):
			t.Fatalf("no %s within 5s", what)
			return 0
		}
	}
	wait("first watch")
	cp.set(true)
	deadline := time.Now().Add(5 * time.Second)
	for cp.failures() < 2 {
		if time.Now().After(deadline) {
			t.Fatal("heartbeats never failed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case n := <-cp.watching:
		t.Fatalf("watch %d started while heartbeats still fail", n)
	default:
	}
	cp.set(false)
	if n := wait("new watch after heartbeats came back"); n != 2 {
		t.Errorf("watch number %d, want 2", n)
	}
}
