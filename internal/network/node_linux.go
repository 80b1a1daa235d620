// Package network is the kernel side of the node's network, what the
// agent reconciles through package netsync: a bridge with the node's pod
// subnet, one network namespace, veth and address per container (Node),
// service VIPs and published ports in nftables (package vip), and cluster
// DNS (package dns).
//
//	 host (or HostNetNS)                         container netns (StateDir/netns/<id>)
//	┌───────────────────────────────┐            ┌──────────────────────────────┐
//	│ bridge <Bridge> gw/len        │── vb<hash> ─── eth0 ip/32                    │
//	│ nft table <Table>: masquerade │  (veth)    │ default via gw dev eth0 onlink│
//	│ pod subnet → outside          │            │ lo up, resolv.conf → gw:53   │
//	└───────────────────────────────┘            └──────────────────────────────┘
//
// Containers get a /32 and reach everything, their neighbours included,
// through the gateway. Pod-to-pod traffic on the node is therefore routed
// by the host rather than switched by the bridge, so it passes through
// conntrack: a reply from a service endpoint is un-NATed even when client
// and endpoint share the bridge, whether or not br_netfilter is active,
// and without masquerading the client. Bridge ports are in hairpin mode
// for the one case br_netfilter bridges back out of the same port: a
// container reaching its own service (vip masquerades that case).
package network

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/vishvananda/netlink"
	vnetns "github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/ipam"
	"github.com/berth-dev/berth/internal/network/netns"
)

// ErrInvalid reports a bad configuration or container id; ErrClosed a
// call on a closed Node.
var (
	ErrInvalid = errors.New("invalid argument")
	ErrClosed  = errors.New("network node closed")
)

// Config describes the node's network.
type Config struct {
	// Bridge is the bridge device's name, e.g. "berth0".
	Bridge string
	// Subnet is this node's pod subnet, handed out by the control plane
	// (ipam.NextSubnet). Its first address is the gateway, on the bridge.
	Subnet netip.Prefix
	// ClusterCIDR holds every node's pod subnet; traffic to it is not
	// masqueraded. Zero means Subnet.
	ClusterCIDR netip.Prefix
	// ServiceCIDR, when set, is routed to the bridge, so that the host
	// itself reaches VIPs even without a default route (the VIP is
	// DNATed on the way out; the route only has to exist).
	ServiceCIDR netip.Prefix
	// StateDir keeps the address allocations, the pinned namespaces and the
	// resolv.conf files, so that a restarted agent finds them again.
	StateDir string
	// Table is the nftables table (family ip) for masquerading.
	Table string
	// HostNetNS is the path of the namespace the node's side lives in;
	// empty means the caller's. Tests use it to stay off the host.
	HostNetNS string
	// MTU of the veths; 0 leaves the kernel default.
	MTU int
	// DNS is the resolver written into containers' resolv.conf; zero means
	// the gateway (where the node's DNS server listens).
	DNS netip.Addr
	// Domain is the cluster DNS domain; empty means "berth".
	Domain string
	// SpareNetNS is how many namespaces to keep made ahead of need, so
	// that Attach skips creating one (≈ 2 ms of a container's start); a
	// background goroutine refills them. 0 makes each in Attach.
	SpareNetNS int
	// VethSeed goes into the hash that names the host-side veths, so that
	// two nodes in one namespace (the container commands' networks of two
	// data dirs) never pick the same name for the same id. Empty for the
	// agent, whose names stay as they were.
	VethSeed string
}

// Attachment is a container's place on the network.
type Attachment struct {
	ID string
	// NetNS is the path of the pinned namespace for the runtime to join.
	NetNS string
	IP    netip.Addr
	// Gateway is the default route, also the node's DNS server address.
	Gateway netip.Addr
	// ResolvConf is the path of a resolv.conf to bind-mount into the container.
	ResolvConf string
	// HostVeth is the host-side interface name.
	HostVeth string
}

