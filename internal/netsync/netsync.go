// Package netsync keeps the node's network in step with the API: package
// network is the kernel side (bridge, veths, nftables, DNS server); this
// package is the agent's reconciling of it. It sets up the bridge,
// addresses containers, and keeps the node's service VIPs,
// published ports and DNS names equal to what the API says, following
// services and instances with a list and a watch (as kube-proxy follows
// endpoints), one service's elements at a time. Following nodes the same
// way, it routes every other node's pod subnet via that node's address.
package netsync

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/dns"
	"github.com/berth-dev/berth/internal/network/vip"
)

// Config says where the node's network lives.
type Config struct {
	// Client reads services, instances and nodes.
	Client *client.Client
	// Node is this node's name: every other node's pod subnet is routed
	// via that node's address.
	Node string
	// Subnet is the node's pod subnet, from its Node object.
	Subnet      netip.Prefix
	ClusterCIDR netip.Prefix
	ServiceCIDR netip.Prefix
	// StateDir keeps addresses and pinned namespaces across restarts.
	StateDir string
	// Bridge, NodeTable and ServiceTable name what the plane owns on the
	// host; defaults "berth0", "berth-node", "berth-svc".
	Bridge       string
	NodeTable    string
	ServiceTable string
	// Upstreams answer names outside the cluster domain; by default the
	// host's resolv.conf nameservers.
	Upstreams []string
	// SpareNetNS namespaces are made ahead of need. None by default: on
	// a small machine, refilling them competes with the start they were
	// to speed up (measured: no gain on 2 cores).
	SpareNetNS int
	Logger     *slog.Logger
}

// Plane is a node's network, running.
type Plane struct {
	cfg  Config
	log  *slog.Logger
	node *network.Node
	svcs *network.Services

	cancel context.CancelFunc
	wg     sync.WaitGroup

	// isolated is the isolation last programmed (fmt of network.Isolation).
	isolated string

	mu     sync.Mutex
	synced bool           // a full Sync has been done since start
	peers  []network.Peer // as last set
}

// What the plane owns on the host unless Config names others; `berth
// down --purge` removes them.
const (
	DefaultBridge       = "berth0"
	DefaultNodeTable    = "berth-node"
	DefaultServiceTable = "berth-svc"
)

