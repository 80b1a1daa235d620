package vip

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Registers (32-bit numbering). A concatenated key occupies consecutive
// registers, each field padded to 4 bytes.
const (
	regA = 8  // key start; DNAT address after the backend lookup
	regB = 9  // DNAT port after the backend lookup
	regC = 10 // th dport of a VIP key; the slot of a host-port key
	regD = 11 // the slot of a VIP key
)

const (
	setServices     = "services"
	setHosts        = "hostports"
	setBackends     = "backends"
	setHostBackends = "hostbackends"
	setHairpin      = "hairpin"
	// chainLayout is an empty chain whose name says which layout the
	// table has; a table without it is rebuilt rather than misread.
	chainLayout         = "layout-1"
	chainLB             = "lb_"
	chainHP             = "hp_"
	icmpPortUnreachable = 3
	ipsDstNAT           = 1 << 5 // conntrack status bit: destination was NATed
	// hostPortMark is the packet mark bit that flags the first packet of a
	// connection to a published port (only that packet carries it).
	hostPortMark = 1 << 22
	// preChains is how many lb_N and hp_N chains a new table starts with.
	preChains = 32
	// elemsPerMsg keeps the element list attribute of one message under
	// netlink's 64 KiB attribute length; a sync sends many in one batch.
	elemsPerMsg = 512
)

// Config says where to program.
type Config struct {
	// Table is the nftables table (family ip) this programmer owns.
	Table string
	// NetNS is the path of the network namespace to program; empty means
	// the caller's.
	NetNS string
	// LocalSubnet is the node's pod subnet, if any: an endpoint in it that
	// reaches its own service's VIP and is picked is masqueraded (hairpin).
	LocalSubnet netip.Prefix
}

// Programmer owns one nftables table and keeps it equal to the services it
// is given. Its methods are safe for concurrent use.
type Programmer struct {
	mu       sync.Mutex
	cfg      Config
	nsFd     int
	conn     *nftables.Conn
	table    *nftables.Table
	sets     map[string]*nftables.Set
	m        *model
	services map[string]Service
	owner    map[group]string
	lastOps  int
}

// New opens (creating if needed) the table and reads back what it holds,
// so that a restarted agent continues from the kernel's state: call Sync
// with the full desired state next. Until then the programmer knows the
// kernel's elements but not which service they belong to, so the
// incremental methods only see services given since.
func New(ctx context.Context, cfg Config) (*Programmer, error) {
	if cfg.Table == "" {
		return nil, fmt.Errorf("vip programmer: empty table name: %w", ErrInvalid)
	}
	p := &Programmer{cfg: cfg, nsFd: -1, services: map[string]Service{}, owner: map[group]string{}}
	opts := []nftables.ConnOption{nftables.AsLasting(), nftables.WithSockOptions(bigBuffers)}
	if cfg.NetNS != "" {
		fd, err := unix.Open(cfg.NetNS, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("vip table %s: open netns %s: %w", cfg.Table, cfg.NetNS, err)
		}
		p.nsFd = fd
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		p.closeNS()
		return nil, fmt.Errorf("vip table %s: netlink: %w", cfg.Table, err)
	}
	p.conn = conn
	p.table = &nftables.Table{Name: cfg.Table, Family: nftables.TableFamilyIPv4}
	p.sets = p.setDefs()
	if err := p.load(ctx); err != nil {
		_ = p.Close()
		return nil, err
	}
	return p, nil
}

// bigBuffers lets a full sync go out as one batch: netlink refuses a send
// larger than the socket's send buffer.
func bigBuffers(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = errors.Join(
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, 256<<20),
			unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 32<<20))
	}); err != nil {
		return err
	}
	return serr
}

var (
	frontendType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	hostType     = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	backendType  = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
)