// Node wires containers to the node's bridge. Its methods are safe for
// concurrent use; Attach and Detach of different ids run in parallel.
type Node struct {
	cfg    Config
	gw     netip.Addr
	ips    *ipam.Store
	host   *netlink.Handle
	bridge int // ifindex

	mu    sync.Mutex
	busy  map[string]*idLock // per-id locks
	hosts vnetns.NsHandle    // HostNetNS, or -1

	spares     chan string   // ready namespaces; nil when SpareNetNS is 0
	refill     chan struct{} // asks keepSpares for more
	stopSpares chan struct{}
	sparesDone chan struct{}
}

// NewNode makes sure the bridge, its address, the sysctls and the
// masquerade rule exist (creating or repairing them), and opens the
// address store. It is idempotent: a restarted agent calls it again.
func NewNode(ctx context.Context, cfg Config) (*Node, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.Bridge == "" || len(cfg.Bridge) > 15 || cfg.Table == "" || cfg.StateDir == "" {
		return nil, fmt.Errorf("network config (bridge %q, table %q, state dir %q): %w", cfg.Bridge, cfg.Table, cfg.StateDir, ErrInvalid)
	}
	if !cfg.Subnet.Addr().Is4() || cfg.Subnet.Bits() > 30 {
		return nil, fmt.Errorf("network config: pod subnet %v must be IPv4 and /30 or larger: %w", cfg.Subnet, ErrInvalid)
	}
	cfg.Subnet = cfg.Subnet.Masked()
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = cfg.Subnet
	}
	if cfg.Domain == "" {
		cfg.Domain = "berth"
	}
	n := &Node{cfg: cfg, gw: cfg.Subnet.Addr().Next(), busy: map[string]*idLock{}, hosts: -1}
	if !cfg.DNS.IsValid() {
		n.cfg.DNS = n.gw
	}
	var err error
	if cfg.HostNetNS != "" {
		if n.hosts, err = vnetns.GetFromPath(cfg.HostNetNS); err != nil {
			return nil, fmt.Errorf("host netns %s: %w", cfg.HostNetNS, err)
		}
		n.host, err = netlink.NewHandleAt(n.hosts)
	} else {
		n.host, err = netlink.NewHandle()
	}
	if err != nil {
		n.Close()
		return nil, fmt.Errorf("netlink handle: %w", err)
	}
	if err := n.setupBridge(); err != nil {
		n.Close()
		return nil, err
	}
	if err := n.setupMasquerade(); err != nil {
		n.Close()
		return nil, err
	}
	n.ips, err = ipam.Open(filepath.Join(cfg.StateDir, "ipam"), cfg.Subnet, n.gw)
	if err != nil {
		n.Close()
		return nil, err
	}
	n.dropSpares() // a previous run's
	if cfg.SpareNetNS > 0 {
		n.spares = make(chan string, cfg.SpareNetNS)
		n.refill = make(chan struct{}, 1)
		n.stopSpares = make(chan struct{})
		n.sparesDone = make(chan struct{})
		go n.keepSpares(n.stopSpares)
	}
	return n, nil
}

// Close stops making spare namespaces, removes those not handed out, and
// releases handles; the bridge and containers stay as they are. The Node
// is unusable afterwards; closing twice is harmless.
func (n *Node) Close() {
	if n.stopSpares != nil {
		close(n.stopSpares)
		<-n.sparesDone
		n.stopSpares = nil
		n.dropSpares()
	}
	if n.host != nil {
		n.host.Close()
		n.host = nil
	}
	if n.hosts >= 0 {
		_ = n.hosts.Close()
		n.hosts = -1
	}
}

// usable reports why the node cannot act now, if it cannot.
func (n *Node) usable(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.host == nil {
		return ErrClosed
	}
	return nil
}

// Gateway is the bridge's address: containers' default route and DNS server.
func (n *Node) Gateway() netip.Addr { return n.gw }

