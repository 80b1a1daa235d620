package agent_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/simrt"
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

// flaky fails the heartbeats it is told to, one at a time.
type flaky struct {
	cutOff
	failNext chan struct{}
	ok       atomic.Int64 // heartbeats that got through
}

func (f *flaky) Heartbeat(ctx context.Context, node string) error {
	select {
	case <-f.failNext:
		f.mu.Lock()
		f.failed++
		f.mu.Unlock()
		return context.DeadlineExceeded
	default:
		f.ok.Add(1)
		return nil
	}
}

// One heartbeat that a busy server answers too late is no broken link:
// the watch goes on; it starts over only after heartbeats failed in a row.
func TestOneSlowHeartbeatKeepsTheWatch(t *testing.T) {
	cp := &flaky{cutOff: cutOff{watching: make(chan int, 8)}, failNext: make(chan struct{}, 4)}
	ctx, cancel := context.WithCancel(context.Background())
	a := agent.New(agent.Config{Node: agent.NodeInfo{Name: "n1"}, ControlPlane: cp, Runtime: simrt.New(simrt.Config{}), Images: simrt.Images{},
		Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: 10 * time.Millisecond, Resync: time.Hour})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	if n := <-cp.watching; n != 1 {
		t.Fatalf("first watch numbered %d", n)
	}
	for i := 1; i <= 3; i++ {
		cp.failNext <- struct{}{}
		// Wait until it was taken and a good heartbeat followed.
		deadline := time.Now().Add(5 * time.Second)
		for len(cp.failNext) > 0 || cp.failures() < i {
			if time.Now().After(deadline) {
				t.Fatal("heartbeat not taken")
			}
			time.Sleep(time.Millisecond)
		}
		for good := cp.ok.Load(); cp.ok.Load() < good+3; { // a few good ones after it
			if time.Now().After(deadline) {
				t.Fatal("no good heartbeats after the failed one")
			}
			time.Sleep(time.Millisecond)
		}
	}
	select {
	case n := <-cp.watching:
		t.Fatalf("watch %d started after single failed heartbeats", n)
	default:
	}
	// Two in a row, then one that gets through: the watch starts over.
	cp.failNext <- struct{}{}
	cp.failNext <- struct{}{}
	select {
	case n := <-cp.watching:
		if n != 2 {
			t.Errorf("watch number %d, want 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no new watch after two failed heartbeats in a row")
	}
}
