package netsync

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testing/unixapi"
)

func node(name, addr, subnet string) *api.Node {
	return &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{Address: addr, PodSubnet: subnet}}
}

func peer(subnet, via string) network.Peer {
	return network.Peer{Subnet: netip.MustParsePrefix(subnet), Via: netip.MustParseAddr(via)}
}

func nodeMap(ns ...*api.Node) map[string]*api.Node {
	m := map[string]*api.Node{}
	for _, n := range ns {
		m[n.Metadata.Name] = n
	}
	return m
}

func TestPeersOf(t *testing.T) {
	own := netip.MustParsePrefix("10.244.1.0/24")
	nodes := nodeMap(
		node("self", "192.168.1.1", "10.244.1.0/24"),
		node("b", "192.168.1.2", "10.244.2.0/24"),
		node("c", "192.168.1.3", "10.244.0.0/24"),
		node("no-subnet", "192.168.1.4", ""),
		node("no-address", "", "10.244.5.0/24"),
		node("hostname", "node6.example", "10.244.6.0/24"),
		node("with-port", "192.168.1.7:7443", "10.244.7.0/24"),
		node("loopback", "127.0.0.1", "10.244.8.0/24"),
		node("v6", "fd00::9", "10.244.9.0/24"),
		node("bad-subnet", "192.168.1.10", "10.244.10.0"),
		node("overlaps-self", "192.168.1.11", "10.244.0.0/16"),
		node("d", "192.168.1.12", "10.244.12.7/24"), // not masked
		node("e-dup", "192.168.1.13", "10.244.2.0/24"),
	)
	got := peersOf("self", own, nodes)
	want := []network.Peer{peer("10.244.0.0/24", "192.168.1.3"), peer("10.244.2.0/24", "192.168.1.2"), peer("10.244.12.0/24", "192.168.1.12")}
	if !slices.Equal(got, want) {
		t.Fatalf("peers:\n got %v\nwant %v", got, want)
	}
	if got := peersOf("self", own, nodeMap(node("self", "192.168.1.1", "10.244.1.0/24"))); got == nil || len(got) != 0 {
		t.Fatalf("a lone node has peers %#v, want none (non-nil)", got)
	}
	// Without a name, the node's own entry still drops out by its subnet.
	if got := peersOf("", own, nodes); !slices.Equal(got, want) {
		t.Fatalf("unnamed: %v", got)
	}
}

// serveAPI runs an API server on a fresh store and returns a client.
func serveAPI(t *testing.T) (*store.Store, *client.Client) {
	t.Helper()
	srv := unixapi.Serve(t, apiserver.Config{})
	return srv.Store, srv.Client
}

func TestPeerFollowerFollowsNodes(t *testing.T) {
	st, c := serveAPI(t)
	ctx := t.Context()
	for _, n := range []*api.Node{
		node("a", "192.168.1.1", "10.244.1.0/24"),
		node("b", "192.168.1.2", "10.244.2.0/24"),
		node("c", "", ""), // joined, no subnet yet
	} {
		if err := st.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var last []network.Peer
	calls := 0
	changed := make(chan struct{}, 1)
	f := &peerFollower{client: c, self: "a", own: netip.MustParsePrefix("10.244.1.0/24"),
		set: func(_ context.Context, ps []network.Peer) error {
			mu.Lock()
			last, calls = slices.Clone(ps), calls+1
			mu.Unlock()
			select {
			case changed <- struct{}{}:
			default:
			}
			return nil
		},
		log: slog.New(slog.DiscardHandler)}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); f.follow(fctx) }()
	t.Cleanup(func() { cancel(); <-done })

	waitPeers := func(what string, want ...network.Peer) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			mu.Lock()
			got := slices.Clone(last)
			mu.Unlock()
			if slices.Equal(got, want) && (len(want) > 0 || got != nil) {
				return
			}
			select {
			case <-changed:
			case <-deadline:
				t.Fatalf("%s: peers %v, want %v", what, got, want)
			}
		}
	}
	waitPeers("listed", peer("10.244.2.0/24", "192.168.1.2"))

	cn := node("c", "192.168.1.3", "10.244.3.0/24")
	if err := st.Update(ctx, cn, 0); err != nil {
		t.Fatal(err)
	}
	waitPeers("c got its subnet", peer("10.244.2.0/24", "192.168.1.2"), peer("10.244.3.0/24", "192.168.1.3"))

	bn := node("b", "192.168.1.22", "10.244.2.0/24")
	if err := st.Update(ctx, bn, 0); err != nil {
		t.Fatal(err)
	}
	waitPeers("b moved", peer("10.244.2.0/24", "192.168.1.22"), peer("10.244.3.0/24", "192.168.1.3"))

	if err := st.Delete(ctx, api.KindNode, "", "b", 0); err != nil {
		t.Fatal(err)
	}
	waitPeers("b left", peer("10.244.3.0/24", "192.168.1.3"))

	// A change that leaves the peers as they are does not reset them.
	mu.Lock()
	before := calls
	mu.Unlock()
	an := node("a", "192.168.1.1", "10.244.1.0/24")
	an.Spec.Unschedulable = true
	if err := st.Update(ctx, an, 0); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, api.KindNode, "", "c", 0); err != nil {
		t.Fatal(err)
	}
	waitPeers("c left")
	mu.Lock()
	after := calls
	mu.Unlock()
	if after != before+1 {
		t.Fatalf("set called %d times for one change of peers, want 1", after-before)
	}
}
