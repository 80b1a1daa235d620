// Package vip programs service virtual IPs and published host ports into
// nftables, load-balancing over each service's ready endpoints.
//
// The ruleset is fixed; services and endpoints live only in maps, so one
// endpoint change is a handful of element updates in one transaction, never
// a rewrite of a rule list:
//
//	prerouting/output (nat, dstnat) → services:
//	  ip daddr . meta l4proto . th dport vmap @services        → goto lb_N
//	  fib daddr type local: meta l4proto . th dport vmap @hostports → goto hp_N
//	lb_N: dnat to ip daddr . meta l4proto . th dport . numgen random mod N map @backends
//	hp_N: dnat to meta l4proto . th dport . numgen random mod N map @hostbackends
//	lb_0, hp_0: reject (a service with no ready endpoint fails fast)
//	postrouting (nat, srcnat): DNATed traffic is masqueraded when it comes
//	  from 127/8 (a published port via loopback), from the endpoint it was
//	  sent to (ip saddr . ip daddr @hairpin), or to a published port (hp_N
//	  sets meta mark bit 0x400000), so that replies come back this way.
//
// Vocabulary: a frontend is one (VIP, protocol, port) of a service; a host
// port publishes one frontend on the node's own addresses. Each is a group
// whose backends sit in slots 0..N-1, and whose element in the verdict map
// names chain lb_N (hp_N), N being its backend count. Removing a backend
// moves the last slot into the hole, so a change of one endpoint touches at
// most three elements per group. Every rule reads its whole lookup key from
// the packet, so `nft list ruleset` can print it.
//
// The plan (plan.go) is pure: current model + desired state → element
// operations. The nftables layer (nft_linux.go) only encodes and sends them.
package vip

import (
	"cmp"
	"errors"
	"fmt"
	"net/netip"
	"slices"
)

// ErrInvalid reports a service that cannot be programmed; ErrConflict two
// services claiming the same frontend or host port; ErrNotFound an unknown service.
var (
	ErrInvalid  = errors.New("invalid service")
	ErrConflict = errors.New("conflicting service")
	ErrNotFound = errors.New("service not found")
)

// Protocol is an IP protocol number.
type Protocol uint8

// Protocols a port may use.
const (
	TCP  Protocol = 6
	UDP  Protocol = 17
	SCTP Protocol = 132
)

func (p Protocol) String() string {
	switch p {
	case TCP:
		return "tcp"
	case UDP:
		return "udp"
	case SCTP:
		return "sctp"
	}
	return fmt.Sprintf("proto-%d", uint8(p))
}

// Port is one port of a service.
type Port struct {
	Name     string // for DNS SRV records; not used here
	Protocol Protocol
	// Port is the port on the VIP.
	Port uint16
	// TargetPort is the port on each endpoint; 0 means Port.
	TargetPort uint16
	// HostPort, when non-zero, publishes the port on every local address
	// of the node, loopback included.
	HostPort uint16
}

// A Service without a VIP has no frontend: only its host ports take
// traffic (a single container's published ports). Each of its ports then
// needs a HostPort; Port is the endpoints' port unless TargetPort is set.

// Endpoint is one instance of a service. Only Ready endpoints (running and
// healthy) receive traffic.
type Endpoint struct {
	Addr  netip.Addr
	Ready bool
}

// Service is the desired data plane of one service.
type Service struct {
	// Name identifies the service, e.g. "default/web".
	Name      string
	VIP       netip.Addr
	Ports     []Port
	Endpoints []Endpoint
}

// group is what one element of @services or @hostports stands for: a
// frontend, or (host set) a published port.
type group struct {
	host  bool
	vip   netip.Addr // zero for host ports
	proto Protocol
	port  uint16
}

func (g group) String() string {
	if g.host {
		return fmt.Sprintf("host:%d/%v", g.port, g.proto)
	}
	return fmt.Sprintf("%v:%d/%v", g.vip, g.port, g.proto)
}

func compareGroups(a, b group) int {
	switch {
	case a.host != b.host:
		if a.host {
			return 1
		}
		return -1
	case a.vip != b.vip:
		return a.vip.Compare(b.vip)
	case a.proto != b.proto:
		return int(a.proto) - int(b.proto)
	}
	return int(a.port) - int(b.port)
}

type backend struct {
	addr netip.Addr
	port uint16
}

func (b backend) String() string { return fmt.Sprintf("%v:%d", b.addr, b.port) }

// model mirrors what the kernel's maps hold: per group, its slots (the
// verdict element says len(slots)); and the hairpin set.
type model struct {
	groups map[group][]backend
	chains int // lb_0..lb_chains and hp_0..hp_chains exist
	// local is the node's pod subnet. Its addresses that are a backend
	// somewhere (refs counts the slots) are in the hairpin set, so that
	// an endpoint reaching its own service through the VIP is
	// masqueraded and can receive its own reply.
	local   netip.Prefix
	refs    map[netip.Addr]int
	hairpin map[netip.Addr]bool
}