// setDefs describes the maps. Their IDs (which only name a set within one
// batch) are set here: left zero, AddSet draws them from a package-level
// counter without a lock, a data race between programmers.
func (p *Programmer) setDefs() map[string]*nftables.Set {
	return map[string]*nftables.Set{
		setServices: {Table: p.table, Name: setServices, ID: 1, IsMap: true, Concatenation: true,
			KeyType: frontendType, DataType: nftables.TypeVerdict},
		setHosts: {Table: p.table, Name: setHosts, ID: 2, IsMap: true, Concatenation: true,
			KeyType: hostType, DataType: nftables.TypeVerdict},
		setBackends: {Table: p.table, Name: setBackends, ID: 3, IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			DataType: backendType},
		setHostBackends: {Table: p.table, Name: setHostBackends, ID: 4, IsMap: true, Concatenation: true,
			KeyType:  nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService, nftables.TypeMark),
			DataType: backendType},
		setHairpin: {Table: p.table, Name: setHairpin, ID: 5, Concatenation: true,
			KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeIPAddr)},
	}
}

var setOrder = []string{setServices, setHosts, setBackends, setHostBackends, setHairpin}

// Close releases the netlink connection; the table stays programmed.
func (p *Programmer) Close() error {
	var err error
	if p.conn != nil {
		err = p.conn.CloseLasting()
	}
	p.closeNS()
	return err
}

func (p *Programmer) closeNS() {
	if p.nsFd >= 0 {
		_ = unix.Close(p.nsFd)
		p.nsFd = -1
	}
}

// Delete removes the table and everything in it (when the node leaves);
// only Close is useful afterwards.
func (p *Programmer) Delete(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	p.conn.DelTable(p.table)
	if err := p.conn.Flush(); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("delete vip table %s: %w", p.cfg.Table, err)
	}
	p.m = newModel(p.cfg.LocalSubnet)
	p.services = map[string]Service{}
	p.owner = map[group]string{}
	return nil
}

// load reads the table back into the model, or creates it.
func (p *Programmer) load(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := p.conn.ListTableOfFamily(p.cfg.Table, nftables.TableFamilyIPv4); err == nil {
		m, err := p.readModel()
		if err == nil {
			p.m = m
			return nil
		}
		// Not a layout we know: start over rather than guess.
		p.conn.DelTable(p.table)
	}
	if err := p.create(); err != nil {
		return err
	}
	p.m = newModel(p.cfg.LocalSubnet)
	p.m.chains = preChains
	return nil
}

// readModel reads the table back as the kernel holds it.
// Long because it reads the kernel's table back in one pass over its chains
// and maps, each kind decoded where it is met.
func (p *Programmer) readModel() (*model, error) {
	m := newModel(p.cfg.LocalSubnet)
	chains, err := p.conn.ListChainsOfTableFamily(nftables.TableFamilyIPv4)
	if err != nil {
		return nil, fmt.Errorf("vip table %s: list chains: %w", p.cfg.Table, err)
	}
	lb, hp := 0, 0
	layout := false
	for _, c := range chains {
		if c.Table.Name != p.cfg.Table {
			continue
		}
		layout = layout || c.Name == chainLayout
		if n, ok := strings.CutPrefix(c.Name, chainLB); ok {
			k, _ := strconv.Atoi(n)
			lb = max(lb, k)
		}
		if n, ok := strings.CutPrefix(c.Name, chainHP); ok {
			k, _ := strconv.Atoi(n)
			hp = max(hp, k)
		}
	}
	if !layout {
		return nil, fmt.Errorf("vip table %s: no chain %s: %w", p.cfg.Table, chainLayout, ErrInvalid)
	}
	m.chains = min(lb, hp) // both exist up to here
	// The verdict maps are small (one element per group) and say how many
	// slots each group has; the slots are then fetched by key.
	for _, name := range []string{setServices, setHosts} {
		es, err := p.conn.GetSetElements(p.sets[name])
		if err != nil {
			return nil, fmt.Errorf("vip table %s: read map %s: %w", p.cfg.Table, name, err)
		}
		for _, e := range es {
			g, ok := decodeGroup(name == setHosts, e.Key)
			if !ok {
				return nil, fmt.Errorf("vip table %s: malformed element in %s", p.cfg.Table, name)
			}
			n, err := verdictCount(e.Val)
			if err != nil || n > m.chains {
				return nil, fmt.Errorf("vip table %s: element %v in %s: bad verdict", p.cfg.Table, g, name)
			}
			m.groups[g] = make([]backend, n)
		}
	}
	for _, host := range []bool{false, true} {
		name := setBackends
		if host {
			name = setHostBackends
		}
		var keys [][]byte
		var where []struct {
			g group
			i int
		}
		for g, s := range m.groups {
			if g.host != host {
				continue
			}
			for i := range s {
				keys = append(keys, slotKey(g, i))
				where = append(where, struct {
					g group
					i int
				}{g, i})
			}
		}
		vals, err := p.getElements(name, keys)
		if err != nil {
			return nil, fmt.Errorf("vip table %s: %w", p.cfg.Table, err)
		}
		for j, v := range vals {
			if len(v) != 8 {
				return nil, fmt.Errorf("vip table %s: malformed element in %s", p.cfg.Table, name)
			}
			m.groups[where[j].g][where[j].i] = backend{netip.AddrFrom4([4]byte(v[:4])), binary.BigEndian.Uint16(v[4:6])}
		}
	}
	for g, s := range m.groups {
		for i, b := range s {
			if !b.addr.IsValid() {
				return nil, fmt.Errorf("vip table %s: %v slot %d empty", p.cfg.Table, g, i)
			}
			m.ref(b.addr, +1)
		}
	}
	es, err := p.conn.GetSetElements(p.sets[setHairpin])
	if err != nil {
		return nil, fmt.Errorf("vip table %s: read set %s: %w", p.cfg.Table, setHairpin, err)
	}
	for _, e := range es {
		if len(e.Key) != 8 {
			return nil, fmt.Errorf("vip table %s: malformed element in %s", p.cfg.Table, setHairpin)
		}
		m.hairpin[netip.AddrFrom4([4]byte(e.Key[:4]))] = true
	}
	return m, nil
}

