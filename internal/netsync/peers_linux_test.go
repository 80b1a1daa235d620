package netsync

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

func testNode(t *testing.T, host string, third byte) *network.Node {
	t.Helper()
	n, err := network.NewNode(context.Background(), network.Config{
		Bridge:      fmt.Sprintf("bp%d", third),
		Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, third, 0}), 24),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"),
		StateDir:    t.TempDir(),
		Table:       fmt.Sprintf("berth-node-%d", third),
		HostNetNS:   host,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// TestPeerRoutesAcrossHosts: two hosts on one link, each a node with its
// own pod subnet and peers set from the node list as the plane sets them;
// a container on host 1 connects to one on host 2 by pod IP, unmasqueraded,
// and the reply comes back.
func TestPeerRoutesAcrossHosts(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	h1, h2 := netnstest.Host(t, "h1"), netnstest.Host(t, "h2")
	netnstest.Link(t, h1, "wa", "192.168.250.1/24", h2, "wb", "192.168.250.2/24")
	n1, n2 := testNode(t, h1, 31), testNode(t, h2, 32)
	nodes := nodeMap(
		node("h1", "192.168.250.1", "10.244.31.0/24"),
		node("h2", "192.168.250.2", "10.244.32.0/24"),
		node("joining", "", ""),
		node("elsewhere", "node3.example", "10.244.33.0/24"),
	)
	for _, s := range []struct {
		name string
		n    *network.Node
		own  string
	}{{"h1", n1, "10.244.31.0/24"}, {"h2", n2, "10.244.32.0/24"}} {
		ps := peersOf(s.name, netip.MustParsePrefix(s.own), nodes)
		if len(ps) != 1 {
			t.Fatalf("%s peers %v, want the other host only", s.name, ps)
		}
		if err := s.n.SetPeers(ctx, ps); err != nil {
			t.Fatal(err)
		}
		// Setting the same peers again changes nothing and fails nothing.
		if err := s.n.SetPeers(ctx, ps); err != nil {
			t.Fatal(err)
		}
	}

	c1, err := n1.Attach(ctx, "c1", "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n1.Detach(ctx, "c1") })
	c2, err := n2.Attach(ctx, "c2", "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n2.Detach(ctx, "c2") })

	var l net.Listener
	if err := netns.Do(c2.NetNS, func() (err error) {
		l, err = net.Listen("tcp", net.JoinHostPort(c2.IP.String(), "7000"))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	seen := make(chan string, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			seen <- c.RemoteAddr().(*net.TCPAddr).IP.String()
			_, _ = io.WriteString(c, "c2\n")
			c.Close()
		}
	}()

	// Reaching across takes no retry once the routes are set, but the
	// first SYN may race neighbour discovery; give it a deadline.
	deadline := time.Now().Add(10 * time.Second)
	var reply []byte
	for {
		err = netns.Do(c1.NetNS, func() error {
			d := net.Dialer{Timeout: time.Second}
			c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(c2.IP.String(), "7000"))
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(2 * time.Second))
			reply, err = io.ReadAll(c)
			return err
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatalf("c1 → c2 (%v) across hosts: %v", c2.IP, err)
	}
	if string(reply) != "c2\n" {
		t.Fatalf("reply %q", reply)
	}
	if from := <-seen; from != c1.IP.String() {
		t.Fatalf("c2 saw the client as %s, want %v (not masqueraded)", from, c1.IP)
	}

	// A node that left takes its route with it.
	delete(nodes, "h2")
	if err := n1.SetPeers(ctx, peersOf("h1", netip.MustParsePrefix("10.244.31.0/24"), nodes)); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(h1, func() error {
		rs, err := netlink.RouteGet(c2.IP.AsSlice())
		if err == nil && len(rs) > 0 && rs[0].Gw != nil {
			return fmt.Errorf("route to %v still via %v", c2.IP, rs[0].Gw)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
