package lan

import (
	"path/filepath"
	"testing"
)

// New only describes the LAN: names, addresses, namespaces and data
// dirs, servers first.
func TestNewDescribesTheHosts(t *testing.T) {
	l := New(Config{Dir: "/d", Name: "x", Servers: 2, Agents: 2})
	want := []struct{ name, addr, ns string }{
		{"s1", "192.168.77.11", "x-h1"},
		{"s2", "192.168.77.12", "x-h2"},
		{"n1", "192.168.77.13", "x-h3"},
		{"n2", "192.168.77.14", "x-h4"},
	}
	hosts := l.hosts()
	if len(l.Servers) != 2 || len(l.Agents) != 2 || len(hosts) != len(want) {
		t.Fatalf("%d servers and %d agents, want 2 and 2", len(l.Servers), len(l.Agents))
	}
	for i, w := range want {
		h := hosts[i]
		if h.Name != w.name || h.Addr != w.addr || h.ns != w.ns || h.Netns != "/run/netns/"+w.ns || h.DataDir != filepath.Join("/d", w.name) {
			t.Errorf("host %d: %+v, want %v", i, h, w)
		}
		if l.Host(w.name) != h {
			t.Errorf("Host(%q) is not host %d", w.name, i)
		}
	}
	if l.sw != "x-sw" || l.Host("n3") != nil || len(l.made) != 0 {
		t.Errorf("switch %q, Host(n3) %v, made %v", l.sw, l.Host("n3"), l.made)
	}
}