func decodeGroup(host bool, k []byte) (group, bool) {
	if host {
		if len(k) != 8 {
			return group{}, false
		}
		return group{host: true, proto: Protocol(k[0]), port: binary.BigEndian.Uint16(k[4:6])}, true
	}
	if len(k) != 12 {
		return group{}, false
	}
	return group{vip: netip.AddrFrom4([4]byte(k[:4])), proto: Protocol(k[4]), port: binary.BigEndian.Uint16(k[8:10])}, true
}

// verdictCount reads N out of a "goto lb_N" (hp_N) verdict as the kernel dumps it.
func verdictCount(b []byte) (int, error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return 0, err
	}
	for ad.Next() {
		if ad.Type() == unix.NFTA_VERDICT_CHAIN {
			name := ad.String()
			n, ok := strings.CutPrefix(name, chainLB)
			if !ok {
				n, ok = strings.CutPrefix(name, chainHP)
			}
			if ok {
				return strconv.Atoi(n)
			}
		}
	}
	if err := ad.Err(); err != nil {
		return 0, err
	}
	return 0, errors.New("verdict is not a goto lb_N")
}

// create programs the fixed part: table, maps, chains and rules.
//
// Long because it lays out the fixed table (maps, chains, rules) in the order
// nftables needs them, one declaration after another.
func (p *Programmer) create() error {
	c := p.conn
	c.AddTable(p.table)
	for _, name := range setOrder {
		if err := c.AddSet(p.sets[name], nil); err != nil {
			return fmt.Errorf("vip table %s: map %s: %w", p.cfg.Table, name, err)
		}
	}
	c.AddChain(&nftables.Chain{Name: chainLayout, Table: p.table})
	dispatch := c.AddChain(&nftables.Chain{Name: "services", Table: p.table})
	for _, h := range []struct {
		name string
		hook *nftables.ChainHook
	}{{"prerouting", nftables.ChainHookPrerouting}, {"output", nftables.ChainHookOutput}} {
		base := c.AddChain(&nftables.Chain{Name: h.name, Table: p.table, Type: nftables.ChainTypeNAT,
			Hooknum: h.hook, Priority: nftables.ChainPriorityNATDest})
		c.AddRule(&nftables.Rule{Table: p.table, Chain: base, Exprs: []expr.Any{
			&expr.Verdict{Kind: expr.VerdictJump, Chain: dispatch.Name}}})
	}
	// VIP traffic.
	c.AddRule(&nftables.Rule{Table: p.table, Chain: dispatch, Exprs: append(frontendKey(),
		&expr.Lookup{SourceRegister: regA, SetName: setServices, SetID: p.sets[setServices].ID, DestRegister: 0, IsDestRegSet: true},
	)})
	// Published ports on any local address of the node.
	c.AddRule(&nftables.Rule{Table: p.table, Chain: dispatch, Exprs: append([]expr.Any{
		&expr.Fib{Register: regA, FlagDADDR: true, ResultADDRTYPE: true},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regA, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
	}, append(hostKeyExprs(),
		&expr.Lookup{SourceRegister: regA, SetName: setHosts, SetID: p.sets[setHosts].ID, DestRegister: 0, IsDestRegSet: true},
	)...)})
	// No ready endpoint: refuse at once. TCP gets a reset, which unlike
	// ICMP is not rate-limited (a new namespace may start with no ICMP
	// credit, which delays the refusal by a retransmission).
	for _, prefix := range []string{chainLB, chainHP} {
		ch := c.AddChain(&nftables.Chain{Name: prefix + "0", Table: p.table})
		c.AddRule(&nftables.Rule{Table: p.table, Chain: ch, Exprs: []expr.Any{
			&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regA},
			&expr.Cmp{Op: expr.CmpOpEq, Register: regA, Data: []byte{byte(TCP)}},
			&expr.Reject{Type: unix.NFT_REJECT_TCP_RST}}})
		c.AddRule(&nftables.Rule{Table: p.table, Chain: ch, Exprs: []expr.Any{
			&expr.Reject{Type: unix.NFT_REJECT_ICMP_UNREACH, Code: icmpPortUnreachable}}})
	}
	post := c.AddChain(&nftables.Chain{Name: "postrouting", Table: p.table, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPostrouting, Priority: nftables.ChainPriorityNATSource})
	c.AddRule(&nftables.Rule{Table: p.table, Chain: post, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: regA},
		&expr.Bitwise{SourceRegister: regA, DestRegister: regA, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regA, Data: make([]byte, 4)},
		&expr.Payload{DestRegister: regA, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Payload{DestRegister: regB, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Lookup{SourceRegister: regA, SetName: setHairpin, SetID: p.sets[setHairpin].ID},
		&expr.Masq{},
	}})
	c.AddRule(&nftables.Rule{Table: p.table, Chain: post, Exprs: []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regA},
		&expr.Bitwise{SourceRegister: regA, DestRegister: regA, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(hostPortMark), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regA, Data: make([]byte, 4)},
		&expr.Masq{},
	}})
	c.AddRule(&nftables.Rule{Table: p.table, Chain: post, Exprs: []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: regA},
		&expr.Bitwise{SourceRegister: regA, DestRegister: regA, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: regA, Data: make([]byte, 4)},
		&expr.Payload{DestRegister: regA, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: regA, DestRegister: regA, Len: 4, Mask: []byte{255, 0, 0, 0}, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: regA, Data: []byte{127, 0, 0, 0}},
		&expr.Masq{},
	}})
	// A rule that looks up a map makes the kernel check every element of
	// it (≈ 45 ms at 250,000 backends), so the usual lb_N chains are made
	// now, while the maps are empty.
	for n := 1; n <= preChains; n++ {
		p.addChains(n)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("create vip table %s: %w", p.cfg.Table, err)
	}
	return nil
}

