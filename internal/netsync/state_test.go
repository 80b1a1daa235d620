package netsync

import (
	"net/netip"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

func svc(name, uid, vip string) *api.Service {
	s := api.RunService(name, "demo/busybox:1", nil)
	s.Metadata.UID = uid
	s.Status.VIP = vip
	s.Spec.Template.Ports = []api.Port{{Name: "http", Container: 80, Host: 8080}, {Container: 53, Protocol: "udp"}}
	return s
}

func inst(name, owner, uid, ip string, phase api.Phase, healthy bool) *api.Instance {
	return &api.Instance{
		Metadata: api.Metadata{Namespace: api.DefaultNamespace, Name: name},
		Spec:     api.InstanceSpec{Template: &api.Template{Image: "demo/app:1"}, Owner: api.Owner{Kind: api.KindService, Name: owner, UID: uid}},
		Status:   api.InstanceStatus{Phase: phase, Healthy: healthy, IP: ip},
	}
}

func TestStateFollowsServicesAndReadiness(t *testing.T) {
	st := newState()
	dirty := map[string]bool{}
	apply := func(c change) {
		t.Helper()
		if err := st.apply(c, dirty); err != nil {
			t.Fatal(err)
		}
	}
	addSvc := func(s *api.Service) { apply(change{svc: &client.WatchEvent[*api.Service]{Type: "Added", Object: s}}) }
	putInst := func(in *api.Instance) {
		apply(change{inst: &client.WatchEvent[*api.Instance]{Type: "Modified", Object: in}})
	}

	// No VIP yet: nothing to program.
	addSvc(svc("web", "u1", ""))
	if _, ok := st.service("default/web"); ok {
		t.Fatal("a service without a VIP is programmed")
	}
	addSvc(svc("web", "u1", "10.96.0.1"))
	putInst(inst("web-a", "web", "u1", "10.244.0.2", api.PhaseRunning, true))
	putInst(inst("web-b", "web", "u1", "10.244.0.3", api.PhaseRunning, false))  // unhealthy
	putInst(inst("web-c", "web", "u1", "", api.PhaseStarting, false))           // no address yet
	putInst(inst("web-old", "web", "u0", "10.244.0.9", api.PhaseRunning, true)) // an earlier "web"
	if !dirty["default/web"] {
		t.Error("instance changes did not mark their service")
	}
	s, ok := st.service("default/web")
	if !ok {
		t.Fatal("service with a VIP is not programmed")
	}
	if s.VIP != netip.MustParseAddr("10.96.0.1") || len(s.Ports) != 2 || s.Ports[0].HostPort != 8080 || s.Ports[1].Protocol.String() != "udp" {
		t.Errorf("service %+v", s)
	}
	ready := map[string]bool{}
	for _, in := range s.Instances {
		ready[in.Name] = in.Ready
	}
	if len(ready) != 2 || !ready["web-a"] || ready["web-b"] {
		t.Errorf("instances %+v: want web-a ready, web-b not, no others", s.Instances)
	}

	// Deleted instance and service leave.
	apply(change{inst: &client.WatchEvent[*api.Instance]{Type: eventDeleted, Object: inst("web-a", "web", "u1", "", "", false)}})
	if s, _ := st.service("default/web"); len(s.Instances) != 1 {
		t.Errorf("after web-a was deleted: %+v", s.Instances)
	}
	apply(change{svc: &client.WatchEvent[*api.Service]{Type: eventDeleted, Object: svc("web", "u1", "10.96.0.1")}})
	if _, ok := st.service("default/web"); ok || len(st.all()) != 0 {
		t.Error("a deleted service is still programmed")
	}
	// A broken watch ends the stream so the caller lists again.
	if err := st.apply(change{inst: &client.WatchEvent[*api.Instance]{Err: errTest}}, dirty); err == nil {
		t.Error("a watch error was swallowed")
	}
}

var errTest = errString("watch broke")

type errString string

func (e errString) Error() string { return string(e) }

// TestIsolationPairs: instances on named networks pair with those of
// their namespace sharing one; others are not members at all.
func TestIsolationPairs(t *testing.T) {
	st := newState()
	put := func(name, owner, ip string, networks ...string) {
		in := inst(name, owner, "u-"+owner, ip, api.PhaseRunning, true)
		in.Spec.Template.Networks = networks
		st.putInstance(in)
	}
	put("proxy-a", "proxy", "10.244.0.2", "front")
	put("app-a", "app", "10.244.0.3", "front", "back")
	put("db-a", "db", "10.244.0.4", "back")
	put("plain-a", "plain", "10.244.0.5")
	put("gone-a", "gone", "", "back") // no address yet
	iso := st.isolation()
	a := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	if len(iso.Members) != 3 || iso.Members[0] != a("10.244.0.2") || iso.Members[2] != a("10.244.0.4") {
		t.Fatalf("members %v", iso.Members)
	}
	has := func(x, y string) bool {
		for _, p := range iso.Pairs {
			if p == [2]netip.Addr{a(x), a(y)} {
				return true
			}
		}
		return false
	}
	for _, c := range []struct {
		x, y string
		want bool
	}{{"10.244.0.2", "10.244.0.3", true}, {"10.244.0.3", "10.244.0.4", true}, {"10.244.0.4", "10.244.0.3", true},
		{"10.244.0.2", "10.244.0.4", false}, {"10.244.0.4", "10.244.0.2", false}, {"10.244.0.4", "10.244.0.4", true}} {
		if has(c.x, c.y) != c.want {
			t.Errorf("pair %s . %s: %v, want %v", c.x, c.y, !c.want, c.want)
		}
	}
}
