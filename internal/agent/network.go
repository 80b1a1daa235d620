package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
)

// labelIP keeps a container's address with it, so that a restarted agent
// reports the same one.
const labelIP = "berth.ip"

// NetAttachment is a container's place on the node's network.
type NetAttachment struct {
	// NetNS is the namespace the container joins.
	NetNS string
	IP    netip.Addr
	// ResolvConf is bind-mounted on the container's /etc/resolv.conf.
	ResolvConf string
}

// Network gives containers addresses. Attach runs before a container
// starts and Detach after it is removed; ReleaseStale, once at start-up,
// frees what containers gone while the agent was down held.
type Network interface {
	Attach(ctx context.Context, containerID, namespace string) (NetAttachment, error)
	Detach(ctx context.Context, containerID string) error
	ReleaseStale(ctx context.Context, live []string) error
}

// HostPortChecker is a Network that publishes host ports: it tells
// whether an instance of service (namespace/name; empty for a job's
// instance) may publish port/protocol on the node, which it may not when
// another process holds the port.
type HostPortChecker interface {
	CheckHostPort(service, protocol string, port int) error
}

// HostPort is a port an instance publishes on its node.
type HostPort struct {
	Protocol string // tcp or udp
	Port     int
}

// checkHostPorts refuses a start whose published ports another process
// holds on the node, naming the port ("address already in use"), rather
// than taking the port's traffic from that process.
func (a *Agent) checkHostPorts(inst *Instance) error {
	hc, ok := a.net.(HostPortChecker)
	if !ok {
		return nil
	}
	for _, p := range inst.HostPorts {
		if err := hc.CheckHostPort(inst.Service, p.Protocol, p.Port); err != nil {
			return err
		}
	}
	return nil
}

// StagedNetwork is a Network that can hand out an address at once and
// wire the namespace later (wire runs once, before the container starts),
// so that the wiring overlaps the rest of the start.
type StagedNetwork interface {
	Network
	Reserve(ctx context.Context, containerID, namespace string) (NetAttachment, func() error, error)
}

// NetworkFunc makes the node's network once the control plane has given
// the node its pod subnet.
type NetworkFunc func(ctx context.Context, subnet netip.Prefix) (Network, error)

// SubnetSource is how the agent learns its node's pod subnet; the
// control plane hands it out after the node registers.
type SubnetSource interface {
	PodSubnet(ctx context.Context, node string) (string, error)
}

// setupNetwork waits for the node's pod subnet and makes the network.
func (a *Agent) setupNetwork(ctx context.Context) error {
	src, ok := a.cfg.ControlPlane.(SubnetSource)
	if !ok {
		return errors.New("the control plane does not hand out pod subnets")
	}
	t0 := time.Now()
	s, err := src.PodSubnet(ctx, a.cfg.Node.Name)
	if err != nil {
		return fmt.Errorf("pod subnet of node %s: %w", a.cfg.Node.Name, err)
	}
	subnet, err := netip.ParsePrefix(s)
	if err != nil {
		return fmt.Errorf("pod subnet of node %s: %q: %w", a.cfg.Node.Name, s, err)
	}
	n, err := a.cfg.Network(ctx, subnet)
	if err != nil {
		return err
	}
	a.net = n
	a.log.Info("network ready", "subnet", subnet, "took", time.Since(t0).Round(time.Millisecond))
	return nil
}

// attach puts a container about to start on the network.
// attach puts a container about to start on the network. A staged
// network hands out the address at once and wires the namespace while
// the runtime readies the container (c.Before); wired, when set, learns
// how long that took.
func (a *Agent) attach(ctx context.Context, c *runtime.Config, namespace string, wired *time.Duration) error {
	if a.net == nil {
		return nil
	}
	var att NetAttachment
	var err error
	if staged, ok := a.net.(StagedNetwork); ok {
		var wire func() error
		att, wire, err = staged.Reserve(ctx, c.ID, namespace)
		if err == nil {
			c.Before = func() error {
				t0 := time.Now()
				err := wire()
				if wired != nil {
					*wired = time.Since(t0)
				}
				if err != nil {
					return fmt.Errorf("network for %s: %w", c.ID, err)
				}
				return nil
			}
		}
	} else {
		att, err = a.net.Attach(ctx, c.ID, namespace)
	}
	if err != nil {
		return fmt.Errorf("network for %s: %w", c.ID, err)
	}
	c.NetNS = att.NetNS
	a.mountResolvConf(c, att)
	c.Labels[labelIP] = att.IP.String()
	return nil
}

// mountResolvConf binds the attachment's resolv.conf into the container.
func (a *Agent) mountResolvConf(c *runtime.Config, att NetAttachment) {
	if att.ResolvConf != "" {
		c.Mounts = append(c.Mounts, specs.Mount{Destination: "/etc/resolv.conf", Source: att.ResolvConf, Type: "bind",
			Options: []string{"rbind", "ro", "nosuid", "nodev", "noexec"}})
	}
}

func (a *Agent) detach(ctx context.Context, id string) {
	if a.net == nil {
		return
	}
	if err := a.net.Detach(ctx, id); err != nil {
		a.log.Warn("detach container network", "container", id, "err", err)
	}
}

// releaseStale runs once, after the first full list of containers: only
// running containers keep their addresses (one that exited while the
// agent was away gives its up, as it would have at its exit).
func (a *Agent) releaseStale(ctx context.Context) {
	if a.net == nil || a.netReleased {
		return
	}
	live := make([]string, 0, len(a.containers))
	for id, st := range a.containers {
		if st.State == runtime.Running {
			live = append(live, id)
			if net := st.Labels[labelNet]; net != "" {
				live = append(live, net)
			}
		}
	}
	// A migration's target holds an address for a container not made yet.
	a.mu.Lock()
	for _, h := range a.holds {
		if h.kind == holdIn && h.reserved != "" {
			live = append(live, h.reserved)
		}
	}
	a.mu.Unlock()
	if err := a.net.ReleaseStale(ctx, live); err != nil {
		a.log.Warn("release stale container networks", "err", err)
		return
	}
	a.netReleased = true
}
