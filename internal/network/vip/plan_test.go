package vip

import (
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func eps(ips ...string) []Endpoint {
	var out []Endpoint
	for _, ip := range ips {
		out = append(out, Endpoint{Addr: addr(ip), Ready: true})
	}
	return out
}

// syncModel plans and applies like Programmer.Sync, without a kernel.
func syncModel(t *testing.T, m *model, svcs []Service) []op {
	t.Helper()
	want, _, err := flatten(svcs)
	if err != nil {
		t.Fatal(err)
	}
	var scope []group
	for g := range want {
		scope = append(scope, g)
	}
	for g := range m.groups {
		if _, ok := want[g]; !ok {
			scope = append(scope, g)
		}
	}
	slices.SortFunc(scope, compareGroups)
	ops := plan(m, want, scope, true)
	m.apply(ops)
	checkModel(t, m, want)
	return ops
}

// checkModel asserts that the model serves exactly the wanted backends in
// every group, with no slot empty and every chain it needs present.
func checkModel(t *testing.T, m *model, want map[group][]backend) {
	t.Helper()
	if len(m.groups) != len(want) {
		t.Fatalf("model has %d groups, want %d", len(m.groups), len(want))
	}
	for g, bs := range want {
		got, ok := m.groups[g]
		if !ok {
			t.Fatalf("group %v missing", g)
		}
		got = slices.Clone(got)
		slices.SortFunc(got, func(a, b backend) int { return a.addr.Compare(b.addr) })
		if !slices.Equal(got, bs) {
			t.Fatalf("group %v: slots %v, want %v", g, got, bs)
		}
		if len(got) > m.chains {
			t.Fatalf("group %v has %d slots but only lb_0..lb_%d exist", g, len(got), m.chains)
		}
	}
	// The hairpin set holds exactly the local addresses that are backends.
	local := map[netip.Addr]bool{}
	for _, bs := range want {
		for _, b := range bs {
			if m.local.Contains(b.addr) {
				local[b.addr] = true
			}
		}
	}
	if !maps.Equal(local, m.hairpin) {
		t.Fatalf("hairpin set %v, want %v", m.hairpin, local)
	}
}

func TestPlanOneEndpointChangeTouchesFewElements(t *testing.T) {
	// A node whose pod subnet holds none of these endpoints: no hairpin ops.
	m := newModel(netip.MustParsePrefix("10.244.1.0/24"))
	web := Service{Name: "default/web", VIP: addr("10.96.0.10"),
		Ports:     []Port{{Name: "http", Protocol: TCP, Port: 80, TargetPort: 8080, HostPort: 8080}},
		Endpoints: eps("10.244.0.2", "10.244.0.3", "10.244.0.4", "10.244.0.5")}
	other := Service{Name: "default/db", VIP: addr("10.96.0.11"),
		Ports: []Port{{Protocol: TCP, Port: 5432}}, Endpoints: eps("10.244.0.9")}
	syncModel(t, m, []Service{web, other})

	count := func(ops []op, kinds ...opKind) int {
		n := 0
		for _, o := range ops {
			if slices.Contains(kinds, o.kind) {
				n++
			}
		}
		return n
	}

	// Add one: one new slot and the count, for the VIP and the host port;
	// plus the chain for five backends, the first time.
	web.Endpoints = append(web.Endpoints, eps("10.244.0.6")...)
	ops := syncModel(t, m, []Service{web, other})
	if len(ops) != 5 || count(ops, opSetSlot) != 2 || count(ops, opSetCount) != 2 || count(ops, opAddChain) != 1 {
		t.Fatalf("adding one endpoint: %d ops %+v", len(ops), ops)
	}

	// Remove one in the middle: the last slot moves into the hole.
	web.Endpoints = slices.Delete(web.Endpoints, 1, 2)
	ops = syncModel(t, m, []Service{web, other})
	if len(ops) != 6 || count(ops, opSetSlot) != 2 || count(ops, opDelSlot) != 2 || count(ops, opSetCount) != 2 {
		t.Fatalf("removing one endpoint: %+v", ops)
	}

	// Unhealthy is the same as gone; healthy again comes back.
	web.Endpoints[0].Ready = false
	if ops := syncModel(t, m, []Service{web, other}); len(ops) != 6 {
		t.Fatalf("marking unready: %+v", ops)
	}
	web.Endpoints[0].Ready = true
	if ops := syncModel(t, m, []Service{web, other}); len(ops) != 4 {
		t.Fatalf("marking ready: %+v", ops)
	}

	// Nothing changed: nothing to do.
	if ops := syncModel(t, m, []Service{web, other}); len(ops) != 0 {
		t.Fatalf("idempotent sync: %+v", ops)
	}
}

func TestPlanRandomConverges(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 9))
	// Endpoints .2-.21; the node's subnet holds .2-.15 of them.
	m := newModel(netip.MustParsePrefix("10.244.0.0/28"))
	for step := range 300 {
		var svcs []Service
		for s := range r.IntN(8) {
			svc := Service{Name: fmt.Sprint("svc", s), VIP: netip.AddrFrom4([4]byte{10, 96, 0, byte(s + 1)})}
			for p := range 1 + r.IntN(2) {
				pt := Port{Protocol: []Protocol{TCP, UDP}[p], Port: uint16(80 + r.IntN(2))}
				if r.IntN(3) == 0 {
					pt.HostPort = uint16(30000 + s*10 + p)
				}
				svc.Ports = append(svc.Ports, pt)
			}
			for e := range r.IntN(12) {
				svc.Endpoints = append(svc.Endpoints, Endpoint{
					Addr: netip.AddrFrom4([4]byte{10, 244, 0, byte(2 + r.IntN(20))}), Ready: e%5 != 4})
			}
			svcs = append(svcs, svc)
		}
		syncModel(t, m, svcs)
		if ops := syncModel(t, m, svcs); len(ops) != 0 {
			t.Fatalf("step %d: second sync not empty: %+v", step, ops)
		}
	}
}

