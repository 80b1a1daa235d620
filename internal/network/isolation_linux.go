package network

import (
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Isolation says which instances may reach each other. Members are the
// addresses of instances on named networks (a Compose project's several
// networks); between two members, only Pairs pass (both directions are
// listed, and an address with itself). Traffic with anything that is not
// a member is left alone. Pod-to-pod traffic is routed through the node
// (see README), so the forward hook sees it, after a VIP's DNAT: a
// service's address is isolated as its instances are.
type Isolation struct {
	Members []netip.Addr
	Pairs   [][2]netip.Addr
}

// Names in the node's table.
const (
	isoChain   = "isolate"
	isoMembers = "iso_members"
	isoPairs   = "iso_pairs"
)

// SetIsolation rewrites the node table's forward filter and its sets in
// one transaction:
//
//	ip saddr @iso_members ip daddr @iso_members ip saddr . ip daddr != @iso_pairs drop
func (n *Node) SetIsolation(iso Isolation) error {
	var opts []nftables.ConnOption
	if n.hosts >= 0 {
		opts = append(opts, nftables.WithNetNSFd(int(n.hosts)))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return fmt.Errorf("nft table %s: isolation: %w", n.cfg.Table, err)
	}
	t := c.AddTable(&nftables.Table{Name: n.cfg.Table, Family: nftables.TableFamilyIPv4})
	members := &nftables.Set{Table: t, Name: isoMembers, KeyType: nftables.TypeIPAddr}
	pairs := &nftables.Set{Table: t, Name: isoPairs, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)}
	for _, s := range []*nftables.Set{members, pairs} {
		if err := c.AddSet(s, nil); err != nil {
			return fmt.Errorf("nft table %s: set %s: %w", n.cfg.Table, s.Name, err)
		}
		c.FlushSet(s)
	}
	var me []nftables.SetElement
	for _, a := range iso.Members {
		if a.Is4() {
			me = append(me, nftables.SetElement{Key: a.AsSlice()})
		}
	}
	var pe []nftables.SetElement
	for _, p := range iso.Pairs {
		if p[0].Is4() && p[1].Is4() {
			pe = append(pe, nftables.SetElement{Key: append(p[0].AsSlice(), p[1].AsSlice()...)})
		}
	}
	if len(me) > 0 {
		if err := c.SetAddElements(members, me); err != nil {
			return fmt.Errorf("nft table %s: %s: %w", n.cfg.Table, isoMembers, err)
		}
	}
	if len(pe) > 0 {
		if err := c.SetAddElements(pairs, pe); err != nil {
			return fmt.Errorf("nft table %s: %s: %w", n.cfg.Table, isoPairs, err)
		}
	}
	policy := nftables.ChainPolicyAccept
	ch := c.AddChain(&nftables.Chain{Name: isoChain, Table: t, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookForward, Priority: nftables.ChainPriorityFilter, Policy: &policy})
	c.FlushChain(ch)
	const regA, regB = 8, 9 // 32-bit registers: a concatenation takes consecutive ones
	c.AddRule(&nftables.Rule{Table: t, Chain: ch, Exprs: []expr.Any{
		&expr.Payload{DestRegister: regA, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: regA, SetName: isoMembers, SetID: members.ID},
		&expr.Payload{DestRegister: regB, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: regB, SetName: isoMembers, SetID: members.ID},
		&expr.Lookup{SourceRegister: regA, SetName: isoPairs, SetID: pairs.ID, Invert: true},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("nft table %s: isolation: %w", n.cfg.Table, err)
	}
	return nil
}
