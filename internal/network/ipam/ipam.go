// Package ipam hands out addresses from a prefix: container addresses on a
// node (Store, persisted so that a restarted agent neither leaks nor
// double-assigns), service VIPs from the service CIDR (Pool, kept by whoever
// owns the service objects), and per-node subnets out of the cluster CIDR
// (NextSubnet).
//
// Vocabulary: an allocation binds an owner id (a container or service key)
// to one address. Allocation is idempotent per id: asking again for the same
// id returns the same address.
package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
)

// Error categories; wrapped with the prefix or id they concern.
var (
	ErrExhausted  = errors.New("no free address")
	ErrConflict   = errors.New("address already assigned")
	ErrOutOfRange = errors.New("address outside the pool")
	ErrInvalid    = errors.New("invalid argument")
)

// Pool is an in-memory allocator over one prefix. It is not safe for
// concurrent use; Store adds locking and persistence.
type Pool struct {
	prefix      netip.Prefix
	first, last netip.Addr
	reserved    map[netip.Addr]bool
	byID        map[string]netip.Addr
	byAddr      map[netip.Addr]string
	// next is where the following search starts, and released says when
	// (a sequence number, higher is later) each free address was last
	// released: an address never used is handed out first, in round-robin
	// order from next, and else the one released longest ago. A
	// just-released address (and any stale ARP or conntrack state naming
	// it) so stays out of use while others are free, even once a small
	// pool has wrapped.
	next     netip.Addr
	released map[netip.Addr]uint64
	seq      uint64
}

// NewPool returns an empty pool over prefix. For IPv4 prefixes shorter
// than /31 the network and broadcast addresses are never handed out;
// reserved addresses (e.g. the gateway) are never handed out either.
func NewPool(prefix netip.Prefix, reserved ...netip.Addr) (*Pool, error) {
	if !prefix.IsValid() {
		return nil, fmt.Errorf("pool prefix %v: %w", prefix, ErrInvalid)
	}
	prefix = prefix.Masked()
	first, last := prefix.Addr(), lastAddr(prefix)
	if prefix.Addr().Is4() && prefix.Bits() < 31 {
		first, last = first.Next(), last.Prev()
	}
	p := &Pool{
		prefix:   prefix,
		first:    first,
		last:     last,
		reserved: map[netip.Addr]bool{},
		byID:     map[string]netip.Addr{},
		byAddr:   map[netip.Addr]string{},
		next:     first,
		released: map[netip.Addr]uint64{},
	}
	for _, a := range reserved {
		if !prefix.Contains(a) {
			return nil, fmt.Errorf("reserved address %v in pool %v: %w", a, prefix, ErrOutOfRange)
		}
		p.reserved[a] = true
	}
	return p, nil
}

// Prefix returns the pool's prefix.
func (p *Pool) Prefix() netip.Prefix { return p.prefix }

// Allocate returns id's address, assigning a free one if id has none.
func (p *Pool) Allocate(id string) (netip.Addr, error) {
	if id == "" {
		return netip.Addr{}, fmt.Errorf("allocate in %v: empty id: %w", p.prefix, ErrInvalid)
	}
	if a, ok := p.byID[id]; ok {
		return a, nil
	}
	var best netip.Addr
	var bestSeq uint64
	a := p.next
	for range min(p.size(), maxScan) {
		if p.usable(a) {
			seq, used := p.released[a]
			if !used {
				best = a
				break // never used: nothing is better
			}
			if !best.IsValid() || seq < bestSeq {
				best, bestSeq = a, seq
			}
		}
		a = p.wrap(a.Next())
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("allocate %q in %v: %w", id, p.prefix, ErrExhausted)
	}
	p.assign(id, best)
	p.next = p.wrap(best.Next())
	return best, nil
}

// maxScan bounds one search for the address released longest ago; beyond
// it (pools of more than a /16) the best found so far is taken.
const maxScan = 1 << 16

// markReleased records that a was released at sequence seq, as a Store
// reopened reads it back: it orders the reuse of free addresses.
func (p *Pool) markReleased(a netip.Addr, seq uint64) {
	p.released[a] = seq
	p.seq = max(p.seq, seq)
}

// Claim records that id holds a, e.g. when loading persisted state or when
// a service asks for a specific VIP.
func (p *Pool) Claim(id string, a netip.Addr) error {
	if id == "" {
		return fmt.Errorf("claim %v in %v: empty id: %w", a, p.prefix, ErrInvalid)
	}
	if !p.inRange(a) || p.reserved[a] {
		return fmt.Errorf("claim %v for %q in %v: %w", a, id, p.prefix, ErrOutOfRange)
	}
	if owner, ok := p.byAddr[a]; ok {
		if owner == id {
			return nil
		}
		return fmt.Errorf("claim %v for %q: held by %q: %w", a, id, owner, ErrConflict)
	}
	if old, ok := p.byID[id]; ok {
		return fmt.Errorf("claim %v for %q: it holds %v: %w", a, id, old, ErrConflict)
	}
	p.assign(id, a)
	return nil
}