// Start sets up the node's bridge, tables and DNS server, and starts
// following the API. The plane runs until ctx ends or Close.
func Start(ctx context.Context, cfg Config) (*Plane, error) {
	if cfg.Bridge == "" {
		cfg.Bridge = DefaultBridge
	}
	if cfg.NodeTable == "" {
		cfg.NodeTable = DefaultNodeTable
	}
	if cfg.ServiceTable == "" {
		cfg.ServiceTable = DefaultServiceTable
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Upstreams == nil {
		cfg.Upstreams = hostResolvers("/etc/resolv.conf")
	}
	node, err := network.NewNode(ctx, network.Config{
		Bridge: cfg.Bridge, Subnet: cfg.Subnet, ClusterCIDR: cfg.ClusterCIDR, ServiceCIDR: cfg.ServiceCIDR,
		StateDir: cfg.StateDir, Table: cfg.NodeTable, SpareNetNS: max(cfg.SpareNetNS, 0),
	})
	if err != nil {
		return nil, fmt.Errorf("node network %s on %s: %w", cfg.Subnet, cfg.Bridge, err)
	}
	svcs, err := network.NewServices(ctx, vip.Config{Table: cfg.ServiceTable, LocalSubnet: cfg.Subnet},
		dns.Config{Upstreams: cfg.Upstreams, SyncWait: dnsSyncWait})
	if err != nil {
		node.Close()
		return nil, fmt.Errorf("service tables: %w", err)
	}
	pc, l, err := node.ListenDNS(ctx)
	if err != nil {
		svcs.Close()
		node.Close()
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("%w: another berth (with another --data-dir) or a DNS server holds the node's bridge %s; one node per host", err, cfg.Bridge)
		}
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	p := &Plane{cfg: cfg, log: cfg.Logger.With("component", "netsync"), node: node, svcs: svcs, cancel: cancel}
	p.wg.Go(func() {
		if err := svcs.DNS().Serve(ctx, pc, l); err != nil && ctx.Err() == nil {
			p.log.Error("dns server stopped", "err", err)
		}
	})
	p.wg.Go(func() { p.follow(ctx) })
	peers := &peerFollower{client: cfg.Client, self: cfg.Node, own: cfg.Subnet, set: p.setPeers, log: p.log}
	p.wg.Go(func() { peers.follow(ctx) })
	return p, nil
}

// dnsSyncWait is how long the node's DNS server holds a query for a
// cluster name until the plane has listed the services once (see
// dns.Config.SyncWait), across a restart of the node's agent: within
// glibc's 5 s timeout, so that the query is answered, not failed (musl
// asks again meanwhile, and takes whichever answer comes).
const dnsSyncWait = 4 * time.Second

// Close stops following the API and the DNS server. What is programmed
// stays: containers keep their addresses and services keep answering
// until a restarted plane takes over.
func (p *Plane) Close() {
	p.cancel()
	p.wg.Wait()
	_ = p.svcs.Close()
	p.node.Close()
}

// Attachment is a container's place on the network.
type Attachment = network.Attachment

// Attach gives container id an address and a namespace to run in.
func (p *Plane) Attach(ctx context.Context, id, namespace string) (Attachment, error) {
	return p.node.Attach(ctx, id, namespace)
}

// Reserve gives container id its address now and returns wire, which
// makes its namespace; see network.Node.Reserve.
func (p *Plane) Reserve(ctx context.Context, id, namespace string) (Attachment, func() error, error) {
	return p.node.Reserve(ctx, id, namespace)
}

// Detach takes container id off the network and frees its address.
func (p *Plane) Detach(ctx context.Context, id string) error { return p.node.Detach(ctx, id) }

// CheckHostPort reports whether an instance of service (namespace/name;
// empty for a job's instance) may publish host port port/protocol here:
// free, or published for that service already.
func (p *Plane) CheckHostPort(service, protocol string, port int) error {
	proto := vip.TCP
	if protocol == "udp" {
		proto = vip.UDP
	}
	return p.svcs.CheckHostPort(service, proto, uint16(port))
}

// ReleaseStale frees what containers no longer alive hold.
func (p *Plane) ReleaseStale(ctx context.Context, live []string) error {
	gone, err := p.node.ReleaseStale(ctx, live)
	if len(gone) > 0 {
		p.log.Info("released stale container networks", "count", len(gone))
	}
	return err
}

// Synced says whether the service tables have caught up with the API once.
func (p *Plane) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
}