func TestPlaceSlotsKeepsSurvivorsInPlace(t *testing.T) {
	b := func(i byte) backend { return backend{netip.AddrFrom4([4]byte{10, 0, 0, i}), 80} }
	old := []backend{b(1), b(2), b(3), b(4), b(5)}
	got := placeSlots(old, []backend{b(1), b(3), b(4), b(5), b(9)})
	want := []backend{b(1), b(9), b(3), b(4), b(5)}
	if !slices.Equal(got, want) {
		t.Fatalf("replace one: got %v, want %v", got, want)
	}
	got = placeSlots(old, []backend{b(1), b(4), b(5)})
	want = []backend{b(1), b(5), b(4)}
	if !slices.Equal(got, want) {
		t.Fatalf("remove two: got %v, want %v", got, want)
	}
}

func TestFlattenRejectsConflicts(t *testing.T) {
	a := Service{Name: "a", VIP: addr("10.96.0.1"), Ports: []Port{{Protocol: TCP, Port: 80, HostPort: 8080}}}
	b := Service{Name: "b", VIP: addr("10.96.0.1"), Ports: []Port{{Protocol: TCP, Port: 80}}}
	if _, ok, err := flatten([]Service{a, b}); !errors.Is(err, ErrConflict) || len(ok) != 1 || ok[0].Name != "a" {
		t.Fatalf("same frontend: %v, kept %v", err, ok)
	}
	// c conflicts on its second port only: none of it goes in.
	c := Service{Name: "c", VIP: addr("10.96.0.2"), Ports: []Port{{Protocol: TCP, Port: 80}, {Protocol: TCP, Port: 81, HostPort: 8080}}}
	want, ok, err := flatten([]Service{a, c})
	if !errors.Is(err, ErrConflict) || len(ok) != 1 {
		t.Fatalf("same host port: %v, kept %v", err, ok)
	}
	if _, in := want[group{vip: addr("10.96.0.2"), proto: TCP, port: 80}]; in {
		t.Fatal("half of a rejected service was kept")
	}
	if _, _, err := flatten([]Service{{Name: "v6", VIP: addr("fd00::1")}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("IPv6 VIP: %v", err)
	}
	if _, _, err := flatten([]Service{a, a}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("same service twice: %v", err)
	}
}

// A service without a VIP (one container's published ports) claims only
// its host ports: one container port may be published on two host ports,
// and a port without a host port is refused.
func TestPlanServiceWithoutVIP(t *testing.T) {
	m := newModel(netip.MustParsePrefix("10.89.3.0/24"))
	ctr := Service{Name: "container/web", Endpoints: eps("10.89.3.2"),
		Ports: []Port{{Protocol: TCP, Port: 80, HostPort: 8080}, {Protocol: TCP, Port: 80, HostPort: 8081}, {Protocol: UDP, Port: 53, HostPort: 5353}}}
	syncModel(t, m, []Service{ctr})
	want := map[group][]backend{
		{host: true, proto: TCP, port: 8080}: {{addr("10.89.3.2"), 80}},
		{host: true, proto: TCP, port: 8081}: {{addr("10.89.3.2"), 80}},
		{host: true, proto: UDP, port: 5353}: {{addr("10.89.3.2"), 53}},
	}
	checkModel(t, m, want)
	if !m.hairpin[addr("10.89.3.2")] {
		t.Fatal("a local endpoint of a published port is not in the hairpin set")
	}
	// Another service asking for one of its host ports is refused, by name.
	other := Service{Name: "container/db", Endpoints: eps("10.89.3.3"), Ports: []Port{{Protocol: TCP, Port: 5432, HostPort: 8081}}}
	if _, _, err := flatten([]Service{ctr, other}); !errors.Is(err, ErrConflict) {
		t.Fatalf("two services on host port 8081: %v", err)
	}
	bad := Service{Name: "container/bad", Endpoints: eps("10.89.3.4"), Ports: []Port{{Protocol: TCP, Port: 80}}}
	if _, _, err := flatten([]Service{bad}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a port with neither VIP nor host port: %v", err)
	}
	// Removing it leaves nothing.
	syncModel(t, m, nil)
	checkModel(t, m, map[group][]backend{})
}
