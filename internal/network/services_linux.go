package network

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/berth-dev/berth/internal/network/dns"
	"github.com/berth-dev/berth/internal/network/vip"
)

// Service is what the node's data plane needs of one service: its VIP,
// its ports and its instances. The agent builds it from the store.
type Service struct {
	Namespace, Name string
	// Aliases are further names of the service in its namespace.
	Aliases   []string
	VIP       netip.Addr
	Ports     []ServicePort
	Instances []Instance
}

// ServicePort is one port of a service.
type ServicePort struct {
	Name       string // SRV record _<name>._<protocol>; optional
	Protocol   vip.Protocol
	Port       uint16 // on the VIP
	TargetPort uint16 // on each instance; 0 means Port
	HostPort   uint16 // published on the node; 0 means none
}

// Instance is one instance of a service. Only Ready ones (running and
// healthy) receive traffic and are named in DNS.
type Instance struct {
	Name  string
	IP    netip.Addr
	Ready bool
}

// Key is "namespace/name", the service's name in vip.
func (s Service) Key() string { return s.Namespace + "/" + s.Name }

// VIPService converts s for the vip programmer.
func (s Service) VIPService() vip.Service {
	out := vip.Service{Name: s.Key(), VIP: s.VIP}
	for _, p := range s.Ports {
		out.Ports = append(out.Ports, vip.Port{Name: p.Name, Protocol: p.Protocol, Port: p.Port,
			TargetPort: p.TargetPort, HostPort: p.HostPort})
	}
	for _, in := range s.Instances {
		if in.IP.IsValid() {
			out.Endpoints = append(out.Endpoints, vip.Endpoint{Addr: in.IP, Ready: in.Ready})
		}
	}
	return out
}

// DNSService converts s for the DNS server.
func (s Service) DNSService() dns.Service {
	out := dns.Service{Namespace: s.Namespace, Name: s.Name, Aliases: s.Aliases, VIP: s.VIP}
	for _, p := range s.Ports {
		out.Ports = append(out.Ports, dns.Port{Name: p.Name, Protocol: strings.ToLower(p.Protocol.String()), Port: p.Port})
	}
	for _, in := range s.Instances {
		if in.Ready && in.IP.IsValid() && in.Name != "" {
			out.Instances = append(out.Instances, dns.Instance{Name: in.Name, IP: in.IP})
		}
	}
	return out
}

// Services keeps a node's VIPs, published ports and DNS names in step.
// Call Sync with every service after start (and on every re-list); then
// Upsert and Remove for single changes.
type Services struct {
	vip   *vip.Programmer
	dns   *dns.Server
	ports *portHolder
}

// NewServices opens the vip table (reading back what it holds) and makes
// a DNS server; the caller serves it (see Node.ListenDNS and dns.Serve).
func NewServices(ctx context.Context, vc vip.Config, dc dns.Config) (*Services, error) {
	p, err := vip.New(ctx, vc)
	if err != nil {
		return nil, err
	}
	return &Services{vip: p, dns: dns.NewServer(dc), ports: newPortHolder(vc.NetNS)}, nil
}

// DNS is the server answering for these services.
func (s *Services) DNS() *dns.Server { return s.dns }

// VIP is the underlying programmer.
func (s *Services) VIP() *vip.Programmer { return s.vip }

// Sync makes the data plane hold exactly svcs. A service vip rejects (see
// vip.Programmer.Sync) gets no DNS names either; err names it. A host port
// another process holds is left unpublished, and unpublished names it:
// everything else is programmed, and a later Sync or Upsert tries the
// port again.
func (s *Services) Sync(ctx context.Context, svcs []Service) (unpublished, err error) {
	vs := make([]vip.Service, 0, len(svcs))
	owners := map[string]vip.Service{}
	var portErrs []error
	for _, svc := range svcs {
		v := svc.VIPService()
		if err := s.ports.claim(svc.Key(), &v); err != nil {
			portErrs = append(portErrs, err)
		}
		owners[svc.Key()] = v
		vs = append(vs, v)
	}
	err = s.vip.Sync(ctx, vs)
	// Only once the rules are gone: a port let go before would be free to
	// bind while its traffic still went to the service.
	s.ports.keep(owners)
	programmed := s.vip.Services()
	ds := make([]dns.Service, 0, len(svcs))
	for _, svc := range svcs {
		if _, ok := programmed[svc.Key()]; ok {
			ds = append(ds, svc.DNSService())
		}
	}
	s.dns.SetServices(ds)
	return errors.Join(portErrs...), err
}

// Upsert adds or replaces one service, e.g. when an instance becomes ready
// or unhealthy.
func (s *Services) Upsert(ctx context.Context, svc Service) error {
	v := svc.VIPService()
	portErr := s.ports.claim(svc.Key(), &v)
	if err := s.vip.UpsertService(ctx, v); err != nil {
		return errors.Join(portErr, err)
	}
	s.ports.settle(svc.Key(), v)
	s.dns.UpsertService(svc.DNSService())
	return portErr
}

// CheckHostPort reports whether an instance of service (namespace/name,
// or empty for a job's) may publish port on this node: it is free, or
// published for that service already. Another process's socket on it
// makes an "address already in use" error naming the port.
func (s *Services) CheckHostPort(service string, protocol vip.Protocol, port uint16) error {
	return s.ports.check(service, hostPort{protocol, port})
}

// Remove deletes one service's VIP, ports and names.
func (s *Services) Remove(ctx context.Context, namespace, name string) error {
	s.dns.RemoveService(namespace, name)
	if err := s.vip.RemoveService(ctx, namespace+"/"+name); err != nil {
		return fmt.Errorf("remove service %s/%s: %w", namespace, name, err)
	}
	// After the rules: the port is free only once nothing redirects it.
	s.ports.release(namespace + "/" + name)
	return nil
}

// Close releases the netlink connection; rules and maps stay.
func (s *Services) Close() error { return s.vip.Close() }
