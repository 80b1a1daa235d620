package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/runtime"
)

// node is what `berth up` and `berth agent` both run: a node agent over
// the API, its container runtime and the tunnels the API servers reach it
// by for remote operations (exec, logs).
type node struct {
	Name, Address string
	Labels        map[string]string
	DataDir       string
	Client        *client.Client
	Network       Network
	DiskReserve   agent.DiskReserve
	// AllowedHostPaths, when set, are the only host directories a
	// hostPath volume may mount on this node.
	AllowedHostPaths []string
	// Runtime and Info are opened by open when nil; Images is the
	// caller's.
	Runtime            agent.Runtime
	Images             agent.Images
	Info               *hostinfo.Info
	CgroupFavorDynMods bool
	CgroupDriver       string
	Log                *slog.Logger
	// Beat, when set, is how the agent heartbeats instead of a request
	// to the API: berth up's node beats in its own API server's process.
	Beat func(ctx context.Context, node string, now time.Time) error
	// Registered, when set, is called once the node has registered.
	Registered func(node string)
	// PeerTLS is the node's TLS towards other nodes' agents (agent.Config).
	PeerTLS *tls.Config
}

// open makes what the node was not given: the container runtime (after
// setting favordynmods when asked) and what it reads of its hardware.
func (n *node) open() error {
	if n.CgroupFavorDynMods {
		favorDynMods(n.Log)
	}
	if n.Runtime == nil {
		rt, err := runtime.New(filepath.Join(n.DataDir, "containers"), runtime.WithCgroupDriver(n.CgroupDriver))
		if err != nil {
			return err
		}
		n.Runtime = rt
	}
	if n.Info == nil {
		info, err := hostinfo.Read()
		if err != nil {
			return fmt.Errorf("read host capacity: %w", err)
		}
		n.Info = &info
	}
	return nil
}

// agent is the node's agent.
func (n *node) agent() *agent.Agent {
	return agent.New(agent.Config{
		Node:             agent.NodeInfo{Name: n.Name, Address: n.Address, Labels: n.Labels, Info: *n.Info},
		ControlPlane:     n.controlPlane(),
		Runtime:          n.Runtime,
		Images:           n.Images,
		Logger:           n.Log,
		Network:          n.Network.agentNetwork(n.Client, n.Name, n.DataDir, n.Log),
		DiskReserve:      n.DiskReserve,
		VolumesDir:       filepath.Join(n.DataDir, "volumes"),
		DataDir:          filepath.Join(n.DataDir, "data"),
		AllowedHostPaths: n.AllowedHostPaths,
		Registered:       n.Registered,
		PeerTLS:          n.PeerTLS,
	})
}

// controlPlane is the agent's way to the API, its heartbeats through
// Beat when set.
func (n *node) controlPlane() agent.ControlPlane {
	p := agent.NewAPIPlane(n.Client)
	if n.Beat == nil {
		return p
	}
	return beatInProcess{APIPlane: p, beat: n.Beat}
}

// beatInProcess is the API plane with heartbeats made by a function.
type beatInProcess struct {
	*agent.APIPlane
	beat func(ctx context.Context, node string, now time.Time) error
}

func (p beatInProcess) Heartbeat(ctx context.Context, node string) error {
	return p.beat(ctx, node, time.Now())
}

// serveTunnels serves ag's remote operations through a tunnel to each of
// servers, each started with run: whichever server a client asks reaches
// this node.
func (n *node) serveTunnels(ag *agent.Agent, servers []*client.Client, run func(what string, f func(context.Context) error)) {
	remote := ag.RemoteHandler(metrics.Handler(ag.InstanceCollector()))
	for _, c := range servers {
		run("agent tunnel", func(ctx context.Context) error {
			agent.ServeTunnel(ctx, func(ctx context.Context) (io.ReadWriteCloser, error) { return c.OpenTunnel(ctx, n.Name) }, c.Local(), remote, n.Log)
			return nil
		})
	}
}

// favorDynMods sets favordynmods on the host's cgroup2 mount. Without it
// containers still start, only slower, so a failure is logged and passed over.
func favorDynMods(log *slog.Logger) {
	mount, changed, err := runtime.FavorDynMods()
	switch {
	case err != nil:
		log.Warn("cgroup2 favordynmods not set: each container start waits an RCU grace period", "err", err)
	case changed:
		log.Info("remounted cgroup2 with favordynmods", "mount", mount)
	}
}
