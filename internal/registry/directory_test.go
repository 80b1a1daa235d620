package registry_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// TestDirectory: servers announcing themselves list each other, never
// themselves; one that stops drops out at once, and a restart at a new
// address replaces its record.
func TestDirectory(t *testing.T) {
	port := func() int {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return l.Addr().(*net.TCPAddr).Port
	}
	peer := fmt.Sprintf("http://127.0.0.1:%d", port())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), Member: &store.Member{
		Name: "e", PeerURL: peer, InitialCluster: map[string]string{"e": peer}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })

	const prefix = "/test/registries/"
	dirs := map[string]*registry.Directory{}
	stops := map[string]func(){}
	announce := func(name, url string) {
		d := registry.NewDirectory(st.Client(), prefix, name)
		actx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := d.Announce(actx, url); err != nil {
				t.Errorf("%s: Announce: %v", name, err)
			}
		}()
		dirs[name], stops[name] = d, func() { stop(); <-done }
	}
	wait := func(name string, want ...string) {
		t.Helper()
		var got []string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if got, err = dirs[name].Peers(ctx); err == nil && slices.Equal(got, want) {
				return
			}
		}
		t.Fatalf("%s's peers: %v, %v; want %v", name, got, err, want)
	}
	counts := storetest.Count(st)
	announce("s1", "https://10.0.0.1:7443")
	announce("s2", "https://10.0.0.2:7443")
	announce("s3", "https://10.0.0.3:7443")
	wait("s1", "https://10.0.0.2:7443", "https://10.0.0.3:7443")
	wait("s2", "https://10.0.0.1:7443", "https://10.0.0.3:7443")
	// Each service apply lists the peers (to pin its image): from the
	// member's own state, never queued behind etcd's apply backlog.
	if got := counts.Take(); got.Linearizable != 0 || got.Serializable == 0 {
		t.Errorf("listing peers made %d linearizable and %d serializable reads; want serializable only", got.Linearizable, got.Serializable)
	}

	stops["s2"]()
	wait("s1", "https://10.0.0.3:7443")
	announce("s2", "https://10.0.0.22:7443")
	wait("s1", "https://10.0.0.22:7443", "https://10.0.0.3:7443")
	wait("s3", "https://10.0.0.1:7443", "https://10.0.0.22:7443")
	for _, stop := range stops {
		stop()
	}
	wait("s1")
}

func TestAdvertisedURL(t *testing.T) {
	for _, c := range []struct {
		listen string
		toward []string
		want   string
	}{
		{"10.1.2.3:7443", []string{"http://127.0.0.1:7380"}, "https://10.1.2.3:7443"},
		{"[fd00::1]:7443", nil, "https://[fd00::1]:7443"},
		{"server1.example:7443", nil, "https://server1.example:7443"},
		// Listening everywhere: the address on the way to etcd, loopback
		// only when there is nothing else.
		{":7443", []string{"", "http://127.0.0.1:2379"}, "https://127.0.0.1:7443"},
		{"0.0.0.0:7443", nil, "https://127.0.0.1:7443"},
	} {
		if got := registry.AdvertisedURL(c.listen, c.toward); got != c.want {
			t.Errorf("AdvertisedURL(%q, %q) = %q, want %q", c.listen, c.toward, got, c.want)
		}
	}
	// Toward another machine's address: one of this machine's own, not loopback.
	addrs, _ := net.InterfaceAddrs()
	own := map[string]bool{}
	var neighbour string
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			own[n.IP.String()] = true
			if ip4 := n.IP.To4(); neighbour == "" && ip4 != nil && !ip4.IsLoopback() && !ip4.IsLinkLocalUnicast() {
				other := slices.Clone(ip4)
				other[3] ^= 1 // on the same network
				neighbour = other.String()
			}
		}
	}
	if neighbour == "" {
		t.Skip("no IPv4 address but loopback")
	}
	got := registry.AdvertisedURL(":7443", []string{"127.0.0.1:2379", "http://" + net.JoinHostPort(neighbour, "7380")})
	host, port, err := net.SplitHostPort(strings.TrimPrefix(got, "https://"))
	if err != nil || port != "7443" || !own[host] || net.ParseIP(host).IsLoopback() {
		t.Errorf("AdvertisedURL toward %s = %q, want one of this machine's addresses but loopback", neighbour, got)
	}
}
