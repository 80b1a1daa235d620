package controller

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/network/ipam"
)

// Network is what the control plane hands out so that it is unique
// across the cluster: a pod subnet per node and a virtual IP per service.
type Network struct {
	// ClusterCIDR holds every node's pod subnet.
	ClusterCIDR netip.Prefix
	// NodeBits is the length of each node's subnet; 24 when zero.
	NodeBits int
	// ServiceCIDR holds the services' virtual IPs.
	ServiceCIDR netip.Prefix
}

// DefaultNetwork is what `berth up` and `berth server` use unless told otherwise.
var DefaultNetwork = Network{
	ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
	NodeBits:    24,
	ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"),
}

// assignSubnets gives every node without a pod subnet the first free one.
// Nodes keep theirs for life: containers already hold addresses in it.
func (m *Manager) assignSubnets(ctx context.Context, sn *snapshot) error {
	n := m.opt.Network
	if !n.ClusterCIDR.IsValid() {
		return nil
	}
	// Nodes as they were when each had its subnet still have them: at
	// 15,000 nodes, parsing every node's subnet was a third of a pass
	// with a few services to see to.
	if sn.nodeGen != 0 && sn.nodeGen == m.subnetsDone {
		return nil
	}
	bits := n.NodeBits
	if bits == 0 {
		bits = 24
	}
	var taken []netip.Prefix
	var want []*api.Node
	seen := map[netip.Prefix]string{}
	for _, node := range sn.nodes {
		p, err := netip.ParsePrefix(node.Spec.PodSubnet)
		if node.Spec.PodSubnet == "" || err != nil {
			want = append(want, node)
			continue
		}
		if other, dup := seen[p]; dup {
			m.log.Warn("two nodes hold one pod subnet", "subnet", p, "nodes", []string{other, node.Metadata.Name})
		}
		seen[p] = node.Metadata.Name
		taken = append(taken, p)
	}
	if len(want) == 0 {
		m.subnetsDone = sn.nodeGen
		return nil
	}
	subnets, err := ipam.NewSubnets(n.ClusterCIDR, bits, taken)
	if err != nil {
		return fmt.Errorf("pod subnets: %w", err)
	}
	var errs []error
	for i, node := range want {
		p, err := subnets.Next()
		if errors.Is(err, ipam.ErrExhausted) {
			// One error for all the nodes left: the pass after a thousand
			// nodes joined a full network must not log a thousand.
			errs = append(errs, fmt.Errorf("%d nodes (%s first) without a pod subnet: %w", len(want)-i, node.Metadata.Name, err))
			break
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("node %s: pod subnet: %w", node.Metadata.Name, err))
			continue
		}
		node = own(node)
		node.Spec.PodSubnet = p.String()
		if err := m.s.Update(ctx, node, node.Metadata.Revision); err != nil {
			if !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("node %s: pod subnet: %w", node.Metadata.Name, err))
			}
			m.again()
			continue
		}
		m.event(ctx, node, api.EventNormal, "PodSubnet", "pod subnet "+p.String())
	}
	return errors.Join(errs...)
}

// vips hands out service VIPs for one pass: those already in the store
// are claimed first (a duplicate loses its claim and gets a new one).
type vips struct {
	pool *ipam.Pool
}

func (m *Manager) newVIPs(sn *snapshot) *vips {
	cidr := m.opt.Network.ServiceCIDR
	if !cidr.IsValid() {
		return nil
	}
	// Most passes hand out nothing: every service holds a VIP of its own
	// in range. Those need no pool.
	held := make(map[netip.Addr]bool, len(sn.services))
	settled := true
	for _, svc := range sn.services {
		a, err := netip.ParseAddr(svc.Status.VIP)
		if err != nil || !cidr.Contains(a) || held[a] || edge(cidr, a) {
			settled = false
			break
		}
		held[a] = true
	}
	if settled {
		return &vips{}
	}
	pool, err := ipam.NewPool(cidr)
	if err != nil {
		m.log.Warn("service CIDR", "cidr", cidr, "err", err)
		return nil
	}
	for _, svc := range sn.services {
		if a, err := netip.ParseAddr(svc.Status.VIP); err == nil {
			_ = pool.Claim(vipOwner(svc), a) // a lost claim shows as a mismatch in forService
		}
	}
	return &vips{pool: pool}
}

// edge says a is the network or broadcast address of an IPv4 prefix,
// which a pool never hands out.
func edge(p netip.Prefix, a netip.Addr) bool {
	if !a.Is4() || p.Bits() >= 31 {
		return false
	}
	p = p.Masked()
	first := p.Addr()
	b := first.As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3]) | host
	last := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
	return a == first || a == last
}

// vipOwner names a VIP's claimant by its UID: unique, and a service
// made again under the same name is another claimant.
func vipOwner(svc *api.Service) string { return svc.Metadata.UID }

// forService is the VIP the service should have: its own when it holds
// the claim, else a new one ("" when none is left).
func (v *vips) forService(svc *api.Service) (string, error) {
	if v == nil || v.pool == nil {
		return svc.Status.VIP, nil
	}
	if a, ok := v.pool.Lookup(vipOwner(svc)); ok {
		return a.String(), nil
	}
	a, err := v.pool.Allocate(vipOwner(svc))
	if err != nil {
		return "", fmt.Errorf("%s: virtual IP from %v: %w", api.RefOf(svc), v.pool.Prefix(), err)
	}
	return a.String(), nil
}

// again asks for another pass soon, for work this one could not finish.
func (m *Manager) again() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}
