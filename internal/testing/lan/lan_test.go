package lan

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
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

// A done Config.Context cuts Start short at its first wait, and Close
// still removes the switch and hosts it made: an interrupted benchmark
// leaves no namespace behind.
func TestContextCutsStartShort(t *testing.T) {
	testenv.RequireRoot(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	name := fmt.Sprintf("lanctx-%d", os.Getpid())
	// /bin/true stands in for berth: the servers "start" and print no join hint.
	l := New(Config{Berth: "/bin/true", Dir: t.TempDir(), Name: name, Servers: 1, Agents: 1, Context: ctx})
	t0 := time.Now()
	err := l.Start()
	took := time.Since(t0)
	made := slices.Clone(l.made)
	l.Close()
	if !errors.Is(err, context.Canceled) || took > 20*time.Second {
		t.Errorf("Start with a done context: %v after %v, want context.Canceled at its first wait", err, took)
	}
	if len(made) != 3 {
		t.Errorf("Start made namespaces %v, want the switch and two hosts", made)
	}
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), name) {
		t.Errorf("namespaces of %s left after Close:\n%s", name, out)
	}
}
