// Package dns answers the cluster's names on each node:
//
//	<service>.<namespace>.<domain>               A    the service's VIP
//	<alias>.<namespace>.<domain>                 A    the VIP of the service it aliases
//	_<port>._<proto>.<service>.<namespace>.<domain> SRV  0 0 <port> <service>.<namespace>.<domain>
//	<instance>.<service>.<namespace>.<domain>    A    the instance's address
//
// The server is authoritative for the domain ("berth" by default): a name
// it does not hold gets NXDOMAIN at once, and a name it holds but not with
// the asked type gets an empty NOERROR. Names outside the domain go to the
// upstream resolvers when some are configured, and get NXDOMAIN otherwise,
// so that nothing waits on a timeout.
package dns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	mdns "github.com/miekg/dns"
)

// Port is a named port of a service, published as an SRV record.
type Port struct {
	Name     string // e.g. "http"; unnamed ports get no SRV record
	Protocol string // "tcp" or "udp"
	Port     uint16
}

// Instance is one named instance of a service.
type Instance struct {
	Name string
	IP   netip.Addr
}

// Service is what DNS knows of one service.
type Service struct {
	Namespace, Name string
	// Aliases are further names of the service: <alias>.<namespace>.<domain> A its VIP.
	Aliases   []string
	VIP       netip.Addr
	Ports     []Port
	Instances []Instance
}

func (s Service) key() string { return s.Namespace + "/" + s.Name }

// Config tunes the server.
type Config struct {
	// Domain is the cluster domain; empty means "berth".
	Domain string
	// TTL of answers; 0 means 5 s (short: VIPs are stable, instances are not).
	TTL time.Duration
	// Upstreams ("host:port") resolve names outside the domain; none means
	// NXDOMAIN for them.
	Upstreams []string
	// SyncWait is how long a query for the domain waits for the first
	// SetServices, after which it gets SERVFAIL; 0 answers from what is
	// held at once. A node's server starts serving before it has listed
	// the services: without the wait, a running container that asks then
	// is told that its services' names do not exist, and may cache that.
	SyncWait time.Duration
}

// Server holds the records and answers queries. It is safe for concurrent
// use; updates are visible to the next query.
type Server struct {
	zone      string // "berth."
	ttl       uint32
	upstreams []string
	client    *mdns.Client
	syncWait  time.Duration
	synced    chan struct{} // closed by the first SetServices
	syncOnce  sync.Once
	waiting   atomic.Int32 // queries waiting for it

	mu       sync.RWMutex
	services map[string]Service
	names    map[string]*rrset // lower-case FQDN → records
	// parents counts the names below each name in the zone, so that an
	// empty non-terminal (e.g. "default.berth.") answers NOERROR.
	parents map[string]int
}

type rrset struct {
	a   []netip.Addr
	srv []*mdns.SRV
}

// NewServer returns a server with no records.
func NewServer(cfg Config) *Server {
	domain := cfg.Domain
	if domain == "" {
		domain = "berth"
	}
	ttl := cfg.TTL
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	return &Server{
		zone:      mdns.Fqdn(strings.ToLower(domain)),
		ttl:       uint32(ttl / time.Second),
		upstreams: cfg.Upstreams,
		client:    &mdns.Client{Timeout: 2 * time.Second},
		syncWait:  cfg.SyncWait,
		synced:    make(chan struct{}),
		services:  map[string]Service{},
		names:     map[string]*rrset{},
		parents:   map[string]int{},
	}
}

// SetServices replaces every record with those of svcs.
func (s *Server) SetServices(svcs []Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.services = map[string]Service{}
	s.names = map[string]*rrset{}
	s.parents = map[string]int{}
	for _, svc := range svcs {
		s.services[svc.key()] = svc
		s.index(svc, +1)
	}
	s.syncOnce.Do(func() { close(s.synced) })
}

