package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/network/dns"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/network/vip"
	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// newTestNode starts a Node in host whose bridge and table are numbered by third.
func newTestNode(t *testing.T, host, stateDir string, third byte) *Node {
	t.Helper()
	n, err := NewNode(context.Background(), Config{
		Bridge:      fmt.Sprintf("bt%d", third),
		Subnet:      netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, third, 0}), 24),
		ClusterCIDR: netip.MustParsePrefix("10.244.0.0/16"),
		ServiceCIDR: netip.MustParsePrefix("10.96.0.0/16"),
		StateDir:    stateDir,
		Table:       fmt.Sprintf("berth-node-%d", third),
		HostNetNS:   host,
		SpareNetNS:  2,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Close)
	return n
}

// inNS returns a dialer whose sockets live in the namespace at ns.
func inNS(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := netns.Do(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// httpGetter fetches URLs from inside ns, one connection per request so
// that every request is balanced anew.
func httpGetter(ns string) func(url string) (string, error) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: inNS(ns), DisableKeepAlives: true}}
	return func(url string) (string, error) {
		resp, err := c.Get(url)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return strings.TrimSpace(string(b)), err
	}
}

// startHTTPD serves "name" on port 80 inside ns with busybox httpd, and
// returns a function that stops it (also run at cleanup).
func startHTTPD(t *testing.T, ns, name string) (stop func()) {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte(name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// /cgi-bin/peer answers with the client's address as the server saw it.
	cgi := "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' \"$REMOTE_ADDR\"\n"
	if err := os.MkdirAll(filepath.Join(dir, "cgi-bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgi-bin", "peer"), []byte(cgi), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", "--net="+ns, "busybox", "httpd", "-f", "-p", "80", "-h", dir)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Signal(syscall.SIGKILL)
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	return stop
}

// eventually retries f until it succeeds or the deadline passes.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// spread makes up to max requests and returns who answered how often; it
// stops early once every name in want has answered at least once.
func spread(t *testing.T, get func(string) (string, error), url string, max int, want []string) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for range max {
		body, err := get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		seen[body]++
		all := true
		for _, w := range want {
			all = all && seen[w] > 0
		}
		if all && len(want) > 0 {
			break
		}
	}
	return seen
}

func TestServiceDataPlane(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "host")
	state := t.TempDir()
	node := newTestNode(t, host, state, 7)
	t.Cleanup(func() {
		for _, a := range node.Attachments() {
			if err := node.Detach(ctx, a.ID); err != nil {
				t.Error(err)
			}
		}
	})

	// Four endpoint containers and a client.
	var attach []time.Duration
	eps := map[string]Attachment{}
	stops := map[string]func(){}
	for i := range 4 {
		id := fmt.Sprintf("ep%d", i)
		t0 := time.Now()
		a, err := node.Attach(ctx, id, "default")
		if err != nil {
			t.Fatal(err)
		}
		attach = append(attach, time.Since(t0))
		eps[id] = a
		stops[id] = startHTTPD(t, a.NetNS, id)
	}
	client, err := node.Attach(ctx, "client", "default")
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(attach)
	t.Logf("Attach: min %v, median %v, max %v", attach[0], attach[len(attach)/2], attach[len(attach)-1])
	get := httpGetter(client.NetNS)

	// Containers reach each other by IP on the node.
	for id, a := range eps {
		eventually(t, "direct GET to "+id, func() error {
			body, err := get(fmt.Sprintf("http://%v/", a.IP))
			if err == nil && body != id {
				return fmt.Errorf("got %q", body)
			}
			return err
		})
	}

	prog, err := vip.New(ctx, vip.Config{Table: "berth-svc-7", NetNS: host, LocalSubnet: node.cfg.Subnet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = prog.Close() })
	endpoints := func(ids ...string) []vip.Endpoint {
		var out []vip.Endpoint
		for _, id := range ids {
			out = append(out, vip.Endpoint{Addr: eps[id].IP, Ready: true})
		}
		return out
	}
	web := vip.Service{Name: "default/web", VIP: netip.MustParseAddr("10.96.7.10"),
		Ports:     []vip.Port{{Name: "http", Protocol: vip.TCP, Port: 80, HostPort: 18080}},
		Endpoints: endpoints("ep0", "ep1", "ep2")}
	if err := prog.Sync(ctx, []vip.Service{web}); err != nil {
		t.Fatal(err)
	}
	url := "http://10.96.7.10/"

	t.Run("three endpoints all answer", func(t *testing.T) {
		seen := spread(t, get, url, 30, []string{"ep0", "ep1", "ep2"})
		if len(seen) != 3 || seen["ep3"] > 0 {
			t.Fatalf("30 requests to the VIP reached %v, want ep0..ep2", seen)
		}
		// The endpoint sees the client itself, not the node.
		body, err := get(url + "cgi-bin/peer")
		if err != nil || peerAddr(body) != client.IP.String() {
			t.Fatalf("endpoint saw the client as %q (%v), want %v", body, err, client.IP)
		}
	})

	t.Run("added endpoint answers", func(t *testing.T) {
		web.Endpoints = endpoints("ep0", "ep1", "ep2", "ep3")
		if err := prog.SetEndpoints(ctx, web.Name, web.Endpoints); err != nil {
			t.Fatal(err)
		}
		seen := spread(t, get, url, 80, []string{"ep0", "ep1", "ep2", "ep3"})
		if len(seen) != 4 {
			t.Fatalf("after adding ep3: %v", seen)
		}
	})

	t.Run("removed endpoint gets nothing", func(t *testing.T) {
		web.Endpoints = endpoints("ep0", "ep2", "ep3")
		if err := prog.SetEndpoints(ctx, web.Name, web.Endpoints); err != nil {
			t.Fatal(err)
		}
		seen := spread(t, get, url, 40, nil)
		if seen["ep1"] > 0 || len(seen) != 3 {
			t.Fatalf("after removing ep1: %v", seen)
		}
	})

	t.Run("unhealthy endpoint leaves until healthy", func(t *testing.T) {
		sick := slices.Clone(web.Endpoints)
		sick[1].Ready = false // ep2
		if err := prog.SetEndpoints(ctx, web.Name, sick); err != nil {
			t.Fatal(err)
		}
		if seen := spread(t, get, url, 40, nil); seen["ep2"] > 0 {
			t.Fatalf("unhealthy ep2 still served: %v", seen)
		}
		if err := prog.SetEndpoints(ctx, web.Name, web.Endpoints); err != nil {
			t.Fatal(err)
		}
		if seen := spread(t, get, url, 80, []string{"ep2"}); seen["ep2"] == 0 {
			t.Fatalf("healthy again, ep2 not served: %v", seen)
		}
	})

	t.Run("published port via loopback on the host", func(t *testing.T) {
		hostGet := httpGetter(host)
		seen := spread(t, hostGet, "http://127.0.0.1:18080/", 60, []string{"ep0", "ep2", "ep3"})
		if len(seen) != 3 || seen["ep1"] > 0 {
			t.Fatalf("127.0.0.1:18080 reached %v, want ep0, ep2, ep3", seen)
		}
		// The host reaches the VIP itself too (output hook).
		if body, err := hostGet(url); err != nil || !strings.HasPrefix(body, "ep") {
			t.Fatalf("VIP from the host: %q, %v", body, err)
		}
		// And from a container, via the gateway's address.
		if body, err := get(fmt.Sprintf("http://%v:18080/", node.Gateway())); err != nil || !strings.HasPrefix(body, "ep") {
			t.Fatalf("gateway:18080 from a container: %q, %v", body, err)
		}
	})

	t.Run("service with no ready endpoint is refused at once", func(t *testing.T) {
		empty := vip.Service{Name: "default/empty", VIP: netip.MustParseAddr("10.96.7.11"), Ports: []vip.Port{{Protocol: vip.TCP, Port: 80}}}
		if err := prog.UpsertService(ctx, empty); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := prog.RemoveService(ctx, empty.Name); err != nil {
				t.Error(err)
			}
		}()
		t0 := time.Now()
		_, err := get("http://10.96.7.11/")
		if err == nil || time.Since(t0) > time.Second {
			t.Fatalf("empty service: err %v after %v, want a fast refusal", err, time.Since(t0))
		}
	})

	t.Run("an endpoint reaches its own service", func(t *testing.T) {
		self := vip.Service{Name: "default/self", VIP: netip.MustParseAddr("10.96.7.12"),
			Ports: []vip.Port{{Protocol: vip.TCP, Port: 80}}, Endpoints: endpoints("ep0")}
		if err := prog.UpsertService(ctx, self); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := prog.RemoveService(ctx, self.Name); err != nil {
				t.Error(err)
			}
		}()
		body, err := httpGetter(eps["ep0"].NetNS)("http://10.96.7.12/")
		if err != nil || body != "ep0" {
			t.Fatalf("ep0 → its own VIP: %q, %v", body, err)
		}
	})

	t.Run("DNS from a container", func(t *testing.T) {
		resolv, err := os.ReadFile(client.ResolvConf)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("nameserver %v\n", node.Gateway()); !strings.Contains(string(resolv), want) ||
			!strings.Contains(string(resolv), "search default.berth berth") {
			t.Fatalf("resolv.conf:\n%s", resolv)
		}
		srv := dns.NewServer(dns.Config{})
		srv.SetServices([]dns.Service{{Namespace: "default", Name: "web", VIP: web.VIP,
			Ports: []dns.Port{{Name: "http", Protocol: "tcp", Port: 80}}}})
		pc, l, err := node.ListenDNS(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(dctx, pc, l) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		ask := func(name string, qt uint16) *mdns.Msg {
			conn, err := inNS(client.NetNS)(ctx, "udp", net.JoinHostPort(node.Gateway().String(), "53"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			m := new(mdns.Msg)
			m.SetQuestion(name, qt)
			c := &mdns.Client{Timeout: time.Second}
			r, _, err := c.ExchangeWithConn(m, &mdns.Conn{Conn: conn})
			if err != nil {
				t.Fatalf("query %s: %v", name, err)
			}
			return r
		}
		r := ask("web.default.berth.", mdns.TypeA)
		if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.96.7.10" {
			t.Fatalf("A from the container: %v", r)
		}
		if r := ask("nope.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("unknown name: %v", r)
		}
		if r := ask("_http._tcp.web.default.berth.", mdns.TypeSRV); len(r.Answer) != 1 || r.Answer[0].(*mdns.SRV).Port != 80 {
			t.Fatalf("SRV: %v", r)
		}
		// TCP too (large answers, and resolvers that retry over TCP).
		conn, err := inNS(client.NetNS)(ctx, "tcp", net.JoinHostPort(node.Gateway().String(), "53"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		m := new(mdns.Msg)
		m.SetQuestion("web.default.berth.", mdns.TypeA)
		r, _, err = (&mdns.Client{Net: "tcp", Timeout: time.Second}).ExchangeWithConn(m, &mdns.Conn{Conn: conn})
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("A over TCP: %v, %v", r, err)
		}
	})

	t.Run("UDP service", func(t *testing.T) {
		// A DNS server inside ep3's namespace behind a UDP VIP.
		srv := dns.NewServer(dns.Config{})
		srv.SetServices([]dns.Service{{Namespace: "ns", Name: "probe", VIP: netip.MustParseAddr("10.1.2.3")}})
		var pc net.PacketConn
		if err := netns.Do(eps["ep3"].NetNS, func() (err error) {
			pc, err = net.ListenPacket("udp4", ":5353")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- srv.Serve(sctx, pc, nil) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Error(err)
			}
		}()
		udp := vip.Service{Name: "default/udp", VIP: netip.MustParseAddr("10.96.7.13"),
			Ports: []vip.Port{{Protocol: vip.UDP, Port: 53, TargetPort: 5353}}, Endpoints: endpoints("ep3")}
		if err := prog.UpsertService(ctx, udp); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := prog.RemoveService(ctx, udp.Name); err != nil {
				t.Error(err)
			}
		}()
		conn, err := inNS(client.NetNS)(ctx, "udp", "10.96.7.13:53")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		m := new(mdns.Msg)
		m.SetQuestion("probe.ns.berth.", mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: time.Second}).ExchangeWithConn(m, &mdns.Conn{Conn: conn})
		if err != nil || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.1.2.3" {
			t.Fatalf("DNS over a UDP VIP: %v, %v", r, err)
		}
	})

	t.Run("restart resyncs to an identical ruleset", func(t *testing.T) {
		before := netnstest.NftTable(t, host, "berth-svc-7")
		p2, err := vip.New(ctx, vip.Config{Table: "berth-svc-7", NetNS: host, LocalSubnet: node.cfg.Subnet})
		if err != nil {
			t.Fatal(err)
		}
		defer p2.Close()
		if err := p2.Sync(ctx, []vip.Service{web}); err != nil {
			t.Fatal(err)
		}
		if after := netnstest.NftTable(t, host, "berth-svc-7"); after != before {
			t.Fatalf("ruleset changed:\n%s\nvs\n%s", before, after)
		}
		n2 := newTestNode(t, host, state, 7)
		if got, want := ids(n2.Attachments()), ids(node.Attachments()); !slices.Equal(got, want) {
			t.Fatalf("restarted node sees %v, want %v", got, want)
		}
		// Attaching a live container again returns what it has.
		again, err := n2.Attach(ctx, "ep0", "default")
		if err != nil || again.IP != eps["ep0"].IP {
			t.Fatalf("re-attach ep0: %v %v, want %v", again.IP, err, eps["ep0"].IP)
		}
	})

	t.Run("outbound traffic is masqueraded", func(t *testing.T) {
		// An "outside" namespace behind the host with no route back to the
		// pod subnet: a connection from a container works only if NATed.
		outside := outsideNS(t, host)
		startHTTPD(t, outside, "outside")
		eventually(t, "GET outside from a container", func() error {
			body, err := get("http://192.168.77.2/")
			if err == nil && body != "outside" {
				return fmt.Errorf("got %q", body)
			}
			return err
		})
	})

	t.Run("detach and stale release leak nothing", func(t *testing.T) {
		// The runtime stops a container before its network goes.
		ep1 := eps["ep1"]
		stops["ep1"]()
		if err := node.Detach(ctx, "ep1"); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(ep1.NetNS); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("netns of ep1 left: %v", err)
		}
		eventually(t, "veth of ep1 goes", func() error {
			return netns.Do(host, func() error {
				if _, err := netlink.LinkByName(ep1.HostVeth); err == nil {
					return errors.New("still there")
				}
				return nil
			})
		})
		// ep3 vanished while the agent was down.
		stops["ep3"]()
		gone, err := node.ReleaseStale(ctx, []string{"ep0", "ep2", "client"})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gone, []string{"ep3"}) {
			t.Fatalf("released %v, want [ep3]", gone)
		}
		if got := ids(node.Attachments()); !slices.Equal(got, []string{"client", "ep0", "ep2"}) {
			t.Fatalf("attachments %v", got)
		}
		// Freed addresses come back only after the others.
		a, err := node.Attach(ctx, "ep9", "default")
		if err != nil {
			t.Fatal(err)
		}
		if a.IP == ep1.IP || a.IP == eps["ep3"].IP {
			t.Fatalf("address %v handed out again at once", a.IP)
		}
	})
}