func (n *Node) setupBridge() error {
	name := n.cfg.Bridge
	link, err := n.host.LinkByName(name)
	if err != nil {
		var nf netlink.LinkNotFoundError
		if !errors.As(err, &nf) {
			return fmt.Errorf("bridge %s: %w", name, err)
		}
		br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: name, MTU: n.cfg.MTU}}
		if err := n.host.LinkAdd(br); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = n.host.LinkByName(name); err != nil {
			return fmt.Errorf("bridge %s: %w", name, err)
		}
	}
	if _, ok := link.(*netlink.Bridge); !ok {
		return fmt.Errorf("link %s is a %s, not a bridge: %w", name, link.Type(), ErrInvalid)
	}
	// A bridge without a MAC of its own takes the lowest of its ports', so
	// it would change as containers come and go, and containers' ARP
	// entries for the gateway would point at a port instead, for as long
	// as they live. A fixed one, made from the gateway address, stays put.
	mac := net.HardwareAddr{0x02, 0xbe, 0, 0, 0, 0}
	copy(mac[2:], n.gw.AsSlice())
	if link.Attrs().HardwareAddr.String() != mac.String() {
		if err := n.host.LinkSetHardwareAddr(link, mac); err != nil {
			return fmt.Errorf("bridge %s address %v: %w", name, mac, err)
		}
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: n.gw.AsSlice(), Mask: net.CIDRMask(n.cfg.Subnet.Bits(), 32)}}
	if err := n.host.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("bridge %s address %v: %w", name, addr, err)
	}
	if err := n.host.LinkSetUp(link); err != nil {
		return fmt.Errorf("bridge %s up: %w", name, err)
	}
	n.bridge = link.Attrs().Index
	if sc := n.cfg.ServiceCIDR.Masked(); sc.IsValid() {
		r := &netlink.Route{LinkIndex: n.bridge, Scope: netlink.SCOPE_LINK, Protocol: routeProtocol,
			Dst: &net.IPNet{IP: sc.Addr().AsSlice(), Mask: net.CIDRMask(sc.Bits(), 32)}}
		if err := n.host.RouteReplace(r); err != nil {
			return fmt.Errorf("route service CIDR %v to bridge %s: %w", sc, name, err)
		}
	}
	// Forwarding carries container traffic; route_localnet lets a published
	// port reached via 127.0.0.1 be DNATed out of the bridge; the bridge
	// must not tell containers to bypass the gateway (see the package doc).
	return n.inHost(func() error {
		return errors.Join(
			netns.WriteSysctl("net.ipv4.ip_forward", "1"),
			netns.WriteSysctl("net/ipv4/conf/"+name+"/route_localnet", "1"),
			netns.WriteSysctl("net/ipv4/conf/"+name+"/send_redirects", "0"),
		)
	})
}

// inHost runs fn in the host namespace (the caller's when HostNetNS is empty).
func (n *Node) inHost(fn func() error) error {
	if n.cfg.HostNetNS == "" {
		return fn()
	}
	return netns.Do(n.cfg.HostNetNS, fn)
}

// setupMasquerade (re)writes the table in one transaction:
// ip saddr <subnet> ip daddr != <cluster> oifname != <bridge> masquerade.
func (n *Node) setupMasquerade() error {
	var opts []nftables.ConnOption
	if n.hosts >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(n.hosts)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nft table %s: %w", n.cfg.Table, err)
	}
	t := c.AddTable(&nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyIPv4})
	c.FlushTable(t)
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	mask := func(p netip.Prefix) []byte { return net.CIDRMask(p.Bits(), 32) }
	ifname := make([]byte, unix.IFNAMSIZ)
	copy(ifname, n.cfg.Bridge)
	c.AddRule(&nftables.Rule{Table: t, Chain: post, Exprs: []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask(n.cfg.Subnet), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: n.cfg.Subnet.Addr().AsSlice()},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask(n.cfg.ClusterCIDR), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: n.cfg.ClusterCIDR.Masked().Addr().AsSlice()},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname},
		&expr.Masq{},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft table %s: %w", n.cfg.Table, err)
	}
	return nil
}