// frontendKey loads ip daddr . meta l4proto . th dport into regA..regC.
func frontendKey() []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: regA, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regB},
		&expr.Payload{DestRegister: regC, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// hostKeyExprs loads meta l4proto . th dport into regA..regB.
func hostKeyExprs() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: regA},
		&expr.Payload{DestRegister: regB, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
	}
}

// addChains creates lb_n and hp_n: pick slot = random mod n, look the key
// plus slot up, DNAT to the address and port found.
func (p *Programmer) addChains(n int) {
	for _, k := range []struct {
		prefix, set string
		key         []expr.Any
		slotReg     uint32
	}{{chainLB, setBackends, frontendKey(), regD}, {chainHP, setHostBackends, hostKeyExprs(), regC}} {
		ch := p.conn.AddChain(&nftables.Chain{Name: k.prefix + strconv.Itoa(n), Table: p.table})
		var exprs []expr.Any
		if k.prefix == chainHP {
			exprs = markHostPort()
		}
		p.conn.AddRule(&nftables.Rule{Table: p.table, Chain: ch, Exprs: append(append(exprs, k.key...),
			&expr.Numgen{Register: k.slotReg, Modulus: uint32(n), Type: unix.NFT_NG_RANDOM},
			&expr.Lookup{SourceRegister: regA, SetName: k.set, SetID: p.sets[k.set].ID, DestRegister: regA, IsDestRegSet: true},
			// The port register must be named explicitly, or the port becomes 0.
			&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: regA, RegProtoMin: regB, Specified: true},
		)})
	}
}