// waitSynced says whether the server holds a full list of services, once
// it does or Config.SyncWait has passed.
func (s *Server) waitSynced() bool {
	if s.syncWait <= 0 {
		return true
	}
	select {
	case <-s.synced:
		return true
	default:
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	t := time.NewTimer(s.syncWait)
	defer t.Stop()
	select {
	case <-s.synced:
		return true
	case <-t.C:
		return false
	}
}

// UpsertService adds or replaces one service's records.
func (s *Server) UpsertService(svc Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.services[svc.key()]; ok {
		s.index(old, -1)
	}
	s.services[svc.key()] = svc
	s.index(svc, +1)
}

// RemoveService removes one service's records.
func (s *Server) RemoveService(namespace, name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := namespace + "/" + name
	if old, ok := s.services[k]; ok {
		s.index(old, -1)
		delete(s.services, k)
	}
}

// index adds (dir +1) or removes (dir -1) the names of svc.
func (s *Server) index(svc Service, dir int) {
	base := strings.ToLower(svc.Name + "." + svc.Namespace + "." + s.zone)
	// A service without a VIP (not allocated yet) still has its instance
	// names; its own name then exists with no address.
	s.touch(base, dir, func(r *rrset) {
		if !svc.VIP.IsValid() {
			return
		}
		if dir > 0 {
			r.a = append(r.a, svc.VIP)
		} else {
			r.a = removeAddr(r.a, svc.VIP)
		}
	})
	for _, a := range svc.Aliases {
		if !svc.VIP.IsValid() {
			break
		}
		s.touch(strings.ToLower(a+"."+svc.Namespace+"."+s.zone), dir, func(r *rrset) {
			if dir > 0 {
				r.a = append(r.a, svc.VIP)
			} else {
				r.a = removeAddr(r.a, svc.VIP)
			}
		})
	}
	for _, p := range svc.Ports {
		if p.Name == "" {
			continue
		}
		name := strings.ToLower("_" + p.Name + "._" + cmpOr(p.Protocol, "tcp") + "." + base)
		srv := &mdns.SRV{Hdr: mdns.RR_Header{Name: name, Rrtype: mdns.TypeSRV, Class: mdns.ClassINET, Ttl: s.ttl},
			Priority: 0, Weight: 0, Port: p.Port, Target: base}
		s.touch(name, dir, func(r *rrset) {
			if dir > 0 {
				r.srv = append(r.srv, srv)
			} else {
				r.srv = removeSRV(r.srv, srv)
			}
		})
	}
	for _, in := range svc.Instances {
		if !in.IP.IsValid() || in.Name == "" {
			continue
		}
		name := strings.ToLower(in.Name + "." + base)
		s.touch(name, dir, func(r *rrset) {
			if dir > 0 {
				r.a = append(r.a, in.IP)
			} else {
				r.a = removeAddr(r.a, in.IP)
			}
		})
	}
}

// touch edits the records of name and keeps the parent counts in step.
func (s *Server) touch(name string, dir int, edit func(*rrset)) {
	r, ok := s.names[name]
	if !ok {
		r = &rrset{}
	}
	edit(r)
	if len(r.a) == 0 && len(r.srv) == 0 {
		delete(s.names, name)
	} else {
		s.names[name] = r
	}
	// Counted whether or not the name holds records, so that adding and
	// removing the same service always balance.
	for p := parent(name); p != "" && p != s.zone; p = parent(p) {
		s.parents[p] += dir
		if s.parents[p] <= 0 {
			delete(s.parents, p)
		}
	}
}

func parent(name string) string {
	_, rest, ok := strings.Cut(name, ".")
	if !ok {
		return ""
	}
	return rest
}

func removeAddr(as []netip.Addr, a netip.Addr) []netip.Addr {
	for i, x := range as {
		if x == a {
			return append(as[:i:i], as[i+1:]...)
		}
	}
	return as
}

func removeSRV(rs []*mdns.SRV, r *mdns.SRV) []*mdns.SRV {
	for i, x := range rs {
		if x.Port == r.Port && x.Target == r.Target {
			return append(rs[:i:i], rs[i+1:]...)
		}
	}
	return rs
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return strings.ToLower(s)
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	m := s.answer(req, w.RemoteAddr())
	_ = w.WriteMsg(m)
}

func (s *Server) answer(req *mdns.Msg, from net.Addr) *mdns.Msg {
	m := new(mdns.Msg)
	if len(req.Question) != 1 || req.Opcode != mdns.OpcodeQuery {
		return m.SetRcode(req, mdns.RcodeNotImplemented)
	}
	q := req.Question[0]
	name := strings.ToLower(q.Name)
	if name != s.zone && !strings.HasSuffix(name, "."+s.zone) {
		return s.forward(req, from)
	}
	if !s.waitSynced() {
		// Not "no such name": the server does not know yet.
		return m.SetRcode(req, mdns.RcodeServerFailure)
	}
	m.SetReply(req)
	m.Authoritative = true
	s.mu.RLock()
	r, ok := s.names[name]
	var a []netip.Addr
	var srv []*mdns.SRV
	if ok {
		a, srv = append(a, r.a...), append(srv, r.srv...)
	}
	ent := s.parents[name] > 0 || name == s.zone
	s.mu.RUnlock()
	if !ok && !ent {
		m.Rcode = mdns.RcodeNameError
		m.Ns = []mdns.RR{s.soa()}
		return m
	}
	hdr := func(t uint16) mdns.RR_Header {
		return mdns.RR_Header{Name: q.Name, Rrtype: t, Class: mdns.ClassINET, Ttl: s.ttl}
	}
	switch q.Qtype {
	case mdns.TypeA, mdns.TypeANY:
		for _, ip := range a {
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr(mdns.TypeA), A: ip.AsSlice()})
		}
	}
	switch q.Qtype {
	case mdns.TypeSRV, mdns.TypeANY:
		for _, r := range srv {
			rr := *r
			rr.Hdr.Name = q.Name
			m.Answer = append(m.Answer, &rr)
			// The target's address saves the client a second query.
			s.mu.RLock()
			if t, ok := s.names[r.Target]; ok {
				for _, ip := range t.a {
					m.Extra = append(m.Extra, &mdns.A{Hdr: mdns.RR_Header{Name: r.Target, Rrtype: mdns.TypeA, Class: mdns.ClassINET, Ttl: s.ttl}, A: ip.AsSlice()})
				}
			}
			s.mu.RUnlock()
		}
	}
	if name == s.zone && q.Qtype == mdns.TypeSOA {
		m.Answer = append(m.Answer, s.soa())
	}
	if len(m.Answer) == 0 {
		m.Ns = []mdns.RR{s.soa()}
	}
	return m
}

