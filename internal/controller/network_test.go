package controller_test

import (
	"context"
	"log/slog"
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
)

func TestNodesGetDistinctSubnetsAndServicesDistinctVIPs(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	netw := controller.Network{
		ClusterCIDR: netip.MustParsePrefix("10.250.0.0/22"), NodeBits: 24,
		ServiceCIDR: netip.MustParsePrefix("10.251.0.0/29"),
	}
	m := controller.NewManager(s, controller.Options{Logger: slog.New(slog.DiscardHandler), Network: netw})
	// n1 already holds the first subnet: the others must go around it.
	for i, name := range []string{"n1", "n2", "n3"} {
		n := &api.Node{Metadata: api.Metadata{Name: name}}
		if i == 0 {
			n.Spec.PodSubnet = "10.250.0.0/24"
		}
		if err := s.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	// Six usable addresses in a /29: the seventh service must wait, not share.
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g"} {
		if err := s.Create(ctx, api.RunService(name, "demo/busybox:1", []string{"true"})); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Pass(ctx); err == nil {
		t.Error("pass with an exhausted service CIDR: no error")
	}
	nodes, _, err := store.List[api.Node](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	subnets := map[string]string{}
	for _, n := range nodes {
		if other, dup := subnets[n.Spec.PodSubnet]; dup {
			t.Errorf("nodes %s and %s share subnet %s", other, n.Metadata.Name, n.Spec.PodSubnet)
		}
		subnets[n.Spec.PodSubnet] = n.Metadata.Name
		if p, err := netip.ParsePrefix(n.Spec.PodSubnet); err != nil || p.Bits() != 24 || !netw.ClusterCIDR.Contains(p.Addr()) {
			t.Errorf("node %s: subnet %q is not a /24 of %v", n.Metadata.Name, n.Spec.PodSubnet, netw.ClusterCIDR)
		}
	}
	if subnets["10.250.0.0/24"] != "n1" {
		t.Errorf("n1 lost its subnet: %v", subnets)
	}
	vips := func() map[string]string {
		svcs, _, err := store.List[api.Service](ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, svc := range svcs {
			out[svc.Metadata.Name] = svc.Status.VIP
		}
		return out
	}
	got := vips()
	owner := map[string]string{}
	assigned := 0
	for name, vip := range got {
		if vip == "" {
			continue
		}
		assigned++
		if other, dup := owner[vip]; dup {
			t.Errorf("services %s and %s share VIP %s", other, name, vip)
		}
		owner[vip] = name
		if a, err := netip.ParseAddr(vip); err != nil || !netw.ServiceCIDR.Contains(a) {
			t.Errorf("service %s: VIP %q outside %v", name, vip, netw.ServiceCIDR)
		}
	}
	if assigned != 6 {
		t.Fatalf("%d services got a VIP, want the 6 a /29 holds: %v", assigned, got)
	}
	// Removing one frees its VIP for the one that waited; the others keep theirs.
	var gone string
	for name, vip := range got {
		if vip != "" {
			gone = name
			break
		}
	}
	if err := s.Delete(ctx, api.KindService, api.DefaultNamespace, gone, 0); err != nil {
		t.Fatal(err)
	}
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	after := vips()
	for name, vip := range got {
		if name != gone && vip != "" && after[name] != vip {
			t.Errorf("service %s: VIP changed from %s to %s", name, vip, after[name])
		}
	}
	for name, vip := range after {
		if vip == "" {
			t.Errorf("service %s still has no VIP after one was freed", name)
		}
	}
}
