package dns

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// serve starts s on a loopback UDP port and returns its address.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, pc, nil) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return pc.LocalAddr().String()
}

func query(t *testing.T, addr, name string, qtype uint16) (*mdns.Msg, time.Duration) {
	t.Helper()
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	c := &mdns.Client{Timeout: 2 * time.Second}
	r, rtt, err := c.Exchange(m, addr)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r, rtt
}

func web() Service {
	return Service{
		Namespace: "default", Name: "web", VIP: netip.MustParseAddr("10.96.0.10"),
		Ports: []Port{{Name: "http", Protocol: "tcp", Port: 80}, {Protocol: "tcp", Port: 9090}},
		Instances: []Instance{
			{Name: "web-0", IP: netip.MustParseAddr("10.244.0.2")},
			{Name: "web-1", IP: netip.MustParseAddr("10.244.0.3")},
		},
	}
}

func TestAnswers(t *testing.T) {
	s := NewServer(Config{})
	s.SetServices([]Service{web()})
	addr := serve(t, s)

	r, _ := query(t, addr, "web.default.berth.", mdns.TypeA)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.96.0.10" {
		t.Fatalf("A web.default.berth: %v", r)
	}
	if !r.Authoritative {
		t.Fatal("answer not authoritative")
	}
	// Case does not matter.
	if r, _ := query(t, addr, "WEB.Default.BERTH.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("mixed case: %v", r)
	}

	r, _ = query(t, addr, "_http._tcp.web.default.berth.", mdns.TypeSRV)
	if len(r.Answer) != 1 {
		t.Fatalf("SRV: %v", r)
	}
	srv := r.Answer[0].(*mdns.SRV)
	if srv.Port != 80 || srv.Target != "web.default.berth." {
		t.Fatalf("SRV: %v", srv)
	}
	if len(r.Extra) != 1 || r.Extra[0].(*mdns.A).A.String() != "10.96.0.10" {
		t.Fatalf("SRV without the target's address: %v", r.Extra)
	}

	r, _ = query(t, addr, "web-1.web.default.berth.", mdns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.244.0.3" {
		t.Fatalf("instance A: %v", r)
	}

	// A name that exists, asked for a type it lacks: empty NOERROR.
	r, _ = query(t, addr, "web.default.berth.", mdns.TypeAAAA)
	if r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("AAAA web: %v", r)
	}
	// An empty non-terminal exists too.
	if r, _ := query(t, addr, "default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess {
		t.Fatalf("default.berth: rcode %v", r.Rcode)
	}
}

func TestUnknownNamesFailFast(t *testing.T) {
	s := NewServer(Config{})
	s.SetServices([]Service{web()})
	addr := serve(t, s)
	for _, name := range []string{"nope.default.berth.", "web.other.berth.", "_grpc._tcp.web.default.berth.", "example.com."} {
		r, rtt := query(t, addr, name, mdns.TypeA)
		if r.Rcode != mdns.RcodeNameError {
			t.Fatalf("%s: rcode %s, want NXDOMAIN", name, mdns.RcodeToString[r.Rcode])
		}
		if rtt > 100*time.Millisecond {
			t.Fatalf("%s: NXDOMAIN took %v", name, rtt)
		}
	}
	// The unnamed port has no SRV record.
	if r, _ := query(t, addr, "_._tcp.web.default.berth.", mdns.TypeSRV); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("unnamed port: %v", r)
	}
}

func TestUpdatesAndRemoval(t *testing.T) {
	s := NewServer(Config{})
	addr := serve(t, s)
	s.UpsertService(web())
	w := web()
	w.VIP = netip.MustParseAddr("10.96.0.99")
	w.Instances = w.Instances[:1]
	s.UpsertService(w)
	r, _ := query(t, addr, "web.default.berth.", mdns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.96.0.99" {
		t.Fatalf("after update: %v", r)
	}
	if r, _ := query(t, addr, "web-1.web.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("removed instance still answers: %v", r)
	}
	s.RemoveService("default", "web")
	for _, name := range []string{"web.default.berth.", "web-0.web.default.berth.", "default.berth."} {
		if r, _ := query(t, addr, name, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("%s after removal: %v", name, r)
		}
	}
}

func TestForwardsOutsideTheDomain(t *testing.T) {
	up := NewServer(Config{Domain: "example"})
	up.SetServices([]Service{{Namespace: "ns", Name: "svc", VIP: netip.MustParseAddr("10.1.2.3")}})
	upAddr := serve(t, up)
	s := NewServer(Config{Upstreams: []string{upAddr}})
	addr := serve(t, s)
	r, _ := query(t, addr, "svc.ns.example.", mdns.TypeA)
	if len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.1.2.3" {
		t.Fatalf("forwarded: %v", r)
	}
}

