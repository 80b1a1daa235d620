package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/ipam"
	"github.com/berth-dev/berth/internal/network/vip"
)

// Local is the network of the containers that `berth container run -p`
// starts on this machine, with no agent: a Node (bridge, addresses,
// veths, masquerade) and a vip table holding their published ports, the
// same machinery as a node's, under names of its own. Every data dir
// gets its own Local, so it never meets the agent's (berth0, berth-node,
// berth-svc) nor another data dir's: each one's host ports are kept
// apart by the sockets that hold them (HoldHostPort), which every berth
// on the host respects.
//
// A Local is opened for one change and closed again: OpenLocal takes a
// lock on its state dir, so the commands of one data dir change it one
// at a time, and each change ends with Sync from the containers that
// exist.
type Local struct {
	names LocalNames
	lock  *os.File
	node  *Node
	vip   *vip.Programmer
}

// LocalNames are what a Local owns in the host's network namespace.
type LocalNames struct {
	// Bridge is "berthc-" and eight hex digits of the state dir's hash.
	Bridge string
	// Table (masquerade) and PortTable (published ports) are nftables
	// tables of family ip.
	Table, PortTable string
}

// LocalPool holds the Locals' subnets, one /24 each; apart from the
// agent's default cluster (10.244.0.0/16) and service (10.96.0.0/16) ranges.
var LocalPool = netip.MustParsePrefix("10.89.0.0/16")

// LocalNamesOf derives the names of the Local kept in stateDir.
func LocalNamesOf(stateDir string) LocalNames {
	abs, err := filepath.Abs(stateDir)
	if err != nil {
		abs = stateDir
	}
	sum := sha256.Sum256([]byte(abs))
	base := "berthc-" + hex.EncodeToString(sum[:4])
	return LocalNames{Bridge: base, Table: base, PortTable: base + "-ports"}
}

// OpenLocal opens the Local kept in stateDir, creating its bridge and
// tables the first time (with a /24 of LocalPool that no route or
// address of the host overlaps, kept in stateDir/subnet). It waits for
// any other command of the same state dir to close it first.
func OpenLocal(ctx context.Context, stateDir string) (*Local, error) {
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("container network %s: %w", stateDir, err)
	}
	lock, err := lockFile(filepath.Join(stateDir, "lock"))
	if err != nil {
		return nil, fmt.Errorf("container network %s: %w", stateDir, err)
	}
	l := &Local{names: LocalNamesOf(stateDir), lock: lock}
	if err := l.open(ctx, stateDir); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Local) open(ctx context.Context, stateDir string) error {
	subnet, picked, err := localSubnet(stateDir)
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(stateDir)
	l.node, err = NewNode(ctx, Config{Bridge: l.names.Bridge, Subnet: subnet, StateDir: stateDir,
		Table: l.names.Table, VethSeed: abs})
	picked() // the bridge has the subnet's gateway now: the next pick avoids it
	if err != nil {
		return fmt.Errorf("container network %s on %s: %w", subnet, l.names.Bridge, err)
	}
	if l.vip, err = vip.New(ctx, vip.Config{Table: l.names.PortTable, LocalSubnet: subnet}); err != nil {
		return fmt.Errorf("container network: %w", err)
	}
	return nil
}

// lockFile opens path and takes an exclusive lock on it, waiting.
func lockFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if !errors.Is(err, unix.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// localSubnet reads the subnet kept in stateDir, or picks and keeps one.
// A pick holds a host-wide lock until the caller has made the bridge
// (then picked is called): the bridge's address is what makes the next
// pick, of another data dir, avoid this subnet.
func localSubnet(stateDir string) (subnet netip.Prefix, picked func(), err error) {
	path := filepath.Join(stateDir, "subnet")
	if b, err := os.ReadFile(path); err == nil {
		p, err := netip.ParsePrefix(strings.TrimSpace(string(b)))
		if err != nil {
			return netip.Prefix{}, nil, fmt.Errorf("container network: %s: %w", path, err)
		}
		return p, func() {}, nil
	}
	if err := os.MkdirAll("/run/lock", 0o755); err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("container network: %w", err)
	}
	host, err := lockFile("/run/lock/berth-container-net.lock")
	if err != nil {
		return netip.Prefix{}, nil, fmt.Errorf("container network: %w", err)
	}
	release := func() { host.Close() }
	taken, err := hostPrefixes()
	if err == nil {
		subnet, err = ipam.NextSubnet(LocalPool, 24, taken)
		if err != nil {
			err = fmt.Errorf("no free /24 in %v: %w", LocalPool, err)
		}
	}
	if err == nil {
		err = os.WriteFile(path, []byte(subnet.String()+"\n"), 0o600)
	}
	if err != nil {
		release()
		return netip.Prefix{}, nil, fmt.Errorf("container network: %w", err)
	}
	return subnet, release, nil
}

