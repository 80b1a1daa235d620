package netsync

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/network"
)

// peersOf is what the node named self, whose pod subnet is own, routes to
// the other nodes: each one's pod subnet via its address, sorted by
// subnet. A node without a subnet or without an IPv4 address a gateway
// can have (not loopback, unspecified or multicast) is left out, and so is
// one whose subnet overlaps own: routing it would take the node's own
// containers away from its bridge.
func peersOf(self string, own netip.Prefix, nodes map[string]*api.Node) []network.Peer {
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	seen := map[netip.Prefix]bool{}
	out := []network.Peer{}
	for _, name := range names {
		n := nodes[name]
		if name == self || n == nil {
			continue
		}
		subnet, err := netip.ParsePrefix(n.Spec.PodSubnet)
		if err != nil || !subnet.Addr().Is4() {
			continue
		}
		subnet = subnet.Masked()
		via, err := netip.ParseAddr(n.Spec.Address)
		if err != nil || !via.Unmap().Is4() {
			continue
		}
		via = via.Unmap()
		if via.IsLoopback() || via.IsUnspecified() || via.IsMulticast() {
			continue
		}
		if own.IsValid() && subnet.Overlaps(own) {
			continue
		}
		if seen[subnet] {
			continue // two nodes claim one subnet: the first by name keeps it
		}
		seen[subnet] = true
		out = append(out, network.Peer{Subnet: subnet, Via: via})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Subnet, out[j].Subnet
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c < 0
		}
		return a.Bits() < b.Bits()
	})
	return out
}

// peerFollower keeps a node's peer routes equal to the API's nodes.
type peerFollower struct {
	client *client.Client
	self   string
	own    netip.Prefix
	// set programs the routes; it must make them match exactly (as
	// network.Node.SetPeers does), so calling it again is harmless.
	set func(context.Context, []network.Peer) error
	log *slog.Logger
}

// follow lists nodes, sets the peers, then resets them whenever a change
// alters them; a broken watch starts it over.
func (f *peerFollower) follow(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := f.followOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		f.log.Warn("following nodes; starting over", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (f *peerFollower) followOnce(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	list, rev, err := f.client.Nodes().List(ctx, "")
	if err != nil {
		return err
	}
	w, err := f.client.Nodes().Watch(ctx, "", rev)
	if err != nil {
		return err
	}
	nodes := map[string]*api.Node{}
	for _, n := range list {
		nodes[n.Metadata.Name] = n
	}
	var applied []network.Peer
	ok := false // applied is on the host
	apply := func() {
		want := peersOf(f.self, f.own, nodes)
		if ok && slices.Equal(want, applied) {
			return
		}
		applied = want
		if err := f.set(ctx, want); err != nil {
			// Left to the next change; the routes that could be set are.
			ok = false
			f.log.Warn("set peer routes", "peers", len(want), "err", err)
			return
		}
		ok = true
		f.log.Debug("peer routes set", "peers", len(want))
	}
	apply()
	take := func(ev client.WatchEvent[*api.Node], open bool) error {
		switch {
		case !open:
			return errors.New("node watch closed")
		case ev.Err != nil:
			return ev.Err
		case ev.Object == nil: // a heartbeat
		case ev.Type == eventDeleted:
			delete(nodes, ev.Object.Metadata.Name)
		default:
			nodes[ev.Object.Metadata.Name] = ev.Object
		}
		return nil
	}
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, open := <-w:
			if err := take(ev, open); err != nil {
				return err
			}
		}
		// Take what is already queued before touching the routes.
	queued:
		for {
			select {
			case ev, open := <-w:
				if err := take(ev, open); err != nil {
					return err
				}
			default:
				break queued
			}
		}
		apply()
	}
}

// setPeers routes the other nodes' pod subnets and records what was asked.
func (p *Plane) setPeers(ctx context.Context, peers []network.Peer) error {
	err := p.node.SetPeers(ctx, peers)
	p.mu.Lock()
	p.peers = slices.Clone(peers)
	p.mu.Unlock()
	if err != nil {
		return fmt.Errorf("peers: %w", err)
	}
	return nil
}

// Peers is the other nodes' pod subnets the node routes, and the
// addresses it routes them through, as last set from the API.
func (p *Plane) Peers() []network.Peer {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.peers)
}
