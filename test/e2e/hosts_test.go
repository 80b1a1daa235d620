package e2e

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/testing/lan"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// startLAN starts a LAN of network namespaces (internal/testing/lan) with
// `berth server` on three hosts (one embedded etcd cluster) and `berth
// agent` on three more, joined with the servers' join token, networking
// on, and the demo image on every server: an agent pulls from the server
// it talks to. It returns once the three nodes are Ready. Everything goes
// when the test ends: processes, containers, mounts and namespaces; if
// the test failed, every process's output is logged first.
func startLAN(t *testing.T) *lan.LAN { return startLANOf(t, 3, 3) }

// startLANOf starts a LAN of servers and agents.
func startLANOf(t *testing.T, servers, agents int) *lan.LAN {
	return startLANWith(t, servers, agents, nil)
}

// startLANWith starts a LAN of servers and agents, running images on
// every server (with its data dir) after the demo image is built there.
func startLANWith(t *testing.T, servers, agents int, images func(*env)) *lan.LAN {
	testenv.RequireRoot(t)
	l := lan.New(lan.Config{
		Berth:   berthBin,
		Dir:     t.TempDir(),
		Name:    fmt.Sprintf("berth-e2e-%d-%d", os.Getpid(), netnsSeq.Add(1)),
		Servers: servers,
		Agents:  agents,
		Verbose: true,
		Before: func(s *lan.Host) error {
			e := &env{t: t, dataDir: s.DataDir}
			e.demoImage()
			if images != nil {
				images(e)
			}
			return nil
		},
	})
	t.Cleanup(func() {
		l.Close()
		if t.Failed() {
			l.Logs(t.Logf)
		}
	})
	if err := l.Start(); err != nil {
		t.Fatal(err)
	}
	return l
}

// check fails the test if err is not nil.
func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// waitHealthy waits until owner has n instances, all running and healthy,
// on nodes other than those in avoid, and returns them.
func waitHealthy(t *testing.T, l *lan.LAN, owner string, n int, timeout time.Duration, avoid ...string) []api.Instance {
	t.Helper()
	got, err := l.WaitHealthy(owner, n, timeout, avoid...)
	check(t, err)
	return got
}

// ready reports whether node is Ready.
func ready(t *testing.T, l *lan.LAN, node string) bool {
	t.Helper()
	ok, err := l.Ready(node)
	check(t, err)
	return ok
}

// runningOf counts agent a's running containers of owner's instances.
func runningOf(t *testing.T, a *lan.Host, owner string) int {
	t.Helper()
	n, err := a.RunningOf(owner)
	check(t, err)
	return n
}