// hostPrefixes are the networks the caller's namespace already reaches
// directly: its routes and its addresses' subnets.
func hostPrefixes() ([]netip.Prefix, error) {
	var out []netip.Prefix
	routes, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Table: unix.RT_TABLE_UNSPEC}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return nil, fmt.Errorf("list routes: %w", err)
	}
	for _, r := range routes {
		if r.Dst == nil {
			continue
		}
		if a, ok := netip.AddrFromSlice(r.Dst.IP.To4()); ok {
			bits, _ := r.Dst.Mask.Size()
			out = append(out, netip.PrefixFrom(a, bits).Masked())
		}
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, fmt.Errorf("list addresses: %w", err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP.To4()); ok {
			bits, _ := a.Mask.Size()
			out = append(out, netip.PrefixFrom(ip, bits).Masked())
		}
	}
	return out, nil
}

// Close releases the handles and the lock; what is programmed stays.
func (l *Local) Close() {
	if l.vip != nil {
		_ = l.vip.Close()
	}
	if l.node != nil {
		l.node.Close()
	}
	if l.lock != nil {
		l.lock.Close()
	}
}

// Names are what l owns on the host.
func (l *Local) Names() LocalNames { return l.names }

// Reserve gives container id an address now; wire, run once before the
// container starts (runtime.Config.Before), makes its namespace and veth.
func (l *Local) Reserve(ctx context.Context, id string) (Attachment, func() error, error) {
	return l.node.Reserve(ctx, id, "")
}

// PublishedPort is one host port of a container.
type PublishedPort struct {
	// HostIP is the local address it is published on; zero means every
	// local address, loopback included.
	HostIP        netip.Addr
	HostPort      uint16
	ContainerPort uint16
	Protocol      vip.Protocol
}

// LocalContainer is a container whose ports are to be published.
type LocalContainer struct {
	ID    string
	Ports []PublishedPort
}

// Sync makes l hold exactly this: the addresses, namespaces and veths of
// the containers in live (every container that exists; the others'
// are released), and the published ports of those in publish (the
// running ones). A port on every local address is a host port of a
// service without a VIP; one on a single address is a frontend on that
// address, as a service's VIP is.
func (l *Local) Sync(ctx context.Context, publish []LocalContainer, live []string) error {
	_, staleErr := l.node.ReleaseStale(ctx, live)
	var svcs []vip.Service
	for _, c := range publish {
		ip, ok := l.node.ips.Lookup(c.ID)
		if !ok {
			continue
		}
		eps := []vip.Endpoint{{Addr: ip, Ready: true}}
		every := vip.Service{Name: "container/" + c.ID, Endpoints: eps}
		byAddr := map[netip.Addr]*vip.Service{}
		var order []netip.Addr
		for _, p := range c.Ports {
			if !p.HostIP.IsValid() || p.HostIP.IsUnspecified() {
				every.Ports = append(every.Ports, vip.Port{Protocol: p.Protocol, Port: p.ContainerPort, HostPort: p.HostPort})
				continue
			}
			s, ok := byAddr[p.HostIP]
			if !ok {
				s = &vip.Service{Name: "container/" + c.ID + "@" + p.HostIP.String(), VIP: p.HostIP, Endpoints: eps}
				byAddr[p.HostIP] = s
				order = append(order, p.HostIP)
			}
			s.Ports = append(s.Ports, vip.Port{Protocol: p.Protocol, Port: p.HostPort, TargetPort: p.ContainerPort})
		}
		if len(every.Ports) > 0 {
			svcs = append(svcs, every)
		}
		for _, a := range order {
			svcs = append(svcs, *byAddr[a])
		}
	}
	return errors.Join(staleErr, l.vip.Sync(ctx, svcs))
}

// RemoveLocal deletes the bridge and tables of the Local kept in
// stateDir from the caller's namespace (berth down --purge), once its
// containers are gone, and returns what it removed. What is not there
// is no error.
func RemoveLocal(stateDir string) ([]string, error) {
	names := LocalNamesOf(stateDir)
	return RemoveHostNetwork(names.Bridge, names.PortTable, names.Table)
}

// RemoveHostNetwork deletes the ip nftables tables named and the bridge
// from the caller's namespace, and returns what it removed. What is not
// there is no error; a link of that name that is no bridge is left alone.
func RemoveHostNetwork(bridge string, tables ...string) ([]string, error) {
	var done []string
	var errs []error
	conn, err := nftables.New()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	for _, name := range tables {
		t, err := conn.ListTableOfFamily(name, nftables.TableFamilyIPv4)
		if err != nil {
			continue // not there
		}
		conn.DelTable(t)
		if err := conn.Flush(); err != nil {
			errs = append(errs, fmt.Errorf("delete nft table %s: %w", name, err))
			continue
		}
		done = append(done, "nft table ip "+name)
	}
	link, err := netlink.LinkByName(bridge)
	var nf netlink.LinkNotFoundError
	switch {
	case errors.As(err, &nf):
	case err != nil:
		errs = append(errs, fmt.Errorf("bridge %s: %w", bridge, err))
	case link.Type() != "bridge":
		errs = append(errs, fmt.Errorf("%s is a %s, not a bridge: left alone", bridge, link.Type()))
	default:
		if err := netlink.LinkDel(link); err != nil {
			errs = append(errs, fmt.Errorf("delete bridge %s: %w", bridge, err))
			break
		}
		done = append(done, "bridge "+bridge)
	}
	return done, errors.Join(errs...)
}