func newModel(local netip.Prefix) *model {
	return &model{groups: map[group][]backend{}, local: local,
		refs: map[netip.Addr]int{}, hairpin: map[netip.Addr]bool{}}
}

// validate checks one service on its own.
func validate(s Service) error {
	if s.Name == "" {
		return fmt.Errorf("service with VIP %v: empty name: %w", s.VIP, ErrInvalid)
	}
	if s.VIP.IsValid() && !s.VIP.Unmap().Is4() {
		return fmt.Errorf("service %q: VIP %v is not IPv4: %w", s.Name, s.VIP, ErrInvalid)
	}
	for _, p := range s.Ports {
		if p.Port == 0 || (p.Protocol != TCP && p.Protocol != UDP && p.Protocol != SCTP) {
			return fmt.Errorf("service %q: port %d/%v: %w", s.Name, p.Port, p.Protocol, ErrInvalid)
		}
		if !s.VIP.IsValid() && p.HostPort == 0 {
			return fmt.Errorf("service %q: port %d/%v: no VIP and no host port: %w", s.Name, p.Port, p.Protocol, ErrInvalid)
		}
	}
	for _, e := range s.Endpoints {
		if !e.Addr.Unmap().Is4() {
			return fmt.Errorf("service %q: endpoint %v is not IPv4: %w", s.Name, e.Addr, ErrInvalid)
		}
	}
	return nil
}

// groupsOf lists the groups a service claims.
func groupsOf(s Service) []group {
	var gs []group
	for _, p := range s.Ports {
		gs = append(gs, portGroups(s, p)...)
	}
	return gs
}

// portGroups are the groups of one port: its frontend on the VIP, if the
// service has one, and its host port, if published.
func portGroups(s Service, p Port) []group {
	var gs []group
	if s.VIP.IsValid() {
		gs = append(gs, group{vip: s.VIP.Unmap(), proto: p.Protocol, port: p.Port})
	}
	if p.HostPort != 0 {
		gs = append(gs, group{host: true, proto: p.Protocol, port: p.HostPort})
	}
	return gs
}

// add puts s's groups into want, all or none, and records them in owner,
// which says which service holds each group, to name both sides of a
// conflict.
func add(want map[group][]backend, s Service, owner map[group]string) error {
	if err := validate(s); err != nil {
		return err
	}
	mine := map[group][]backend{}
	for _, p := range s.Ports {
		target := cmp.Or(p.TargetPort, p.Port)
		var bs []backend
		for _, e := range s.Endpoints {
			if e.Ready {
				bs = append(bs, backend{e.Addr.Unmap(), target})
			}
		}
		slices.SortFunc(bs, func(a, b backend) int { return a.addr.Compare(b.addr) })
		bs = slices.Compact(bs)
		for _, g := range portGroups(s, p) {
			if o, ok := owner[g]; ok && o != s.Name {
				return fmt.Errorf("service %q: %v held by %q: %w", s.Name, g, o, ErrConflict)
			}
			if _, dup := mine[g]; dup {
				return fmt.Errorf("service %q: %v listed twice: %w", s.Name, g, ErrInvalid)
			}
			mine[g] = bs
		}
	}
	for g, bs := range mine {
		owner[g] = s.Name
		want[g] = bs
	}
	return nil
}

// flatten turns services into groups. A service that is invalid or
// conflicts with an earlier one is left out, and named in the error, so
// that one bad service does not hold the others back.
func flatten(svcs []Service) (map[group][]backend, []Service, error) {
	want := map[group][]backend{}
	owner := map[group]string{}
	names := map[string]bool{}
	var ok []Service
	var errs []error
	for _, s := range svcs {
		if names[s.Name] {
			errs = append(errs, fmt.Errorf("service %q listed twice: %w", s.Name, ErrInvalid))
			continue
		}
		if err := add(want, s, owner); err != nil {
			errs = append(errs, err)
			continue
		}
		names[s.Name] = true
		ok = append(ok, s)
	}
	return want, ok, errors.Join(errs...)
}

type opKind uint8

const (
	opAddChain   opKind = iota // create lb_<count> and hp_<count>
	opSetCount                 // verdict element of group = goto lb_<count>; replace: one exists
	opDelCount                 // delete the group's verdict element
	opSetSlot                  // backend element group . index = backend; replace: one exists
	opDelSlot                  // delete backend element group . index
	opAddHairpin               // add addr . addr to the hairpin set
	opDelHairpin               // delete addr . addr from the hairpin set
)

type op struct {
	kind    opKind
	group   group
	index   int
	count   int
	backend backend
	replace bool
	addr    netip.Addr
}

