package agent_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/agent/simrt"
)

// paced is a control plane that asks for heartbeats at its own pace.
type paced struct {
	flaky
	every time.Duration
}

func (p *paced) HeartbeatInterval() time.Duration { return p.every }

// The server sets the heartbeats' pace (a third of its node TTL): an
// agent configured to beat hourly beats as often as the server asks
// once it has said.
func TestHeartbeatsFollowTheServersPace(t *testing.T) {
	cp := &paced{flaky: flaky{cutOff: cutOff{watching: make(chan int, 8)}, failNext: make(chan struct{}, 1)}, every: 10 * time.Millisecond}
	ctx, cancel := context.WithCancel(context.Background())
	a := agent.New(agent.Config{Node: agent.NodeInfo{Name: "n1"}, ControlPlane: cp, Runtime: simrt.New(simrt.Config{}), Images: simrt.Images{},
		Logger: slog.New(slog.DiscardHandler), HeartbeatInterval: time.Hour, Resync: time.Hour})
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	// The pace is bounded below (500 ms): five beats take two seconds.
	deadline := time.Now().Add(10 * time.Second)
	for cp.ok.Load() < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("%d heartbeats in 10s; want the server's pace, not the agent's hourly one", cp.ok.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