// markHostPort sets hostPortMark on the packet (meta mark |= bit), for
// postrouting to masquerade it: the endpoint may be on another node, whose
// replies must come back through this one to be un-NATed.
func markHostPort() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: regA},
		&expr.Bitwise{SourceRegister: regA, DestRegister: regA, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(hostPortMark)),
			Xor:  binaryutil.NativeEndian.PutUint32(hostPortMark)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: regA},
	}
}

// Sync makes the table hold exactly svcs, in one transaction. A service
// that is invalid or claims a VIP port or host port an earlier one in svcs
// holds is left out (and removed if it was programmed); the error names it.
func (p *Programmer) Sync(ctx context.Context, svcs []Service) error {
	want, accepted, rejected := flatten(svcs)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	scope := make([]group, 0, len(want)+len(p.m.groups))
	for g := range want {
		scope = append(scope, g)
	}
	for g := range p.m.groups {
		if _, ok := want[g]; !ok {
			scope = append(scope, g)
		}
	}
	slices.SortFunc(scope, compareGroups)
	if err := p.commit(plan(p.m, want, scope, true)); err != nil {
		return fmt.Errorf("sync vip table %s: %w", p.cfg.Table, err)
	}
	p.services = make(map[string]Service, len(accepted))
	p.owner = map[group]string{}
	for _, s := range accepted {
		p.record(s)
	}
	if rejected != nil {
		return fmt.Errorf("sync vip table %s: programmed all but: %w", p.cfg.Table, rejected)
	}
	return nil
}

func (p *Programmer) record(s Service) {
	s.Ports = slices.Clone(s.Ports)
	s.Endpoints = slices.Clone(s.Endpoints)
	p.services[s.Name] = s
	for _, g := range groupsOf(s) {
		p.owner[g] = s.Name
	}
}

func (p *Programmer) forget(name string) {
	s, ok := p.services[name]
	if !ok {
		return
	}
	delete(p.services, name)
	for _, g := range groupsOf(s) {
		delete(p.owner, g)
	}
}

// UpsertService adds or replaces one service.
func (p *Programmer) UpsertService(ctx context.Context, s Service) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upsert(ctx, s.Name, &s)
}

// RemoveService removes one service; removing an unknown one is not an error.
func (p *Programmer) RemoveService(ctx context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.upsert(ctx, name, nil)
}

// SetEndpoints replaces the endpoints of a known service.
func (p *Programmer) SetEndpoints(ctx context.Context, name string, eps []Endpoint) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.services[name]
	if !ok {
		return fmt.Errorf("set endpoints of %q: %w", name, ErrNotFound)
	}
	s.Endpoints = eps
	return p.upsert(ctx, name, &s)
}

// Services returns the services as last programmed, by name.
func (p *Programmer) Services() map[string]Service {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string]Service, len(p.services))
	for k, s := range p.services {
		s.Ports = slices.Clone(s.Ports)
		s.Endpoints = slices.Clone(s.Endpoints)
		out[k] = s
	}
	return out
}

// upsert reconciles the groups of one service: those it had and those it
// wants. s nil removes it.
func (p *Programmer) upsert(ctx context.Context, name string, s *Service) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := map[group][]backend{}
	if s != nil {
		if s.Name != name {
			return fmt.Errorf("service %q programmed as %q: %w", s.Name, name, ErrInvalid)
		}
		// add records this service's claims in a scratch map, since
		// p.owner changes only once the kernel took the change; the other
		// services' claims are checked here.
		if err := add(want, *s, map[group]string{}); err != nil {
			return err
		}
		for g := range want {
			if o, ok := p.owner[g]; ok && o != name {
				return fmt.Errorf("service %q: %v held by %q: %w", name, g, o, ErrConflict)
			}
		}
	}
	var scope []group
	for g := range want {
		scope = append(scope, g)
	}
	if old, ok := p.services[name]; ok {
		for _, g := range groupsOf(old) {
			if _, ok := want[g]; !ok {
				scope = append(scope, g)
			}
		}
	}
	slices.SortFunc(scope, compareGroups)
	if err := p.commit(plan(p.m, want, scope, false)); err != nil {
		return fmt.Errorf("program service %q in %s: %w", name, p.cfg.Table, err)
	}
	p.forget(name)
	if s != nil {
		p.record(*s)
	}
	return nil
}

