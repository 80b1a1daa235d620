package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// routeProtocol marks the routes Node installs (rtnetlink protocol field),
// so that SetPeers can tell its own routes from everybody else's.
const routeProtocol netlink.RouteProtocol = 0xbe

// Peer is another node: its pod subnet is reached through its address.
type Peer struct {
	Subnet netip.Prefix
	Via    netip.Addr
}

// SetPeers makes the host's routes to other nodes' pod subnets match
// peers exactly: missing ones are added, changed ones replaced, and routes
// of nodes no longer listed removed. Via must be directly reachable.
func (n *Node) SetPeers(ctx context.Context, peers []Peer) error {
	if err := n.usable(ctx); err != nil {
		return err
	}
	want := map[netip.Prefix]netip.Addr{}
	for _, p := range peers {
		s := p.Subnet.Masked()
		if !s.Addr().Is4() || !p.Via.Is4() {
			return fmt.Errorf("peer %v via %v: %w", p.Subnet, p.Via, ErrInvalid)
		}
		if s.Overlaps(n.cfg.Subnet) {
			return fmt.Errorf("peer %v overlaps this node's subnet %v: %w", s, n.cfg.Subnet, ErrInvalid)
		}
		want[s] = p.Via
	}
	have, err := n.host.RouteListFiltered(netlink.FAMILY_V4,
		&netlink.Route{Protocol: routeProtocol, Table: unix.RT_TABLE_MAIN},
		netlink.RT_FILTER_PROTOCOL|netlink.RT_FILTER_TABLE)
	if err != nil {
		return fmt.Errorf("list peer routes: %w", err)
	}
	var errs []error
	for _, r := range have {
		if r.Dst == nil || r.Gw == nil {
			continue // not a peer route (e.g. the service CIDR's)
		}
		dst, _ := netip.AddrFromSlice(r.Dst.IP)
		ones, _ := r.Dst.Mask.Size()
		s := netip.PrefixFrom(dst.Unmap(), ones)
		gw, _ := netip.AddrFromSlice(r.Gw)
		if via, ok := want[s]; ok && via == gw.Unmap() {
			delete(want, s) // already right
			continue
		}
		if _, ok := want[s]; ok {
			continue // replaced below
		}
		if err := n.host.RouteDel(&r); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("delete route to %v: %w", s, err))
		}
	}
	for s, via := range want {
		r := &netlink.Route{
			Dst:      &net.IPNet{IP: s.Addr().AsSlice(), Mask: net.CIDRMask(s.Bits(), 32)},
			Gw:       via.AsSlice(),
			Protocol: routeProtocol,
		}
		if err := n.host.RouteReplace(r); err != nil {
			errs = append(errs, fmt.Errorf("route to %v via %v: %w", s, via, err))
		}
	}
	return errors.Join(errs...)
}