// follow lists services and instances, syncs everything, then applies
// changes as they come; a broken watch starts it over (Sync then sends
// only the difference).
func (p *Plane) follow(ctx context.Context) {
	const first = 100 * time.Millisecond
	backoff := first
	for ctx.Err() == nil {
		began := time.Now()
		err := p.followOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(began) > resyncEvery {
			backoff = first // it followed a good while: a break of its own
		}
		p.log.Warn("following services; starting over", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// resyncEvery bounds how long a table can stay out of step with the API.
const resyncEvery = time.Minute

type change struct {
	svc  *client.WatchEvent[*api.Service]
	inst *client.WatchEvent[*api.Instance]
}

func (p *Plane) followOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	svcs, srev, err := p.cfg.Client.Services().List(ctx, "")
	if err != nil {
		return err
	}
	insts, irev, err := p.cfg.Client.Instances().List(ctx, "")
	if err != nil {
		return err
	}
	sw, err := p.cfg.Client.Services().Watch(ctx, "", srev)
	if err != nil {
		return err
	}
	iw, err := p.cfg.Client.Instances().Watch(ctx, "", irev)
	if err != nil {
		return err
	}
	st, err := p.syncAll(ctx, svcs, insts)
	if err != nil {
		return err
	}
	return p.followChanges(ctx, st, mergeWatches(ctx, sw, iw))
}

// syncAll programs the node's services from a full listing.
func (p *Plane) syncAll(ctx context.Context, svcs []*api.Service, insts []*api.Instance) (*state, error) {
	st := newState()
	for _, s := range svcs {
		st.putService(s)
	}
	for _, in := range insts {
		st.putInstance(in)
	}
	unpublished, err := p.svcs.Sync(ctx, st.all())
	if err != nil {
		return nil, fmt.Errorf("sync services: %w", err)
	}
	if unpublished != nil {
		p.log.Warn("host ports not published", "err", unpublished)
	}
	p.isolate(st)
	p.mu.Lock()
	p.synced = true
	p.mu.Unlock()
	p.log.Debug("services synced", "services", len(svcs), "instances", len(insts))
	return st, nil
}

// mergeWatches is the service and instance watches' events in one
// channel, until ctx ends. A watch that closes is a change too, with an
// error (the last one it sent may have said why): the follower must hear
// of it and start over, or it would wait on a watch that is gone.
func mergeWatches(ctx context.Context, sw <-chan client.WatchEvent[*api.Service], iw <-chan client.WatchEvent[*api.Instance]) <-chan change {
	changes := make(chan change, 256)
	pump := func(f func() (change, bool)) {
		for {
			c, open := f()
			select {
			case changes <- c:
			case <-ctx.Done():
				return
			}
			if !open {
				return
			}
		}
	}
	go pump(func() (change, bool) {
		ev, ok := <-sw
		if !ok {
			ev = client.WatchEvent[*api.Service]{Err: errors.New("service watch closed")}
		}
		return change{svc: &ev}, ok
	})
	go pump(func() (change, bool) {
		ev, ok := <-iw
		if !ok {
			ev = client.WatchEvent[*api.Instance]{Err: errors.New("instance watch closed")}
		}
		return change{inst: &ev}, ok
	})
	return changes
}

// followChanges programs each service a change touches, until a change
// cannot be applied or ctx ends.
func (p *Plane) followChanges(ctx context.Context, st *state, changes <-chan change) error {
	dirty := map[string]bool{}
	// Now and then the tables are compared with the whole state: a change
	// the kernel refused once, or a table edited by hand, is put right.
	resync := time.NewTicker(resyncEvery)
	defer resync.Stop()
	for {
		var c change
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-resync.C:
			unpublished, err := p.svcs.Sync(ctx, st.all())
			if err := errors.Join(unpublished, err); err != nil {
				p.log.Warn("resync services", "err", err)
			}
			p.isolated = "" // programmed again, in case the table was changed by hand
			p.isolate(st)
			continue
		case c = <-changes:
		}
		// Take everything already queued, then program each touched service once.
		for {
			if err := st.apply(c, dirty); err != nil {
				return err
			}
			select {
			case c = <-changes:
				continue
			default:
			}
			break
		}
		for key := range dirty {
			if err := p.program(ctx, st, key); err != nil {
				return err
			}
			delete(dirty, key)
		}
		p.isolate(st)
	}
}

// isolate programs which instances on named networks reach each other,
// when that changed.
func (p *Plane) isolate(st *state) {
	iso := st.isolation()
	sig := fmt.Sprint(iso)
	if sig == p.isolated {
		return
	}
	if err := p.node.SetIsolation(iso); err != nil {
		p.log.Warn("program network isolation", "err", err)
		return
	}
	p.isolated = sig
}

func (p *Plane) program(ctx context.Context, st *state, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, ok := st.service(key)
	if !ok {
		if err := p.svcs.Remove(ctx, ns, name); err != nil && !errors.Is(err, vip.ErrNotFound) {
			return fmt.Errorf("remove service %s: %w", key, err)
		}
		return nil
	}
	if err := p.svcs.Upsert(ctx, svc); err != nil {
		// One service the kernel refuses must not stop the others.
		p.log.Warn("program service", "service", key, "err", err)
		return nil
	}
	p.log.Debug("service programmed", "service", key, "instances", svc.Instances)
	return nil
}

// hostResolvers reads the nameservers of the host's resolv.conf as
// "addr:53". The DNS server runs in the host's namespace, so loopback
// resolvers (systemd-resolved's 127.0.0.53) work too.
func hostResolvers(path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return []string{}
	}
	defer f.Close()
	out := []string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "nameserver" {
			if a, err := netip.ParseAddr(fields[1]); err == nil {
				out = append(out, net.JoinHostPort(a.String(), "53"))
			}
		}
	}
	return out
}
