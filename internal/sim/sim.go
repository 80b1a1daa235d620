// Package sim runs hollow agents: the real node agent (join, node
// certificate, API client, assignment watch, reconcile loop, heartbeats,
// status writes) over a simulated runtime, many to a process, to load a
// control plane as that many machines would.
//
// Each hollow agent joins on its own and holds its own node certificate
// and its own transport, hence its own TLS connection: a real node
// multiplexes its watch, heartbeats and status writes over one HTTP/2
// connection of its own, and the server's per-connection and
// per-identity costs (handshakes, authorization by node name, one watch
// per node) are part of what a fleet measures. A transport shared by all
// would fold thousands of nodes onto a few connections and measure less.
package sim

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"

	"github.com/berth-dev/berth/internal/agent/simrt"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/server"
)

// Config describes a fleet of hollow nodes.
type Config struct {
	// Count is how many nodes; Prefix names them Prefix-00000 on.
	Count  int
	Prefix string
	// Servers, CAFile, CAPin and JoinToken are as for berth agent,
	// except that node i starts on Servers[i mod len(Servers)] and moves
	// on from there: a fleet spreads over the servers, as agents each
	// given the servers in another order would, rather than all on the
	// first.
	Servers   []string
	CAFile    string
	CAPin     string
	JoinToken string
	// DataDir holds each node's credentials, in DataDir/NAME.
	DataDir string
	// Runtime shapes every node's simulated runtime.
	Runtime simrt.Config
	// Capacity is what every node reports.
	Capacity hostinfo.Capacity
	// Joining bounds the nodes joining at once (default 32).
	Joining int
	Logger  *slog.Logger
}

// Fleet is a running set of hollow nodes.
type Fleet struct {
	cfg   Config
	mu    sync.Mutex
	nodes []*node
	ready chan string
	wg    sync.WaitGroup
}

type node struct {
	name   string
	cancel context.CancelFunc
	err    error
	done   chan struct{}
}

// Start joins the fleet's nodes in the background, Joining at a time;
// Ready tells when each has registered.
func Start(ctx context.Context, cfg Config) (*Fleet, error) {
	if cfg.Count <= 0 {
		return nil, fmt.Errorf("hollow nodes: count %d: must be at least 1", cfg.Count)
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "hollow"
	}
	if cfg.Joining <= 0 {
		cfg.Joining = 32
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Capacity == (hostinfo.Capacity{}) {
		// A typical hypervisor: 32 cores, 128 GiB.
		cfg.Capacity = hostinfo.Capacity{MilliCPU: 32000, MemoryBytes: 128 << 30, Pids: 100000}
	}
	f := &Fleet{cfg: cfg, ready: make(chan string, cfg.Count)}
	sem := make(chan struct{}, cfg.Joining)
	f.wg.Go(func() {
		for i := range cfg.Count {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return
			}
			name := fmt.Sprintf("%s-%05d", cfg.Prefix, i)
			nctx, cancel := context.WithCancel(ctx)
			n := &node{name: name, cancel: cancel, done: make(chan struct{})}
			f.mu.Lock()
			f.nodes = append(f.nodes, n)
			f.mu.Unlock()
			var once sync.Once
			release := func() { once.Do(func() { <-sem }) }
			f.wg.Go(func() {
				defer close(n.done)
				defer release()
				n.err = server.Agent(nctx, f.agentConfig(i, name, func(string) {
					release()
					f.ready <- name
				}))
				if n.err != nil && nctx.Err() == nil {
					cfg.Logger.Error("hollow node ended", "node", name, "err", n.err)
				}
			})
		}
	})
	return f, nil
}

func (f *Fleet) agentConfig(i int, name string, ready func(string)) server.AgentConfig {
	info := hostinfo.Info{Capacity: f.cfg.Capacity}
	k := i % max(1, len(f.cfg.Servers))
	servers := append(slices.Clone(f.cfg.Servers[k:]), f.cfg.Servers[:k]...)
	return server.AgentConfig{
		DataDir: filepath.Join(f.cfg.DataDir, name), Servers: servers, CAFile: f.cfg.CAFile, CAPin: f.cfg.CAPin,
		JoinToken: f.cfg.JoinToken, NodeName: name, Address: "127.0.0.1", ServersInOrder: true,
		Network: server.Network{Disabled: true}, Logger: f.cfg.Logger, Ready: ready,
		Runtime: simrt.New(f.cfg.Runtime), Images: simrt.Images{}, Info: &info, NoTunnels: true, UnsyncedCredentials: true,
	}
}

// Ready sends each node's name once it has registered.
func (f *Fleet) Ready() <-chan string { return f.ready }

// WaitReady waits until every node has registered, or ctx ends.
func (f *Fleet) WaitReady(ctx context.Context) error {
	for n := 0; n < f.cfg.Count; n++ {
		select {
		case <-f.ready:
		case <-ctx.Done():
			return fmt.Errorf("hollow nodes: %d of %d registered: %w", n, f.cfg.Count, ctx.Err())
		}
	}
	return nil
}

// Kill stops node i at once, as a machine that dies: no goodbye, its
// heartbeats just stop.
func (f *Fleet) Kill(i int) string {
	f.mu.Lock()
	n := f.nodes[i]
	f.mu.Unlock()
	n.cancel()
	<-n.done
	return n.name
}

// Wait returns once every node has stopped (its context ended).
func (f *Fleet) Wait() { f.wg.Wait() }

// Stopped reports the nodes that ended on their own, with why.
func (f *Fleet) Stopped() map[string]error {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]error{}
	for _, n := range f.nodes {
		select {
		case <-n.done:
			if n.err != nil {
				out[n.name] = n.err
			}
		default:
		}
	}
	return out
}