func ids(as []Attachment) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.ID)
	}
	return out
}

// outsideNS links a new namespace to host over a veth: host 192.168.77.1,
// outside 192.168.77.2, and the outside has no route to the pods.
func outsideNS(t *testing.T, host string) string {
	t.Helper()
	path := netnstest.Host(t, "outside")
	netnstest.Link(t, host, "up0", "192.168.77.1/24", path, "eth0", "192.168.77.2/24")
	return path
}

func TestParallelAttachDetachLeaksNothing(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "host")
	state := t.TempDir()
	node := newTestNode(t, host, state, 8)
	t.Cleanup(func() {
		for _, a := range node.Attachments() {
			_ = node.Detach(ctx, a.ID)
		}
	})
	bridgeMAC := func() string {
		l, err := node.host.LinkByName(node.cfg.Bridge)
		if err != nil {
			t.Fatal(err)
		}
		return l.Attrs().HardwareAddr.String()
	}
	// The gateway's MAC must not follow the bridge's ports: containers cache it.
	mac := bridgeMAC()
	defer func() {
		if got := bridgeMAC(); got != mac {
			t.Errorf("bridge MAC changed from %s to %s as containers came and went", mac, got)
		}
	}()
	const n = 24
	type result struct {
		a   Attachment
		err error
	}
	res := make(chan result, n)
	for i := range n {
		go func() {
			a, err := node.Attach(ctx, fmt.Sprintf("c%02d", i), "")
			res <- result{a, err}
		}()
	}
	seen := map[netip.Addr]string{}
	for range n {
		r := <-res
		if r.err != nil {
			t.Fatal(r.err)
		}
		if other, dup := seen[r.a.IP]; dup {
			t.Fatalf("%v given to %s and %s", r.a.IP, r.a.ID, other)
		}
		seen[r.a.IP] = r.a.ID
	}
	// Every container reaches the gateway through its own veth.
	for ip, id := range seen {
		a := Attachment{NetNS: filepath.Join(state, "netns", id)}
		if err := netns.Do(a.NetNS, func() error {
			addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
			if err != nil {
				return err
			}
			for _, ad := range addrs {
				if ad.IP.Equal(ip.AsSlice()) {
					return nil
				}
			}
			return fmt.Errorf("%s: %v not configured: %v", id, ip, addrs)
		}); err != nil {
			t.Fatal(err)
		}
	}

	released, err := node.ReleaseStale(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(released) != n {
		t.Fatalf("released %d, want %d", len(released), n)
	}
	if got := node.Attachments(); len(got) != 0 {
		t.Fatalf("left after release: %v", ids(got))
	}
	for _, dir := range []string{"ipam", "netns", "resolv"} {
		ents, _ := os.ReadDir(filepath.Join(state, dir))
		for _, e := range ents {
			// .released keeps when each address was freed (one small file
			// per address of the pool, at most): it orders their reuse.
			if e.Name() != ".spare" && (dir != "ipam" || e.Name() != ".released") {
				t.Fatalf("%s/%s left", dir, e.Name())
			}
		}
	}
	eventually(t, "every veth goes", func() error {
		return netns.Do(host, func() error {
			links, err := netlink.LinkList()
			if err != nil {
				return err
			}
			for _, l := range links {
				if strings.HasPrefix(l.Attrs().Name, "vb") {
					return fmt.Errorf("veth %s left", l.Attrs().Name)
				}
			}
			return nil
		})
	})
}

