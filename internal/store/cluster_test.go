package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// testCluster is n embedded etcd members on loopback, each with its store.
type testCluster struct {
	t       *testing.T
	base    Config // what every member's Config starts from
	dirs    []string
	members []Member
	stores  []*Store
}

func openCluster(t *testing.T, n int) *testCluster {
	t.Helper()
	return openClusterWith(t, n, Config{})
}

// openClusterWith is openCluster with base as each member's Config
// (DataDir and Member set).
func openClusterWith(t *testing.T, n int, base Config) *testCluster {
	t.Helper()
	c := &testCluster{t: t, base: base, stores: make([]*Store, n)}
	initial := map[string]string{}
	for i := range n {
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("s%d", i)
		initial[name] = fmt.Sprintf("http://127.0.0.1:%d", port)
		c.dirs = append(c.dirs, t.TempDir())
		c.members = append(c.members, Member{Name: name, PeerURL: initial[name]})
	}
	for i := range c.members {
		c.members[i].InitialCluster = initial
	}
	// Members wait for a quorum before they are ready: open them together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() { c.stores[i], errs[i] = c.open(i) })
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range c.stores {
			if s != nil {
				s.Close()
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *testCluster) open(i int) (*Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m := c.members[i]
	cfg := c.base
	cfg.DataDir, cfg.Member = c.dirs[i], &m
	return Open(ctx, cfg)
}

// stop closes member i, as a server going away would.
func (c *testCluster) stop(i int) {
	c.stores[i].Close()
	c.stores[i] = nil
}

func TestClusterMembersShareOneStore(t *testing.T) {
	c := openCluster(t, 3)
	ctx := context.Background()
	if err := c.stores[0].Create(ctx, service("web", 2)); err != nil {
		t.Fatal(err)
	}
	for i, s := range c.stores {
		got, err := Get[api.Service](ctx, s, "default", "web")
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
		if got.Spec.Replicas != 2 {
			t.Fatalf("member %d: replicas %d, want 2", i, got.Spec.Replicas)
		}
	}
	// A member that goes away and comes back with its data dir rejoins
	// and catches up on what it missed; it needs only its own name and
	// peer URL, its data knows the rest.
	c.stop(2)
	if err := c.stores[1].Create(ctx, service("api", 1)); err != nil {
		t.Fatal(err)
	}
	c.members[2].InitialCluster = nil
	s, err := c.open(2)
	if err != nil {
		t.Fatalf("restarted member: %v", err)
	}
	c.stores[2] = s
	if _, err := Get[api.Service](ctx, s, "default", "api"); err != nil {
		t.Fatalf("restarted member missed a write: %v", err)
	}
}

func TestNodeLeaseFollowsHeartbeatsAcrossServers(t *testing.T) {
	c := openCluster(t, 3)
	ctx := context.Background()
	const ttl = 2 * time.Second
	alive := func(i int) bool {
		t.Helper()
		live, err := c.stores[i].LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return live["n1"]
	}
	// Heartbeats land on every server in turn for two TTLs: the node
	// stays alive throughout. A server renewing a lease it made itself,
	// rather than the one the key holds now, would let it lapse.
	deadline := time.Now().Add(2 * ttl)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := c.stores[i%3].KeepNodeAlive(ctx, "n1", ttl); err != nil {
			t.Fatal(err)
		}
		if !alive((i + 1) % 3) {
			t.Fatalf("n1 lost its lease while beating (beat %d)", i)
		}
		time.Sleep(300 * time.Millisecond) // the heartbeat interval
	}
	// The server that made the lease goes away; beats through the others
	// keep the node alive past another TTL.
	c.stop(0)
	deadline = time.Now().Add(2 * ttl)
	for i := 0; time.Now().Before(deadline); i++ {
		if err := c.stores[1+i%2].KeepNodeAlive(ctx, "n1", ttl); err != nil {
			t.Fatal(err)
		}
		if !alive(1) {
			t.Fatalf("n1 lost its lease after a server went away (beat %d)", i)
		}
		time.Sleep(300 * time.Millisecond)
	}
	// No server keeps it alive on its own: without beats it lapses.
	stopped := time.Now()
	for alive(2) {
		if time.Since(stopped) > ttl+3*time.Second {
			t.Fatal("n1's lease outlived its heartbeats")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A node's key is marked lapsed only when the server holding its beats
// saw it miss a whole TTL of them: not when it moved to another server,
// nor when its server went away, and never while it beats anywhere.
func TestLapsedOnlyWhenNoServerTakesBeats(t *testing.T) {
	c := openCluster(t, 3)
	ctx := context.Background()
	const ttl = 2 * time.Second
	beat := func(i int, node string) {
		t.Helper()
		if err := c.stores[i].KeepNodeAlive(ctx, node, ttl); err != nil {
			t.Fatal(err)
		}
	}
	state := func() (live, lapsed map[string]bool) {
		t.Helper()
		live, err := c.stores[1].LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if lapsed, err = c.stores[1].LapsedNodesAt(ctx, 0); err != nil {
			t.Fatal(err)
		}
		return live, lapsed
	}
	// moved beats to server 0, then to server 1; stopped beats to server
	// 0 and stops; orphan beats to server 2 alone, which goes away.
	beat(0, "moved")
	beat(0, "stopped")
	beat(2, "orphan")
	c.stop(2)
	for end := time.Now().Add(2*ttl + 2*time.Second); time.Now().Before(end); {
		beat(1, "moved")
		live, lapsed := state()
		if !live["moved"] || lapsed["moved"] {
			t.Fatalf("a node beating to another server: alive %v, lapsed %v", live["moved"], lapsed["moved"])
		}
		time.Sleep(300 * time.Millisecond) // the heartbeat interval
	}
	live, lapsed := state()
	if live["stopped"] || !lapsed["stopped"] {
		t.Errorf("a node that stopped beating: alive %v, lapsed %v; want lapsed", live["stopped"], lapsed["stopped"])
	}
	if live["orphan"] || lapsed["orphan"] {
		t.Errorf("a node whose server went away: alive %v, lapsed %v; want neither", live["orphan"], lapsed["orphan"])
	}
	// Back through any server, it is alive and lapsed no more.
	beat(1, "stopped")
	if live, lapsed := state(); !live["stopped"] || lapsed["stopped"] {
		t.Errorf("a node beating again: alive %v, lapsed %v", live["stopped"], lapsed["stopped"])
	}
}

func TestSharedValueAndExpireAcrossServers(t *testing.T) {
	c := openCluster(t, 3)
	ctx := context.Background()
	got := make([][]byte, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i, s := range c.stores {
		wg.Go(func() {
			got[i], errs[i] = s.SharedValue(ctx, "secret", func() ([]byte, error) {
				return []byte(fmt.Sprintf("made by %d", i)), nil
			})
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	if string(got[0]) != string(got[1]) || string(got[1]) != string(got[2]) {
		t.Fatalf("servers disagree: %q", got)
	}
	again, err := c.stores[2].SharedValue(ctx, "secret", func() ([]byte, error) {
		t.Error("made a value that exists")
		return []byte("x"), nil
	})
	if err != nil || string(again) != string(got[0]) {
		t.Fatalf("second read: %q, %v", again, err)
	}

	// A node's lease ends at once whichever server made it.
	if err := c.stores[0].KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := c.stores[1].ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	live, err := c.stores[2].LiveNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if live["n1"] {
		t.Fatal("n1 is alive after ExpireNode on another server")
	}
}

func TestMemberConfigErrors(t *testing.T) {
	ok := map[string]string{"a": "http://127.0.0.1:2380", "b": "http://127.0.0.2:2380"}
	for _, tc := range []struct {
		name string
		m    Member
	}{
		{"no name", Member{PeerURL: "http://127.0.0.1:2380", InitialCluster: ok}},
		{"https peer", Member{Name: "a", PeerURL: "https://127.0.0.1:2380", InitialCluster: ok}},
		{"no port", Member{Name: "a", PeerURL: "http://127.0.0.1", InitialCluster: ok}},
		{"unspecified", Member{Name: "a", PeerURL: "http://0.0.0.0:2380", InitialCluster: map[string]string{"a": "http://0.0.0.0:2380"}}},
		{"not listed", Member{Name: "c", PeerURL: "http://127.0.0.3:2380", InitialCluster: ok}},
		{"listed elsewhere", Member{Name: "a", PeerURL: "http://127.0.0.9:2380", InitialCluster: ok}},
		{"bad client", Member{Name: "a", PeerURL: "http://127.0.0.1:2380", ClientURL: "127.0.0.1:2379", InitialCluster: ok}},
		{"client off loopback", Member{Name: "a", PeerURL: "http://127.0.0.1:2380", ClientURL: "http://10.0.0.1:2379", InitialCluster: ok}},
		{"http peer with TLS", Member{Name: "a", PeerURL: "http://127.0.0.1:2380", InitialCluster: ok, TLS: &PeerTLS{}}},
	} {
		err := tc.m.validate()
		if !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: got %v, want an invalid argument", tc.name, err)
		}
	}
	good := Member{Name: "a", PeerURL: "http://127.0.0.1:2380", InitialCluster: ok, ClientURL: "http://localhost:2379"}
	if err := good.validate(); err != nil {
		t.Errorf("valid member: %v", err)
	}
	tlsOK := map[string]string{"a": "https://127.0.0.1:2380", "b": "https://127.0.0.2:2380"}
	if err := (&Member{Name: "a", PeerURL: "https://127.0.0.1:2380", InitialCluster: tlsOK, TLS: &PeerTLS{}}).validate(); err != nil {
		t.Errorf("valid TLS member: %v", err)
	}
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// TestLoneMemberHasNoTCPPeerPort: a store of its own (berth up) meets no
// peers, so its peer listener is a unix socket in the root-only etcd dir,
// not a port anyone on the machine could reach in the clear.
func TestLoneMemberHasNoTCPPeerPort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dir := t.TempDir()
	s, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ms, err := s.Client().MemberList(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms.Members {
		for _, u := range m.PeerURLs {
			if !strings.HasPrefix(u, "unix://") {
				t.Errorf("member %s peer URL %s, want a unix socket", m.Name, u)
			}
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "etcd"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("etcd dir: %v, %v; want mode 0700", fi, err)
	}
}