// DeleteTable removes the node's masquerade table (when the node leaves).
func (n *Node) DeleteTable() error {
	var opts []nftables.ConnOption
	if n.hosts >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(n.hosts)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return err
	}
	c.DelTable(&nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyIPv4})
	if err := c.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete nft table %s: %w", n.cfg.Table, err)
	}
	return nil
}

// idLock serialises work on one id; refs counts holders and waiters so
// that the entry goes when nobody needs it.
type idLock struct {
	mu   sync.Mutex
	refs int
}

// lock takes id's lock and returns its release.
func (n *Node) lock(id string) func() {
	n.mu.Lock()
	l := n.busy[id]
	if l == nil {
		l = &idLock{}
		n.busy[id] = l
	}
	l.refs++
	n.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		n.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(n.busy, id)
		}
		n.mu.Unlock()
	}
}

// validID keeps ids usable as file names.
func validID(id string) error {
	if id == "" || len(id) > 200 || id[0] == '.' {
		return fmt.Errorf("container id %q: %w", id, ErrInvalid)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return fmt.Errorf("container id %q: only letters, digits, '-', '_' and '.': %w", id, ErrInvalid)
		}
	}
	return nil
}

// vethName derives the host-side name from the id: stable across
// restarts, within IFNAMSIZ, and recognisable by its prefix.
func vethName(id string) string {
	h := sha256.Sum256([]byte(id))
	return "vb" + hex.EncodeToString(h[:])[:11]
}

// vethName is the host-side name of id's veth on this node.
func (n *Node) vethName(id string) string {
	if n.cfg.VethSeed == "" {
		return vethName(id)
	}
	return vethName(n.cfg.VethSeed + "/" + id)
}

func (n *Node) nsPath(id string) string { return filepath.Join(n.cfg.StateDir, "netns", id) }
func (n *Node) resolvPath(id string) string {
	return filepath.Join(n.cfg.StateDir, "resolv", id+".conf")
}

// Attach gives container id a pinned network namespace, a veth on the
// bridge and an address, and returns where they are. namespace (the
// container's berth namespace) heads the DNS search list. Attaching an id
// that is already attached returns its attachment; a half-made one (a
// crash mid-Attach) is rebuilt.
func (n *Node) Attach(ctx context.Context, id, namespace string) (Attachment, error) {
	if err := validID(id); err != nil {
		return Attachment{}, err
	}
	defer n.lock(id)()
	a, done, err := n.reserve(ctx, id, namespace)
	if err != nil || done {
		return a, err
	}
	if err := n.wire(a); err != nil {
		return Attachment{}, errors.Join(fmt.Errorf("attach %s: %w", id, err), n.teardown(id, true))
	}
	return a, nil
}

// Reserve is Attach in two steps: it hands out the address and the paths
// now, and wire (to run once, before the container starts) makes the
// namespace and the veth; a failed wire undoes the attachment. The
// caller starts the container meanwhile, so the wiring overlaps the rest
// of the start.
func (n *Node) Reserve(ctx context.Context, id, namespace string) (a Attachment, wire func() error, err error) {
	if err := validID(id); err != nil {
		return Attachment{}, nil, err
	}
	unlock := n.lock(id)
	a, done, err := n.reserve(ctx, id, namespace)
	unlock()
	if err != nil {
		return Attachment{}, nil, err
	}
	if done {
		return a, func() error { return nil }, nil
	}
	return a, func() error {
		defer n.lock(id)()
		if err := n.wire(a); err != nil {
			return errors.Join(fmt.Errorf("attach %s: %w", id, err), n.teardown(id, true))
		}
		return nil
	}, nil
}