func TestServiceWithoutVIP(t *testing.T) {
	s := NewServer(Config{})
	w := web()
	w.VIP = netip.Addr{}
	s.UpsertService(w)
	addr := serve(t, s)
	if r, _ := query(t, addr, "web.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 0 {
		t.Fatalf("service without VIP: %v", r)
	}
	if r, _ := query(t, addr, "web-0.web.default.berth.", mdns.TypeA); len(r.Answer) != 1 {
		t.Fatalf("instance of a service without VIP: %v", r)
	}
	s.RemoveService("default", "web")
	for _, name := range []string{"web-0.web.default.berth.", "web.default.berth.", "default.berth."} {
		if r, _ := query(t, addr, name, mdns.TypeA); r.Rcode != mdns.RcodeNameError {
			t.Fatalf("%s after removal: %v", name, r)
		}
	}
}

// TestAliases: a service's aliases answer its VIP in its namespace, and
// go when the service drops them or goes.
func TestAliases(t *testing.T) {
	s := NewServer(Config{})
	svc := web()
	svc.Aliases = []string{"www", "frontend"}
	s.SetServices([]Service{svc})
	addr := serve(t, s)
	for _, name := range []string{"www.default.berth.", "frontend.default.berth."} {
		if r, _ := query(t, addr, name, mdns.TypeA); len(r.Answer) != 1 || r.Answer[0].(*mdns.A).A.String() != "10.96.0.10" {
			t.Fatalf("A %s: %v", name, r)
		}
	}
	if r, _ := query(t, addr, "www.other.berth.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("an alias answered outside its namespace: %v", r)
	}
	svc.Aliases = []string{"frontend"}
	s.UpsertService(svc)
	if r, _ := query(t, addr, "www.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("a dropped alias still answers: %v", r)
	}
	s.RemoveService("default", "web")
	if r, _ := query(t, addr, "frontend.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeNameError {
		t.Fatalf("an alias of a removed service still answers: %v", r)
	}
}

// readCounter counts the reads of a packet socket.
type readCounter struct {
	net.PacketConn
	reads atomic.Int64
}

func (c *readCounter) ReadFrom(p []byte) (int, net.Addr, error) {
	c.reads.Add(1)
	return c.PacketConn.ReadFrom(p)
}

// An idle server waits for its next packet without waking up (the
// library's read timeout woke it every two seconds), and still stops at
// once when asked.
func TestIdleServerWaitsWithoutWaking(t *testing.T) {
	s := NewServer(Config{})
	s.SetServices([]Service{web()})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rc := &readCounter{PacketConn: pc}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, rc, nil) }()
	if r, _ := query(t, pc.LocalAddr().String(), "web.default.berth.", mdns.TypeA); len(r.Answer) == 0 {
		t.Fatal("no answer")
	}
	// Past the library's own timeout: nothing to wait for, since the
	// point is that nothing happens.
	time.Sleep(2500 * time.Millisecond)
	if n := rc.reads.Load(); n > 2 {
		t.Errorf("%d reads for one query, want 2 (the query, then the wait for the next)", n)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not stop")
	}
}

// Until it has listed the services, a node's server holds a query for a
// cluster name rather than deny the name, and answers it once it has;
// past SyncWait it fails the query, still without denying the name.
// Names outside the domain do not wait.
func TestQueriesWaitForTheFirstList(t *testing.T) {
	s := NewServer(Config{SyncWait: time.Minute})
	addr := serve(t, s)
	if r, rtt := query(t, addr, "example.com.", mdns.TypeA); r.Rcode != mdns.RcodeNameError || rtt > time.Second {
		t.Fatalf("a name outside the domain before the list: %s after %v", mdns.RcodeToString[r.Rcode], rtt)
	}
	got := make(chan *mdns.Msg, 1)
	go func() {
		m := new(mdns.Msg)
		m.SetQuestion("web.default.berth.", mdns.TypeA)
		r, _, err := (&mdns.Client{Timeout: time.Minute}).Exchange(m, addr)
		if err != nil {
			t.Error(err)
		}
		got <- r
	}()
	deadline := time.Now().Add(30 * time.Second)
	for s.waiting.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the query never reached the server")
		}
		time.Sleep(time.Millisecond)
	}
	s.SetServices([]Service{web()})
	r := <-got
	if r == nil || r.Rcode != mdns.RcodeSuccess || len(r.Answer) != 1 {
		t.Fatalf("the query held until the list: %v", r)
	}

	s = NewServer(Config{SyncWait: 50 * time.Millisecond})
	addr = serve(t, s)
	if r, _ := query(t, addr, "web.default.berth.", mdns.TypeA); r.Rcode != mdns.RcodeServerFailure {
		t.Fatalf("a query past the wait, with no list yet: %s, want SERVFAIL", mdns.RcodeToString[r.Rcode])
	}
}
