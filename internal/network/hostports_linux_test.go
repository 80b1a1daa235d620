package network

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/network/dns"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/network/vip"
	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// A published port is free to bind only once no rule redirects it: a host
// process that binds it the moment it is let go gets its own loopback
// traffic, whichever way the service stops publishing it (removed, synced
// away, or its port dropped).
func TestHostPortFreedOnlyAfterItsRule(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	host := netnstest.Host(t, "ports")
	svcs, err := NewServices(ctx, vip.Config{Table: "berth-svc-ports", NetNS: host, LocalSubnet: netip.MustParsePrefix("10.244.7.0/24")}, dns.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svcs.Close() })
	const port = 18181
	published := Service{Namespace: "default", Name: "web", VIP: netip.MustParseAddr("10.96.7.1"),
		Ports:     []ServicePort{{Name: "http", Protocol: vip.TCP, Port: 80, TargetPort: 80, HostPort: port}},
		Instances: []Instance{{Name: "web-0", IP: netip.MustParseAddr("10.244.7.5"), Ready: true}}}
	unpublished := published
	unpublished.Ports = []ServicePort{{Name: "http", Protocol: vip.TCP, Port: 80, TargetPort: 80}}

	for _, tc := range []struct {
		name string
		stop func() error
	}{
		{"removed", func() error { return svcs.Remove(ctx, "default", "web") }},
		{"synced away", func() error { _, err := svcs.Sync(ctx, nil); return err }},
		{"port dropped", func() error { return svcs.Upsert(ctx, unpublished) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if bad, err := svcs.Sync(ctx, []Service{published}); err != nil || bad != nil {
				t.Fatal(err, bad)
			}
			if err := svcs.CheckHostPort("default/other", vip.TCP, port); err == nil {
				t.Fatal("a published port is free to another service")
			}
			// Published, the port's loopback traffic goes to the service
			// (whose one endpoint is not there), not to the socket that
			// holds it.
			if err := netns.Do(host, func() error {
				c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), 300*time.Millisecond)
				if err == nil {
					c.Close()
					return errors.New("loopback traffic to the published port reached its holding socket")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			got := make(chan error, 1)
			trying := make(chan struct{})
			go func() { got <- takePortAndDial(host, port, trying, 10*time.Second) }()
			<-trying
			if err := tc.stop(); err != nil {
				t.Fatal(err)
			}
			if err := <-got; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// takePortAndDial binds port in host's namespace the moment it is free,
// then dials it on loopback at once: it fails unless its own listener
// answers. It closes trying once it has found the port held.
func takePortAndDial(host string, port int, trying chan<- struct{}, within time.Duration) error {
	return netns.Do(host, func() error {
		deadline := time.Now().Add(within)
		var l net.Listener
		for first := true; ; first = false {
			var err error
			if l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); err == nil {
				if first {
					close(trying)
					return fmt.Errorf("port %d free while published", port)
				}
				break
			}
			if first {
				close(trying)
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("port %d never freed: %w", port, err)
			}
		}
		defer l.Close()
		go func() {
			if c, err := l.Accept(); err == nil {
				_, _ = c.Write([]byte("host"))
				c.Close()
			}
		}()
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("127.0.0.1:%d", port), time.Second)
		if err != nil {
			return fmt.Errorf("dial port %d the moment it was free: %w (its traffic still redirected)", port, err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		b, err := io.ReadAll(c)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read from port %d: %w", port, err)
		}
		if string(b) != "host" {
			return fmt.Errorf("port %d answered %q, want the host listener's", port, b)
		}
		return nil
	})
}