// reserve gives id its address, or finds it attached already (done);
// a half-made attachment is cleared first. n.lock(id) is held.
func (n *Node) reserve(ctx context.Context, id, namespace string) (a Attachment, done bool, err error) {
	if err := n.usable(ctx); err != nil {
		return Attachment{}, false, err
	}
	a = Attachment{ID: id, NetNS: n.nsPath(id), Gateway: n.gw, ResolvConf: n.resolvPath(id), HostVeth: n.vethName(id)}
	if ip, ok := n.ips.Lookup(id); ok && n.complete(a) {
		a.IP = ip
		return a, true, nil
	}
	if err := n.teardown(id, true); err != nil {
		return Attachment{}, false, err
	}
	ip, err := n.ips.Allocate(id)
	if err != nil {
		return Attachment{}, false, fmt.Errorf("attach %s: %w", id, err)
	}
	a.IP = ip
	// The file is there from now on: a runtime checks its mounts' sources
	// before the namespace is wired.
	if err := n.writeResolv(a, namespace); err != nil {
		return Attachment{}, false, errors.Join(fmt.Errorf("attach %s: %w", id, err), n.teardown(id, true))
	}
	return a, false, nil
}

// complete reports whether every piece of an attachment exists.
func (n *Node) complete(a Attachment) bool {
	if _, err := os.Stat(a.ResolvConf); err != nil {
		return false
	}
	var st unix.Statfs_t
	if err := unix.Statfs(a.NetNS, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		return false
	}
	l, err := n.host.LinkByName(a.HostVeth)
	return err == nil && l.Attrs().MasterIndex == n.bridge
}

// writeResolv writes the container's resolv.conf: namespace heads the
// search list.
func (n *Node) writeResolv(a Attachment, namespace string) error {
	if err := os.MkdirAll(filepath.Dir(a.ResolvConf), 0o755); err != nil {
		return err
	}
	search := n.cfg.Domain
	if namespace != "" {
		search = namespace + "." + n.cfg.Domain + " " + n.cfg.Domain
	}
	resolv := fmt.Sprintf("nameserver %v\nsearch %s\noptions ndots:2\n", n.cfg.DNS, search)
	return os.WriteFile(a.ResolvConf, []byte(resolv), 0o644)
}

// wire makes the namespace and the veth of a reserved attachment.
func (n *Node) wire(a Attachment) error {
	// A spare namespace saves creating one (≈ 2 ms) on this path. The
	// replacement is made after this Attach, not during: making a
	// namespace holds the kernel locks the veth needs.
	if spare, ok := n.takeSpare(); ok {
		defer n.askRefill()
		if err := netns.Move(spare, a.NetNS); err == nil {
			return netns.Do(a.NetNS, func() error { return n.plug(a) })
		}
		_ = netns.Delete(spare)
	}
	// Everything inside the new namespace happens on the thread that
	// created it; the host side goes through the host handle.
	return netns.Create(a.NetNS, func() error {
		if err := prepareNS(); err != nil {
			return err
		}
		return n.plug(a)
	})
}

// prepareNS readies the calling thread's fresh namespace for a container.
func prepareNS() error {
	if err := errors.Join(
		// Redirects from the gateway would send pod-to-pod traffic
		// around conntrack; never follow them.
		netns.WriteSysctl("net.ipv4.conf.all.accept_redirects", "0"),
		netns.WriteSysctl("net.ipv4.conf.default.accept_redirects", "0"),
	); err != nil {
		return err
	}
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return nil
}

