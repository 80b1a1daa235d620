package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// A container address used before answers its first request at once:
// plugging replaces the host's neighbour entry (which may still name the
// MAC of the address's last holder) and teardown removes it; so after a
// small pool wraps and after a restart, the first request to the reused
// address does not wait for a stale entry to fail.
func TestReusedAddressAnswersAtOnce(t *testing.T) {
	testenv.RequireRoot(t)
	host := netnstest.Host(t, "host")
	state := t.TempDir()
	cfg := Config{
		Bridge:      "br-reuse", // in the test's own host namespace
		Subnet:      netip.MustParsePrefix("10.244.77.0/29"),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"),
		StateDir:    state,
		Table:       "berth-node-reuse",
		HostNetNS:   host,
	}
	open := func() *Node {
		n, err := NewNode(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Close)
		return n
	}
	t.Cleanup(func() {
		// After a failure, namespaces still pinned would keep the state dir.
		pins, _ := filepath.Glob(filepath.Join(state, "netns", "*"))
		for _, p := range pins {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	})
	get := httpGetter(host)
	ctx := context.Background()
	stops := map[string]func(){}
	attach := func(n *Node, id string) Attachment {
		t.Helper()
		a, err := n.Attach(ctx, id, "default")
		if err != nil {
			t.Fatal(err)
		}
		stops[id] = startHTTPD(t, a.NetNS, id)
		// Ready as seen from inside and from the link, without a packet
		// that would teach the host the container's MAC: the server
		// listens, and the bridge and its port have their carrier (which
		// the kernel may report up to a second after the link came up:
		// the first container on a new bridge would otherwise see its
		// first SYN lost and resent a second later).
		eventually(t, "httpd in "+id, func() error {
			c, err := inNS(a.NetNS)(ctx, "tcp", "127.0.0.1:80")
			if err == nil {
				c.Close()
			}
			return err
		})
		eventually(t, "the bridge port of "+id, func() error {
			for _, name := range []string{a.HostVeth, cfg.Bridge} {
				l, err := n.host.LinkByName(name)
				if err != nil {
					return err
				}
				if st := l.Attrs().OperState; st != netlink.OperUp {
					return fmt.Errorf("%s is %v", name, st)
				}
			}
			return nil
		})
		return a
	}
	detach := func(n *Node, id string) {
		t.Helper()
		stops[id]()
		delete(stops, id)
		if err := n.Detach(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	// firstRequest times the first request from the host to a.
	firstRequest := func(a Attachment, what string) {
		t.Helper()
		t0 := time.Now()
		body, err := get("http://" + net.JoinHostPort(a.IP.String(), "80") + "/")
		if d := time.Since(t0); err != nil || body != a.ID || d > time.Second {
			t.Errorf("%s: first request to %v (%s): %q, %v after %v; want its answer in under a second", what, a.IP, a.ID, body, err, d)
		}
	}

	n := open()
	// The host talks to c0, then c0 goes: the host learnt c0's MAC.
	c0 := attach(n, "c0")
	firstRequest(c0, "a fresh address")
	detach(n, "c0")
	// The /29 has five addresses: the fifth container after c0 gets c0's.
	var reused Attachment
	for i := 1; i <= 5; i++ {
		a := attach(n, fmt.Sprint("c", i))
		if a.IP == c0.IP {
			reused = a
			break
		}
	}
	if reused.IP != c0.IP {
		t.Fatalf("the /29 never handed out %v again", c0.IP)
	}
	firstRequest(reused, "reused after the pool wrapped")

	// Across a restart: c2's address, used and released just before, is
	// handed out only once no other is free, and then answers at once.
	c2, _ := n.ips.Lookup("c2")
	firstRequest(Attachment{ID: "c2", IP: c2}, "before the restart")
	detach(n, "c3")
	detach(n, "c2")
	n.Close()
	n = open()
	if a := attach(n, "d0"); a.IP == c2 {
		t.Fatalf("after a restart, %v (released last) was handed out while another was free", c2)
	}
	d1 := attach(n, "d1")
	if d1.IP != c2 {
		t.Fatalf("the last free address was %v, want %v", d1.IP, c2)
	}
	firstRequest(d1, "reused after a restart")
	for id := range stops {
		detach(n, id)
	}
}