func TestAttachRejectsBadIDs(t *testing.T) {
	for _, id := range []string{"", "..", "a/b", "x y", strings.Repeat("a", 201)} {
		if err := validID(id); !errors.Is(err, ErrInvalid) {
			t.Errorf("id %q accepted", id)
		}
	}
	if vethName("a") == vethName("b") || len(vethName("some-long-container-id")) > 15 {
		t.Fatal("veth names collide or are too long")
	}
}

// peerAddr reads busybox httpd's REMOTE_ADDR, which it writes as an
// IPv4-mapped IPv6 address.
func peerAddr(body string) string {
	a, err := netip.ParseAddr(strings.Trim(body, "[]"))
	if err != nil {
		return body
	}
	return a.Unmap().String()
}

// linkHosts joins two host namespaces with a veth: a gets 192.168.50.1,
// b 192.168.50.2.
func linkHosts(t *testing.T, a, b string) {
	t.Helper()
	netnstest.Link(t, a, "na", "192.168.50.1/24", b, "nb", "192.168.50.2/24")
}

func TestTwoNodes(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	hostA, hostB := netnstest.Host(t, "a"), netnstest.Host(t, "b")
	linkHosts(t, hostA, hostB)
	nodeA := newTestNode(t, hostA, t.TempDir(), 10)
	nodeB := newTestNode(t, hostB, t.TempDir(), 11)
	t.Cleanup(func() {
		_ = nodeA.Detach(ctx, "ca")
		_ = nodeB.Detach(ctx, "cb")
	})
	ca, err := nodeA.Attach(ctx, "ca", "default")
	if err != nil {
		t.Fatal(err)
	}
	cb, err := nodeB.Attach(ctx, "cb", "default")
	if err != nil {
		t.Fatal(err)
	}
	startHTTPD(t, cb.NetNS, "cb")
	if err := nodeA.SetPeers(ctx, []Peer{{Subnet: nodeB.cfg.Subnet, Via: netip.MustParseAddr("192.168.50.2")}}); err != nil {
		t.Fatal(err)
	}
	if err := nodeB.SetPeers(ctx, []Peer{{Subnet: nodeA.cfg.Subnet, Via: netip.MustParseAddr("192.168.50.1")}}); err != nil {
		t.Fatal(err)
	}
	get := httpGetter(ca.NetNS)

	// Pod to pod across nodes, by IP, with the client's own address.
	eventually(t, "GET cb from ca", func() error {
		body, err := get(fmt.Sprintf("http://%v/cgi-bin/peer", cb.IP))
		if err == nil && peerAddr(body) != ca.IP.String() {
			return fmt.Errorf("cb saw the client as %q, want %v", body, ca.IP)
		}
		return err
	})

	// A VIP on node A balancing to an endpoint on node B, by name.
	svcs, err := NewServices(ctx, vip.Config{Table: "berth-svc-10", NetNS: hostA, LocalSubnet: nodeA.cfg.Subnet}, dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcs.Close() })
	if unpublished, err := svcs.Sync(ctx, []Service{{Namespace: "default", Name: "b", VIP: netip.MustParseAddr("10.96.10.1"),
		Ports:     []ServicePort{{Name: "http", Protocol: vip.TCP, Port: 8080, TargetPort: 80, HostPort: 18080}},
		Instances: []Instance{{Name: "b-0", IP: cb.IP, Ready: true}}}}); err != nil || unpublished != nil {
		t.Fatal(err, unpublished)
	}
	pc, l, err := nodeA.ListenDNS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dctx, cancel := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- svcs.DNS().Serve(dctx, pc, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Error(err)
		}
	})
	lookup := func(name string) string {
		conn, err := inNS(ca.NetNS)(ctx, "udp", net.JoinHostPort(nodeA.Gateway().String(), "53"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		m := new(mdns.Msg)
		m.SetQuestion(name, mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: time.Second}).ExchangeWithConn(m, &mdns.Conn{Conn: conn})
		if err != nil || len(r.Answer) != 1 {
			t.Fatalf("A %s: %v, %v", name, r, err)
		}
		return r.Answer[0].(*mdns.A).A.String()
	}
	if got := lookup("b.default.berth."); got != "10.96.10.1" {
		t.Fatalf("b.default.berth → %s", got)
	}
	if got := lookup("b-0.b.default.berth."); got != cb.IP.String() {
		t.Fatalf("b-0.b.default.berth → %s, want %v", got, cb.IP)
	}
	body, err := get("http://10.96.10.1:8080/cgi-bin/peer")
	if err != nil || peerAddr(body) != ca.IP.String() {
		t.Fatalf("VIP on A → endpoint on B: %q, %v", body, err)
	}

	// A client outside the cluster (node B's host itself) reaches the
	// published port on node A, whose endpoint is on node B: the reply has
	// to come back through A.
	body, err = httpGetter(hostB)("http://192.168.50.1:18080/")
	if err != nil || body != "cb" {
		t.Fatalf("published port on A from outside, endpoint on B: %q, %v", body, err)
	}

	// Peers that left lose their routes; routes of others stay.
	if err := nodeA.SetPeers(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(hostA, func() error {
		rs, err := netlink.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Protocol: routeProtocol}, netlink.RT_FILTER_PROTOCOL)
		if err != nil {
			return err
		}
		for _, r := range rs {
			if r.Gw != nil {
				return fmt.Errorf("peer route left: %v", r)
			}
		}
		if _, err := netlink.RouteGet(net.ParseIP("192.168.50.2")); err != nil {
			return fmt.Errorf("link route gone too: %w", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

func TestAttachRepairsAHalfMadeAttachment(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "host")
	node := newTestNode(t, host, t.TempDir(), 12)
	a, err := node.Attach(ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Detach(ctx, "c1") })
	// As if the agent died between creating the namespace and the veth.
	if err := netns.Do(host, func() error {
		l, err := netlink.LinkByName(a.HostVeth)
		if err != nil {
			return err
		}
		return netlink.LinkDel(l)
	}); err != nil {
		t.Fatal(err)
	}
	b, err := node.Attach(ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	if got := node.Attachments(); len(got) != 1 || got[0].IP != b.IP {
		t.Fatalf("after repair: %+v, want only c1 with %v", got, b.IP)
	}
	// The rebuilt attachment works: its address is on eth0 and the
	// gateway answers.
	if err := netns.Do(b.NetNS, func() error {
		c, err := net.DialTimeout("udp", net.JoinHostPort(b.Gateway.String(), "9"), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != b.IP.String() {
			return fmt.Errorf("source %s, want %v", got, b.IP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Attaching again changes nothing.
	c, err := node.Attach(ctx, "c1", "")
	if err != nil || c != b {
		t.Fatalf("idempotent attach: %+v %v, want %+v", c, err, b)
	}
}

func TestSpareNamespacesAreUsedAndRemoved(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "host")
	state := t.TempDir()
	node := newTestNode(t, host, state, 14)
	eventually(t, "spares made", func() error {
		if n := node.SparesReady(); n != 2 {
			return fmt.Errorf("%d spares ready", n)
		}
		return nil
	})
	// Which namespaces wait, by inode.
	nsInode := func(path string) uint64 {
		var st unix.Stat_t
		if err := unix.Stat(path, &st); err != nil {
			t.Fatal(err)
		}
		return st.Ino
	}
	waiting := map[uint64]bool{}
	ents, _ := os.ReadDir(filepath.Join(state, "netns", ".spare"))
	for _, e := range ents {
		waiting[nsInode(filepath.Join(state, "netns", ".spare", e.Name()))] = true
	}
	a, err := node.Attach(ctx, "c1", "")
	if err != nil {
		t.Fatal(err)
	}
	if !waiting[nsInode(a.NetNS)] {
		t.Fatalf("Attach made a namespace while %d spares waited", len(waiting))
	}
	// The adopted namespace is fully set up: lo up, eth0 with the address.
	if err := netns.Do(a.NetNS, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil || lo.Attrs().Flags&net.FlagUp == 0 {
			return fmt.Errorf("lo not up: %v", err)
		}
		eth, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		addrs, err := netlink.AddrList(eth, netlink.FAMILY_V4)
		if err != nil || len(addrs) != 1 || !addrs[0].IP.Equal(a.IP.AsSlice()) {
			return fmt.Errorf("eth0 addresses %v, %v", addrs, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "spare refilled", func() error {
		if n := node.SparesReady(); n != 2 {
			return fmt.Errorf("%d spares ready", n)
		}
		return nil
	})
	if err := node.Detach(ctx, "c1"); err != nil {
		t.Fatal(err)
	}
	node.Close()
	if _, err := node.Attach(ctx, "c2", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Attach on a closed node: %v", err)
	}
	ents, _ = os.ReadDir(filepath.Join(state, "netns", ".spare"))
	if len(ents) != 0 {
		t.Fatalf("%d spare namespaces left after Close", len(ents))
	}
}

// Reserve hands out the address and paths at once and builds nothing;
// wire then makes a working attachment. Reserving an attached id again
// changes nothing and its wire does nothing.
func TestReserveThenWire(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "host")
	node := newTestNode(t, host, t.TempDir(), 13)
	a, wire, err := node.Reserve(ctx, "c1", "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = node.Detach(ctx, "c1") })
	if !a.IP.IsValid() || !node.cfg.Subnet.Contains(a.IP) {
		t.Fatalf("reserved address %v, want one in %v", a.IP, node.cfg.Subnet)
	}
	if _, err := os.Stat(a.NetNS); !os.IsNotExist(err) {
		t.Fatalf("the namespace %s exists before wire (%v)", a.NetNS, err)
	}
	// The resolver file is there already: a runtime checks its mounts'
	// sources before the namespace is wired.
	if b, err := os.ReadFile(a.ResolvConf); err != nil || !strings.Contains(string(b), "search default.") {
		t.Fatalf("resolv.conf after Reserve: %q, %v; want one searching default.", b, err)
	}
	if err := wire(); err != nil {
		t.Fatal(err)
	}
	if err := netns.Do(a.NetNS, func() error {
		c, err := net.DialTimeout("udp", net.JoinHostPort(a.Gateway.String(), "9"), time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		if got := c.LocalAddr().(*net.UDPAddr).IP.String(); got != a.IP.String() {
			return fmt.Errorf("source %s, want %v", got, a.IP)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	b, again, err := node.Reserve(ctx, "c1", "default")
	if err != nil || b != a {
		t.Fatalf("reserve of an attached id: %+v %v, want %+v", b, err, a)
	}
	if err := again(); err != nil {
		t.Fatal(err)
	}
	if got := node.Attachments(); len(got) != 1 || got[0].IP != a.IP {
		t.Fatalf("attachments %+v, want only c1 with %v", got, a.IP)
	}
}