// plug runs in the container's namespace: it creates the veth with its
// peer right there, and configures eth0.
func (n *Node) plug(a Attachment) error {
	self, err := vnetns.Get()
	if err != nil {
		return err
	}
	defer self.Close()
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: a.HostVeth, MasterIndex: n.bridge, MTU: n.cfg.MTU, Flags: net.FlagUp},
		PeerName:      "eth0",
		PeerNamespace: netlink.NsFd(int(self)),
	}
	if err := n.host.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", a.HostVeth, err)
	}
	// Where br_netfilter is active, a container reaching its own service
	// through the VIP has its DNATed frame bridged back out of the port it
	// came in on, which a bridge port allows only in hairpin mode.
	if err := n.host.LinkSetHairpin(veth, true); err != nil {
		return fmt.Errorf("veth %s hairpin: %w", a.HostVeth, err)
	}
	eth, err := netlink.LinkByName("eth0")
	if err != nil {
		return fmt.Errorf("eth0: %w", err)
	}
	// Announce the address (a gratuitous ARP) when eth0 comes up, so that
	// neighbours still naming the MAC of its last holder learn the new one.
	if err := netns.WriteSysctl("net.ipv4.conf.eth0.arp_notify", "1"); err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: a.IP.AsSlice(), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("eth0 address %v: %w", a.IP, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: a.Gateway.AsSlice(), Flags: int(netlink.FLAG_ONLINK)}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %v: %w", a.Gateway, err)
	}
	// The host's own neighbour entry for a reused address may still name
	// the MAC of the container that had it; packets would go there until
	// the entry fails (11-50 s). Replace it with this container's.
	neigh := &netlink.Neigh{LinkIndex: n.bridge, Family: unix.AF_INET, State: netlink.NUD_REACHABLE,
		IP: a.IP.AsSlice(), HardwareAddr: eth.Attrs().HardwareAddr}
	if err := n.host.NeighSet(neigh); err != nil {
		return fmt.Errorf("neighbour entry of %v: %w", a.IP, err)
	}
	return nil
}

// spareDir holds namespaces made ahead of need; its name cannot be an id.
func (n *Node) spareDir() string { return filepath.Join(n.cfg.StateDir, "netns", ".spare") }

// takeSpare hands out a ready namespace if one is waiting.
func (n *Node) takeSpare() (string, bool) {
	if n.spares == nil {
		return "", false
	}
	select {
	case path := <-n.spares:
		return path, true
	default:
		return "", false
	}
}

// askRefill wakes keepSpares.
func (n *Node) askRefill() {
	select {
	case n.refill <- struct{}{}:
	default:
	}
}

// keepSpares keeps cfg.SpareNetNS namespaces ready until stop closes.
func (n *Node) keepSpares(stop <-chan struct{}) {
	defer close(n.sparesDone)
	seq := 0
	for {
		for len(n.spares) < cap(n.spares) {
			seq++
			path := filepath.Join(n.spareDir(), strconv.Itoa(seq))
			if err := netns.Create(path, prepareNS); err != nil {
				break // retried on the next request or tick
			}
			n.spares <- path
		}
		select {
		case <-stop:
			return
		case <-n.refill:
		case <-time.After(10 * time.Second):
		}
	}
}

// SparesReady is how many spare namespaces are waiting.
func (n *Node) SparesReady() int { return len(n.spares) }

// dropSpares removes every spare namespace, waiting or left by a previous run.
func (n *Node) dropSpares() {
	for len(n.spares) > 0 {
		_ = netns.Delete(<-n.spares)
	}
	ents, _ := os.ReadDir(n.spareDir())
	for _, e := range ents {
		_ = netns.Delete(filepath.Join(n.spareDir(), e.Name()))
	}
}

// Detach removes id's veth, namespace, resolv.conf and address. Detaching
// an unknown id is not an error. The runtime should have stopped the
// container: a process still inside keeps the namespace and its veth
// alive, though down and so cut off (ReleaseStale deletes such veths).
func (n *Node) Detach(ctx context.Context, id string) error {
	if err := validID(id); err != nil {
		return err
	}
	defer n.lock(id)()
	if err := n.usable(ctx); err != nil {
		return err
	}
	return n.teardown(id, false)
}