func (s *Server) soa() *mdns.SOA {
	return &mdns.SOA{
		Hdr: mdns.RR_Header{Name: s.zone, Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: s.ttl},
		Ns:  "ns.dns." + s.zone, Mbox: "hostmaster." + s.zone,
		Serial: 1, Refresh: 3600, Retry: 600, Expire: 86400, Minttl: s.ttl,
	}
}

// forward asks the upstreams, in order, for a name outside the domain.
func (s *Server) forward(req *mdns.Msg, from net.Addr) *mdns.Msg {
	network := "udp"
	if _, ok := from.(*net.TCPAddr); ok {
		network = "tcp"
	}
	for _, up := range s.upstreams {
		c := *s.client
		c.Net = network
		resp, _, err := c.Exchange(req, up)
		if err == nil && resp != nil {
			return resp
		}
	}
	m := new(mdns.Msg)
	if len(s.upstreams) > 0 {
		return m.SetRcode(req, mdns.RcodeServerFailure)
	}
	return m.SetRcode(req, mdns.RcodeNameError)
}

// udpReadTimeout is how long the UDP loop waits for a packet before it
// looks again.
const udpReadTimeout = time.Hour

// Serve answers on pc (UDP) and l (TCP), either of which may be nil,
// until ctx is done. The caller creates the sockets, e.g. in a chosen
// network namespace.
func (s *Server) Serve(ctx context.Context, pc net.PacketConn, l net.Listener) error {
	var servers []*mdns.Server
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	if pc != nil {
		// The read timeout only paces the UDP read loop (a shutdown
		// unblocks the read itself): at the library's 2s it woke an idle
		// server every two seconds, for nothing.
		servers = append(servers, &mdns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify, ReadTimeout: udpReadTimeout})
	}
	if l != nil {
		servers = append(servers, &mdns.Server{Listener: l, Handler: s, NotifyStartedFunc: notify})
	}
	if len(servers) == 0 {
		return errors.New("dns serve: no socket")
	}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		go func() { errc <- srv.ActivateAndServe() }()
	}
	// Shutdown of a server that has not started yet does nothing, so wait
	// for each to start (or fail) before watching ctx.
	var err error
	for range servers {
		select {
		case <-started:
		case err = <-errc:
		}
	}
	if err == nil {
		select {
		case <-ctx.Done():
		case err = <-errc:
		}
	}
	for _, srv := range servers {
		_ = srv.Shutdown()
	}
	if err != nil {
		return fmt.Errorf("dns serve: %w", err)
	}
	return nil
}

// ListenAndServe answers on addr ("ip:port"), UDP and TCP, until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(ctx, "udp", addr)
	if err != nil {
		return fmt.Errorf("dns listen udp %s: %w", addr, err)
	}
	l, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("dns listen tcp %s: %w", addr, err)
	}
	return s.Serve(ctx, pc, l)
}