// Release frees id's address and reports it; false if id held none.
func (p *Pool) Release(id string) (netip.Addr, bool) {
	a, ok := p.byID[id]
	if !ok {
		return netip.Addr{}, false
	}
	delete(p.byID, id)
	delete(p.byAddr, a)
	p.seq++
	p.released[a] = p.seq
	return a, true
}

// Lookup returns id's address.
func (p *Pool) Lookup(id string) (netip.Addr, bool) {
	a, ok := p.byID[id]
	return a, ok
}

// Owner returns the id holding a.
func (p *Pool) Owner(a netip.Addr) (string, bool) {
	id, ok := p.byAddr[a]
	return id, ok
}

// Assigned returns a copy of every allocation, keyed by id.
func (p *Pool) Assigned() map[string]netip.Addr { return maps.Clone(p.byID) }

// Len is the number of allocations.
func (p *Pool) Len() int { return len(p.byID) }

func (p *Pool) assign(id string, a netip.Addr) {
	p.byID[id] = a
	p.byAddr[a] = id
	delete(p.released, a)
}

func (p *Pool) usable(a netip.Addr) bool {
	_, taken := p.byAddr[a]
	return !taken && !p.reserved[a]
}

func (p *Pool) inRange(a netip.Addr) bool {
	return a.IsValid() && p.prefix.Contains(a) && a.Compare(p.first) >= 0 && a.Compare(p.last) <= 0
}

func (p *Pool) wrap(a netip.Addr) netip.Addr {
	if !a.IsValid() || a.Compare(p.last) > 0 {
		return p.first
	}
	return a
}

// size bounds a full scan; huge IPv6 pools are capped, which only limits
// how long a search for a free address may run in a nearly full pool.
func (p *Pool) size() int {
	host := p.prefix.Addr().BitLen() - p.prefix.Bits()
	if host >= 24 {
		return 1 << 24
	}
	return 1 << host
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// NextSubnet returns the first subnet of length bits inside cluster that
// overlaps none of taken. The control plane calls it when a node joins and
// stores the result on the Node, so that nodes never overlap.
func NextSubnet(cluster netip.Prefix, bits int, taken []netip.Prefix) (netip.Prefix, error) {
	s, err := NewSubnets(cluster, bits, taken)
	if err != nil {
		return netip.Prefix{}, err
	}
	return s.Next()
}

// Subnets hands out, in order, the subnets of one length inside a
// cluster network that overlap none of those taken. Handing out many at
// once (a thousand nodes joining) reads the taken ones once: NextSubnet
// per node read them all for each, and searched again from the start.
type Subnets struct {
	cluster netip.Prefix
	bits    int
	same    map[netip.Prefix]bool
	other   []netip.Prefix
	cand    netip.Prefix // where the search goes on: all before it are taken
	left    int          // candidates not yet looked at
}

// NewSubnets starts handing out subnets of length bits inside cluster,
// none overlapping taken.
func NewSubnets(cluster netip.Prefix, bits int, taken []netip.Prefix) (*Subnets, error) {
	cluster = cluster.Masked()
	if !cluster.IsValid() || bits < cluster.Bits() || bits > cluster.Addr().BitLen() {
		return nil, fmt.Errorf("subnet /%d of %v: %w", bits, cluster, ErrInvalid)
	}
	s := &Subnets{cluster: cluster, bits: bits, same: make(map[netip.Prefix]bool, len(taken)),
		cand: netip.PrefixFrom(cluster.Addr(), bits), left: 1 << min(bits-cluster.Bits(), 24)}
	for _, t := range taken {
		switch {
		case t.Bits() == bits:
			s.same[t.Masked()] = true
		case t.Overlaps(cluster):
			s.other = append(s.other, t.Masked())
		}
	}
	return s, nil
}

// Next returns the first free subnet and counts it as taken from then on;
// ErrExhausted once none is left.
func (s *Subnets) Next() (netip.Prefix, error) {
	for s.left > 0 {
		cand := s.cand
		s.left--
		if next := lastAddr(cand).Next(); next.IsValid() && s.cluster.Contains(next) {
			s.cand = netip.PrefixFrom(next, s.bits)
		} else {
			s.left = 0
		}
		free := !s.same[cand]
		for _, t := range s.other {
			if free && t.Overlaps(cand) {
				free = false
			}
		}
		if free {
			s.same[cand] = true
			return cand, nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("subnet /%d of %v: %w", s.bits, s.cluster, ErrExhausted)
}