// teardown undoes Attach. With wait it deletes the veth itself (≈ 20 ms:
// the kernel waits for a grace period), which a re-Attach under the same
// name needs. Without, it only takes the veth down, which cuts the
// container off at once, and leaves the deletion to the kernel when the
// namespace dies, off the caller's path.
func (n *Node) teardown(id string, wait bool) error {
	var errs []error
	if l, err := n.host.LinkByName(n.vethName(id)); err == nil {
		if wait {
			err = n.host.LinkDel(l)
		} else {
			err = n.host.LinkSetDown(l)
		}
		var nf netlink.LinkNotFoundError
		if err != nil && !errors.Is(err, unix.ENODEV) && !errors.As(err, &nf) {
			errs = append(errs, fmt.Errorf("veth of %s: %w", id, err))
		}
	}
	if err := netns.Delete(n.nsPath(id)); err != nil {
		errs = append(errs, err)
	}
	if err := os.Remove(n.resolvPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, err)
	}
	// The address goes last and only if the rest went: an address must not
	// be reused while a veth may still carry it.
	if len(errs) == 0 {
		if ip, ok := n.ips.Lookup(id); ok {
			// Its neighbour entry goes with it: it names a MAC now gone.
			err := n.host.NeighDel(&netlink.Neigh{LinkIndex: n.bridge, Family: unix.AF_INET, IP: ip.AsSlice()})
			if err != nil && !errors.Is(err, unix.ENOENT) {
				errs = append(errs, fmt.Errorf("neighbour entry of %v: %w", ip, err))
			}
		}
	}
	if len(errs) == 0 {
		if _, err := n.ips.Release(id); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Attachments lists the ids holding an address, with their attachments.
func (n *Node) Attachments() []Attachment {
	var out []Attachment
	for id, ip := range n.ips.Assigned() {
		out = append(out, Attachment{ID: id, NetNS: n.nsPath(id), IP: ip, Gateway: n.gw,
			ResolvConf: n.resolvPath(id), HostVeth: n.vethName(id)})
	}
	slices.SortFunc(out, func(a, b Attachment) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// ReleaseStale detaches everything that is not in live: addresses,
// pinned namespaces, resolv.conf files and veths on the bridge left by
// containers that no longer exist (e.g. removed while the agent was down).
// It returns the ids it detached.
func (n *Node) ReleaseStale(ctx context.Context, live []string) ([]string, error) {
	if err := n.usable(ctx); err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	keepVeth := map[string]bool{}
	for _, id := range live {
		keep[id] = true
		keepVeth[n.vethName(id)] = true
	}
	stale := map[string]bool{}
	for id := range n.ips.Assigned() {
		stale[id] = true
	}
	for _, dir := range []string{"netns", "resolv"} {
		ents, _ := os.ReadDir(filepath.Join(n.cfg.StateDir, dir))
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), ".") { // .spare
				stale[strings.TrimSuffix(e.Name(), ".conf")] = true
			}
		}
	}
	var gone []string
	var errs []error
	for id := range stale {
		if keep[id] || validID(id) != nil {
			continue
		}
		if err := n.Detach(ctx, id); err != nil {
			errs = append(errs, err)
			continue
		}
		gone = append(gone, id)
	}
	// Veths whose id we no longer know (state dir lost).
	links, err := n.host.LinkList()
	if err != nil {
		errs = append(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range links {
		name := l.Attrs().Name
		if l.Attrs().MasterIndex != n.bridge || !strings.HasPrefix(name, "vb") || keepVeth[name] {
			continue
		}
		var nf netlink.LinkNotFoundError
		if err := n.host.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) && !errors.As(err, &nf) {
			errs = append(errs, fmt.Errorf("delete orphan veth %s: %w", name, err))
		}
	}
	slices.Sort(gone)
	return gone, errors.Join(errs...)
}

// ListenDNS opens UDP and TCP sockets on the gateway's port 53 in the host
// namespace, for a dns.Server to Serve on: that is where containers'
// resolv.conf points. The caller closes them (Serve does on return).
func (n *Node) ListenDNS(ctx context.Context) (net.PacketConn, net.Listener, error) {
	addr := net.JoinHostPort(n.gw.String(), "53")
	var pc net.PacketConn
	var l net.Listener
	err := n.inHost(func() error {
		var lc net.ListenConfig
		var err error
		if pc, err = lc.ListenPacket(ctx, "udp4", addr); err != nil {
			return err
		}
		if l, err = lc.Listen(ctx, "tcp4", addr); err != nil {
			_ = pc.Close()
			return err
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("dns sockets on %s: %w", addr, err)
	}
	return pc, l, nil
}