// plan computes the element operations that turn cur into want for the
// given groups (the scope); groups outside the scope are left alone. all
// says the scope is everything (a full sync). It does not modify cur:
// apply does, once the kernel accepted the operations.
func plan(cur *model, want map[group][]backend, scope []group, all bool) []op {
	var ops []op
	maxCount := 0
	for _, g := range scope {
		bs, wanted := want[g]
		old, have := cur.groups[g]
		switch {
		case !wanted && !have:
		case !wanted:
			for i := range old {
				ops = append(ops, op{kind: opDelSlot, group: g, index: i})
			}
			ops = append(ops, op{kind: opDelCount, group: g})
		default:
			next := placeSlots(old, bs)
			for i := range max(len(old), len(next)) {
				switch {
				case i >= len(next):
					ops = append(ops, op{kind: opDelSlot, group: g, index: i})
				case i >= len(old) || old[i] != next[i]:
					ops = append(ops, op{kind: opSetSlot, group: g, index: i, backend: next[i], replace: i < len(old)})
				}
			}
			if !have || len(next) != len(old) {
				ops = append(ops, op{kind: opSetCount, group: g, count: len(next), replace: have})
			}
			maxCount = max(maxCount, len(next))
		}
	}
	ops = append(ops, planHairpin(cur, ops, all)...)
	// Chains first: the verdict elements jump to them.
	var chains []op
	for n := cur.chains + 1; n <= maxCount; n++ {
		chains = append(chains, op{kind: opAddChain, count: n})
	}
	return append(chains, ops...)
}

// planHairpin works out which local addresses start or stop being a
// backend under ops. With all, every address is checked against the
// kernel's set (a full sync repairs it); otherwise only those ops touch.
func planHairpin(cur *model, ops []op, all bool) []op {
	if !cur.local.IsValid() {
		return nil
	}
	delta := map[netip.Addr]int{}
	for _, o := range ops {
		switch o.kind {
		case opSetSlot:
			if o.replace {
				delta[cur.groups[o.group][o.index].addr]--
			}
			delta[o.backend.addr]++
		case opDelSlot:
			delta[cur.groups[o.group][o.index].addr]--
		}
	}
	if all {
		for a := range cur.refs {
			delta[a] += 0
		}
		for a := range cur.hairpin {
			delta[a] += 0
		}
	}
	addrs := make([]netip.Addr, 0, len(delta))
	for a := range delta {
		if cur.local.Contains(a) {
			addrs = append(addrs, a)
		}
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	var out []op
	for _, a := range addrs {
		want := cur.refs[a]+delta[a] > 0
		switch {
		case want && !cur.hairpin[a]:
			out = append(out, op{kind: opAddHairpin, addr: a})
		case !want && cur.hairpin[a]:
			out = append(out, op{kind: opDelHairpin, addr: a})
		}
	}
	return out
}

// placeSlots keeps every surviving backend in its slot, fills holes with
// new backends, appends the rest, and fills remaining holes by moving the
// last backends down, so that few slots change.
func placeSlots(old, want []backend) []backend {
	wanted := make(map[backend]bool, len(want))
	for _, b := range want {
		wanted[b] = true
	}
	next := make([]backend, 0, max(len(old), len(want)))
	present := make(map[backend]bool, len(old))
	var holes []int
	for i, b := range old {
		if wanted[b] && !present[b] {
			present[b] = true
			next = append(next, b)
		} else {
			next = append(next, backend{})
			holes = append(holes, i)
		}
	}
	for _, b := range want {
		if present[b] {
			continue
		}
		if len(holes) > 0 {
			next[holes[0]] = b
			holes = holes[1:]
		} else {
			next = append(next, b)
		}
	}
	// Fill remaining holes from the tail.
	for len(holes) > 0 {
		last := len(next) - 1
		if h := holes[len(holes)-1]; h == last {
			holes = holes[:len(holes)-1]
			next = next[:last]
			continue
		}
		next[holes[0]] = next[last]
		next = next[:last]
		holes = holes[1:]
	}
	return next
}

// apply records ops, accepted by the kernel, in m.
func (m *model) apply(ops []op) {
	for _, o := range ops {
		switch o.kind {
		case opAddChain:
			m.chains = max(m.chains, o.count)
		case opSetCount:
			s := m.groups[o.group]
			if s == nil {
				s = []backend{}
			}
			m.groups[o.group] = s[:min(len(s), o.count)]
		case opDelCount:
			delete(m.groups, o.group)
		case opSetSlot:
			s := m.groups[o.group]
			for len(s) <= o.index {
				s = append(s, backend{})
			}
			if o.replace {
				m.ref(s[o.index].addr, -1)
			}
			m.ref(o.backend.addr, +1)
			s[o.index] = o.backend
			m.groups[o.group] = s
		case opDelSlot:
			// The count update in the same plan truncates; the slot is
			// still there to read.
			m.ref(m.groups[o.group][o.index].addr, -1)
		case opAddHairpin:
			m.hairpin[o.addr] = true
		case opDelHairpin:
			delete(m.hairpin, o.addr)
		}
	}
}

func (m *model) ref(a netip.Addr, d int) {
	if !m.local.IsValid() || !m.local.Contains(a) {
		return
	}
	m.refs[a] += d
	if m.refs[a] <= 0 {
		delete(m.refs, a)
	}
}
