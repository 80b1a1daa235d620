package controller

import (
	"log/slog"
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/api"
)

// A pass keeps every VIP a service holds alone in range, and hands a new
// one to a service whose VIP is missing, out of range, the prefix's
// network or broadcast address, or held by an earlier service too.
func TestVIPsForServices(t *testing.T) {
	m := &Manager{opt: Options{Network: Network{ServiceCIDR: netip.MustParsePrefix("10.96.0.0/24")}}, log: slog.New(slog.DiscardHandler)}
	svc := func(uid, vip string) *api.Service {
		return &api.Service{Metadata: api.Metadata{Namespace: "default", Name: uid, UID: uid}, Status: api.ServiceStatus{VIP: vip}}
	}
	settled := &snapshot{services: []*api.Service{svc("a", "10.96.0.10"), svc("b", "10.96.0.11")}}
	v := m.newVIPs(settled)
	for _, s := range settled.services {
		if got, err := v.forService(s); err != nil || got != s.Status.VIP {
			t.Errorf("settled %s: got %q, %v; want %s kept", s.Metadata.Name, got, err, s.Status.VIP)
		}
	}
	if v.pool != nil {
		t.Error("a pass that hands out nothing built an address pool")
	}
	for _, tc := range []struct{ name, vip string }{
		{"missing", ""}, {"out of range", "10.97.0.1"}, {"network address", "10.96.0.0"},
		{"broadcast address", "10.96.0.255"}, {"held by an earlier one", "10.96.0.10"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first, other := svc("a", "10.96.0.10"), svc("z", tc.vip)
			v := m.newVIPs(&snapshot{services: []*api.Service{first, other}})
			if got, _ := v.forService(first); got != "10.96.0.10" {
				t.Errorf("the first keeps %q, want 10.96.0.10", got)
			}
			got, err := v.forService(other)
			a, perr := netip.ParseAddr(got)
			if err != nil || perr != nil || got == tc.vip || got == "10.96.0.10" || edge(netip.MustParsePrefix("10.96.0.0/24"), a) ||
				!netip.MustParsePrefix("10.96.0.0/24").Contains(a) {
				t.Errorf("%s VIP %q: got %q, %v; want a fresh one in range", tc.name, tc.vip, got, err)
			}
		})
	}
}
