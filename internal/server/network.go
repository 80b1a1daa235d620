package server

import (
	"context"
	"log/slog"
	"net/netip"
	"path/filepath"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/netsync"
)

// Network configures container networking on a node.
type Network struct {
	// Disabled leaves each container with only loopback.
	Disabled bool
	// ClusterCIDR, ServiceCIDR: controller.DefaultNetwork's when zero.
	ClusterCIDR netip.Prefix
	ServiceCIDR netip.Prefix
	// Bridge is the node's bridge device; "berth0" when empty.
	Bridge string
}

func (n Network) controller() controller.Network {
	out := controller.DefaultNetwork
	if n.ClusterCIDR.IsValid() {
		out.ClusterCIDR = n.ClusterCIDR
	}
	if n.ServiceCIDR.IsValid() {
		out.ServiceCIDR = n.ServiceCIDR
	}
	return out
}

// agentNetwork starts the network (netsync) of the node named node once it has its
// subnet. The plane stops when ctx ends.
func (n Network) agentNetwork(c *client.Client, node, dataDir string, log *slog.Logger) agent.NetworkFunc {
	if n.Disabled {
		return nil
	}
	cn := n.controller()
	return func(ctx context.Context, subnet netip.Prefix) (agent.Network, error) {
		p, err := netsync.Start(ctx, netsync.Config{
			Client: c, Node: node, Subnet: subnet, ClusterCIDR: cn.ClusterCIDR, ServiceCIDR: cn.ServiceCIDR,
			StateDir: filepath.Join(dataDir, "net"), Bridge: n.Bridge, Logger: log,
		})
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, p.Close)
		return planeAdapter{p}, nil
	}
}

// planeAdapter is the node's network (netsync) as the agent's Network.
type planeAdapter struct{ p *netsync.Plane }

func (a planeAdapter) Attach(ctx context.Context, id, namespace string) (agent.NetAttachment, error) {
	att, err := a.p.Attach(ctx, id, namespace)
	if err != nil {
		return agent.NetAttachment{}, err
	}
	return agent.NetAttachment{NetNS: att.NetNS, IP: att.IP, ResolvConf: att.ResolvConf}, nil
}

func (a planeAdapter) Reserve(ctx context.Context, id, namespace string) (agent.NetAttachment, func() error, error) {
	att, wire, err := a.p.Reserve(ctx, id, namespace)
	if err != nil {
		return agent.NetAttachment{}, nil, err
	}
	return agent.NetAttachment{NetNS: att.NetNS, IP: att.IP, ResolvConf: att.ResolvConf}, wire, nil
}

func (a planeAdapter) Detach(ctx context.Context, id string) error { return a.p.Detach(ctx, id) }

func (a planeAdapter) CheckHostPort(service, protocol string, port int) error {
	return a.p.CheckHostPort(service, protocol, port)
}

func (a planeAdapter) ReleaseStale(ctx context.Context, live []string) error {
	return a.p.ReleaseStale(ctx, live)
}