// commit sends ops as one transaction and records them in the model.
func (p *Programmer) commit(ops []op) error {
	p.lastOps = len(ops)
	if len(ops) == 0 {
		return nil
	}
	type batch struct{ del, add []nftables.SetElement }
	per := map[string]*batch{}
	for _, name := range setOrder {
		per[name] = &batch{}
	}
	for _, o := range ops {
		verdicts, slots, prefix := setServices, setBackends, chainLB
		if o.group.host {
			verdicts, slots, prefix = setHosts, setHostBackends, chainHP
		}
		switch o.kind {
		case opAddChain:
			p.addChains(o.count)
		case opSetCount:
			b := per[verdicts]
			if o.replace {
				b.del = append(b.del, nftables.SetElement{Key: groupKey(o.group)})
			}
			b.add = append(b.add, nftables.SetElement{Key: groupKey(o.group),
				VerdictData: &expr.Verdict{Kind: expr.VerdictGoto, Chain: prefix + strconv.Itoa(o.count)}})
		case opDelCount:
			b := per[verdicts]
			b.del = append(b.del, nftables.SetElement{Key: groupKey(o.group)})
		case opSetSlot:
			b := per[slots]
			if o.replace {
				b.del = append(b.del, nftables.SetElement{Key: slotKey(o.group, o.index)})
			}
			b.add = append(b.add, nftables.SetElement{Key: slotKey(o.group, o.index), Val: backendVal(o.backend)})
		case opDelSlot:
			b := per[slots]
			b.del = append(b.del, nftables.SetElement{Key: slotKey(o.group, o.index)})
		case opAddHairpin:
			b := per[setHairpin]
			b.add = append(b.add, nftables.SetElement{Key: hairpinKey(o.addr)})
		case opDelHairpin:
			b := per[setHairpin]
			b.del = append(b.del, nftables.SetElement{Key: hairpinKey(o.addr)})
		}
	}
	// Deletes first, so that a replaced element can be added back; the
	// transaction is atomic, so no packet sees the gap.
	for _, name := range setOrder {
		if err := p.send(name, per[name].del, true); err != nil {
			return err
		}
	}
	for _, name := range []string{setBackends, setHostBackends, setServices, setHosts, setHairpin} {
		if err := p.send(name, per[name].add, false); err != nil {
			return err
		}
	}
	if err := p.conn.Flush(); err != nil {
		return err
	}
	p.m.apply(ops)
	return nil
}

func (p *Programmer) send(name string, elems []nftables.SetElement, del bool) error {
	s := p.sets[name]
	for chunk := range slices.Chunk(elems, elemsPerMsg) {
		var err error
		if del {
			err = p.conn.SetDeleteElements(s, chunk)
		} else {
			err = p.conn.SetAddElements(s, chunk)
		}
		if err != nil {
			return fmt.Errorf("map %s: %w", name, err)
		}
	}
	return nil
}

// groupKey encodes a group as its verdict map key; each field is padded
// to 4 bytes, as in the registers the rules load.
func groupKey(g group) []byte {
	if g.host {
		k := make([]byte, 8)
		k[0] = byte(g.proto)
		binary.BigEndian.PutUint16(k[4:], g.port)
		return k
	}
	k := make([]byte, 12)
	a := g.vip.As4()
	copy(k, a[:])
	k[4] = byte(g.proto)
	binary.BigEndian.PutUint16(k[8:], g.port)
	return k
}

// slotKey is the group key . slot; numgen writes the slot in host byte order.
func slotKey(g group, i int) []byte {
	return binary.NativeEndian.AppendUint32(groupKey(g), uint32(i))
}

func hairpinKey(a netip.Addr) []byte {
	b := a.As4()
	return append(b[:], b[:]...)
}

func backendVal(b backend) []byte {
	v := make([]byte, 8)
	a := b.addr.As4()
	copy(v, a[:])
	binary.BigEndian.PutUint16(v[4:], b.port)
	return v
}
