package cli

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/vip"
	"github.com/berth-dev/berth/internal/runtime"
)

// A container given -p gets a network namespace on its data dir's own
// bridge (network.Local, kept in <data dir>/container-net), an address,
// and its host ports: published by the same nftables machinery as
// services' ports, and held by sockets its shim keeps for as long as the
// container runs, so that nothing else on the host takes them. Every
// command that changes containers brings the network in step with them
// (syncContainerNet), and so does a -p container's shim when the
// container ends by itself (`container network-sync`, its OnExit): a
// container that is no longer running publishes nothing, and one that is
// removed gives back its address.

// parsePublishes reads every -p; the same host port twice is refused.
func parsePublishes(specs []string) ([]runtime.Port, error) {
	var out []runtime.Port
	seen := map[string]string{}
	for _, s := range specs {
		p, err := containerPort(s)
		if err != nil {
			return nil, err
		}
		if p.HostPort != 0 {
			key := fmt.Sprintf("%d/%s", p.HostPort, p.Protocol)
			if prev, ok := seen[key]; ok {
				return nil, fmt.Errorf("-p %q: host port %s is already given by -p %q", s, key, prev)
			}
			seen[key] = s
		}
		out = append(out, p)
	}
	return out, nil
}

// containerNetDir keeps the container commands' network of the data dir.
func (g *globals) containerNetDir() string { return filepath.Join(g.dataDir, "container-net") }

// publishing is a container's network while it starts: the data dir's
// network, locked, and the sockets holding its host ports.
type publishing struct {
	net  *network.Local
	hold []*os.File
}

// publishPorts holds c's host ports (a port already taken on this host
// fails, naming it) and gives c an address and a namespace on the data
// dir's bridge, wired as it starts. Call finish once the start is over.
func publishPorts(ctx context.Context, g *globals, rt *runtime.Runtime, c *runtime.Config, ports []runtime.Port) (*publishing, error) {
	ln, err := network.OpenLocal(ctx, g.containerNetDir())
	if err != nil {
		return nil, err
	}
	// Under the lock: the name's container, if one exists, keeps its
	// address, and this start, which would fail, takes none.
	if _, err := rt.State(ctx, c.ID); err == nil {
		ln.Close()
		return nil, fmt.Errorf("container %q: %w", c.ID, runtime.ErrAlreadyExists)
	}
	return attachPorts(ctx, g, ln, c, ports)
}

// republishPorts is publishPorts for a container restored from a
// checkpoint (c as it was dumped): its host ports are held again, the
// same numbers, and its address and namespace are kept, or made again
// where they are gone (a checkpoint imported after the container was
// removed).
func republishPorts(ctx context.Context, g *globals, c *runtime.Config) (*publishing, error) {
	ln, err := network.OpenLocal(ctx, g.containerNetDir())
	if err != nil {
		return nil, err
	}
	return attachPorts(ctx, g, ln, c, c.Ports)
}

// attachPorts holds ports, reserves c's address on ln, and sets c up to
// join them; ports with no host port get one of the kernel's pick. ln is
// the publishing's from here on.
func attachPorts(ctx context.Context, g *globals, ln *network.Local, c *runtime.Config, ports []runtime.Port) (*publishing, error) {
	pub := &publishing{net: ln}
	for i, p := range ports {
		proto := vip.TCP
		if p.Protocol == "udp" {
			proto = vip.UDP
		}
		var ip netip.Addr
		if p.HostIP != "" {
			if ip, _ = netip.ParseAddr(p.HostIP); !ip.IsValid() {
				pub.close()
				return nil, fmt.Errorf("container %q: port %s: host address %q is not an IP address", c.ID, publishSpec(p), p.HostIP)
			}
		}
		f, port, err := network.HoldHostPort(proto, ip, p.HostPort)
		if err != nil {
			pub.close()
			return nil, fmt.Errorf("-p %s: %w", publishSpec(p), err)
		}
		pub.hold = append(pub.hold, f)
		ports[i].HostPort = port
	}
	att, wire, err := ln.Reserve(ctx, c.ID)
	if err != nil {
		pub.close()
		return nil, err
	}
	dataDir, err := filepath.Abs(g.dataDir)
	if err != nil {
		pub.close()
		return nil, fmt.Errorf("--data-dir: %w", err)
	}
	c.NetNS, c.Before, c.KeepOpen, c.Ports = att.NetNS, wire, pub.hold, ports
	// Whatever ends the container (its own exit, a kill, the OOM killer),
	// its shim then runs this, which takes its rules out, and only then
	// lets go of its ports; no later command has to come first.
	c.OnExit = []string{"berth", "--data-dir", dataDir, "container", netSyncCmd}
	return pub, nil
}

// publishSpec is p as -p would say it.
func publishSpec(p runtime.Port) string {
	s := fmt.Sprintf("%d:%d/%s", p.HostPort, p.ContainerPort, p.Protocol)
	if p.HostIP != "" {
		s = p.HostIP + ":" + s
	}
	return s
}

// finish publishes the ports of the containers now running (the new one
// among them, if it started) and lets go of the network.
func (pub *publishing) finish(ctx context.Context, rt *runtime.Runtime) error {
	defer pub.close()
	return syncLocal(ctx, pub.net, rt)
}

func (pub *publishing) close() {
	for _, f := range pub.hold {
		f.Close()
	}
	pub.hold = nil
	pub.net.Close()
}

// netSyncCmd is the container subcommand a -p container's shim runs when
// the container ends.
const netSyncCmd = "network-sync"

func newContainerNetSyncCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:    netSyncCmd,
		Short:  "Bring the published ports of the data dir's containers in step with them (run when one ends)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			rt, err := g.runtime()
			if err != nil {
				return err
			}
			return syncContainerNet(cmd.Context(), g, rt)
		},
	}
}

// syncContainerNet brings the data dir's container network, if it has
// one, in step with its containers: after a container stopped or was
// removed.
func syncContainerNet(ctx context.Context, g *globals, rt *runtime.Runtime) error {
	if _, err := os.Stat(filepath.Join(g.containerNetDir(), "subnet")); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	ln, err := network.OpenLocal(ctx, g.containerNetDir())
	if err != nil {
		return err
	}
	defer ln.Close()
	return syncLocal(ctx, ln, rt)
}

// syncLocal publishes the ports of the running containers and releases
// the addresses of those that no longer exist.
func syncLocal(ctx context.Context, ln *network.Local, rt *runtime.Runtime) error {
	list, err := rt.List(ctx)
	if err != nil {
		return err
	}
	var live []string
	var publish []network.LocalContainer
	for _, st := range list {
		live = append(live, st.ID)
		if st.State != runtime.Running || len(st.Ports) == 0 {
			continue
		}
		lc := network.LocalContainer{ID: st.ID}
		for _, p := range st.Ports {
			pp := network.PublishedPort{HostPort: p.HostPort, ContainerPort: p.ContainerPort, Protocol: vip.TCP}
			if p.Protocol == "udp" {
				pp.Protocol = vip.UDP
			}
			if p.HostIP != "" {
				pp.HostIP, _ = netip.ParseAddr(p.HostIP)
			}
			lc.Ports = append(lc.Ports, pp)
		}
		publish = append(publish, lc)
	}
	if err := ln.Sync(ctx, publish, live); err != nil {
		return fmt.Errorf("container network: %w", err)
	}
	return nil
}

// portsColumn is the PORTS cell of container ps.
func portsColumn(ps []runtime.Port) string {
	var out []string
	for _, p := range ps {
		out = append(out, p.String())
	}
	return dash(strings.Join(out, ", "))
}
