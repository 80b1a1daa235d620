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
	"unicode/utf8"

	"github.com/berth-dev/berth/api"
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

// A wait for healthy instances that times out says what it saw: healthy
// ones per node, the nodes with the age of their last beat, and every
// instance of the owner by node and state, a few named.
func TestDescribeSaysWhatTheWaitSaw(t *testing.T) {
	now := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	inst := func(name, node string, phase api.Phase, healthy bool, msg string) api.Instance {
		in := api.Instance{Metadata: api.Metadata{Name: name}}
		in.Spec.Owner = api.Owner{Kind: api.KindService, Name: "web"}
		in.Spec.Node = node
		in.Status = api.InstanceStatus{Phase: phase, Healthy: healthy, Message: msg}
		if phase == api.PhaseRunning {
			in.Status.IP = "10.244.0.2"
		}
		return in
	}
	var list []api.Instance
	for i := range 10 {
		for _, node := range []string{"n1", "n2", "n3"} {
			list = append(list, inst(fmt.Sprintf("web-%s-%d", node, i), node, api.PhaseRunning, true, ""))
		}
	}
	other := inst("client-1", "n1", api.PhaseRunning, true, "")
	other.Spec.Owner.Name = "client"
	list = append(list, inst("web-x", "", api.PhasePending, false, "unschedulable: no node has 100m of CPU free"), other)
	node := func(name string, cond api.NodeCondition, beat time.Duration) api.Node {
		n := api.Node{Metadata: api.Metadata{Name: name}}
		n.Status = api.NodeStatus{Condition: cond, LastHeartbeat: now.Add(-beat)}
		return n
	}
	nodes := []api.Node{node("n1", api.NodeReady, time.Second), node("n2", api.NodeReady, time.Second),
		node("n3", api.NodeReady, 95*time.Second)}
	got := describe("web", 30, []string{"n3"}, list, true, nodes, nil, now)
	for _, want := range []string{
		"last look: 20 of the 30 wanted healthy off [n3] (per node map[n1:10 n2:10]); web has 31 instances, 30 of them healthy",
		"n3 Ready (beat 1m35s ago);",
		"\n  n3: 10 Running healthy [web-n3-0 web-n3-1 web-n3-2 ...];",
		"\n  -: 1 Pending unhealthy \"unschedulable: no node has 100m of CPU free\" [web-x];",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("describe does not say %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "client-1") {
		t.Errorf("describe names another service's instance:\n%s", got)
	}

	// A big cluster in many states still makes a message of a few lines.
	list, nodes = nil, nil
	for n := range 200 {
		name := fmt.Sprintf("n%d", n)
		nodes = append(nodes, node(name, api.NodeNotReady, time.Minute))
		for i := range 50 {
			list = append(list, inst(fmt.Sprintf("web-%d-%d", n, i), name, api.PhaseStarting, false,
				fmt.Sprintf("state %d %s", i%10, strings.Repeat("é", 500))))
		}
	}
	got = describe("web", 10000, nil, list, true, nodes, nil, now)
	if len(got) > 16_000 || !strings.Contains(got, "and 188 more nodes") || !strings.Contains(got, "and 188 more\n") ||
		!strings.Contains(got, "and 25 more in 5 other states;") || !utf8.ValidString(got) {
		t.Errorf("describe of 200 nodes and 10,000 instances, %d bytes:\n%s", len(got), got)
	}
	if got := describe("web", 1, nil, nil, false, nil, errors.New("no server answers"), now); got !=
		"last look: no list of the instances succeeded\nnodes: no server answers" {
		t.Errorf("describe without a look: %q", got)
	}
}
