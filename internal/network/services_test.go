package network

import (
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/internal/network/vip"
)

func TestServiceConversions(t *testing.T) {
	s := Service{Namespace: "default", Name: "web", VIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []ServicePort{{Name: "http", Protocol: vip.TCP, Port: 80, TargetPort: 8080, HostPort: 30080}},
		Instances: []Instance{
			{Name: "web-0", IP: netip.MustParseAddr("10.244.0.2"), Ready: true},
			{Name: "web-1", IP: netip.MustParseAddr("10.244.0.3"), Ready: false},
			{Name: "web-2"}, // not started yet: no address
		}}
	v := s.VIPService()
	if v.Name != "default/web" || len(v.Endpoints) != 2 || !v.Endpoints[0].Ready || v.Endpoints[1].Ready {
		t.Fatalf("vip service: %+v", v)
	}
	if p := v.Ports[0]; p.TargetPort != 8080 || p.HostPort != 30080 {
		t.Fatalf("vip port: %+v", p)
	}
	d := s.DNSService()
	if len(d.Instances) != 1 || d.Instances[0].Name != "web-0" {
		t.Fatalf("DNS names an instance that is not ready: %+v", d.Instances)
	}
	if d.Ports[0].Protocol != "tcp" || d.Ports[0].Name != "http" {
		t.Fatalf("dns port: %+v", d.Ports[0])
	}
}
