package network

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestIsolation: among members, only listed pairs reach each other; with
// the isolation lifted, everyone does again.
func TestIsolation(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	node := newTestNode(t, hostNS(t), t.TempDir(), 43)
	pods := map[string]Attachment{}
	for _, id := range []string{"front", "app", "db"} {
		a, err := node.Attach(ctx, id, "shop")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = node.Detach(ctx, id) })
		pods[id] = a
		startHTTPD(t, a.NetNS, id)
	}
	reaches := func(from, to string) bool {
		ctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		c, err := inNS(pods[from].NetNS)(ctx, "tcp", netip.AddrPortFrom(pods[to].IP, 80).String())
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
	for _, to := range []string{"app", "db"} {
		eventually(t, to+"'s server to answer", func() error {
			if !reaches("front", to) {
				return fmt.Errorf("not reached")
			}
			return nil
		})
	}
	// front and app share one network, app and db another.
	pair := func(a, b string) [][2]netip.Addr {
		return [][2]netip.Addr{{pods[a].IP, pods[b].IP}, {pods[b].IP, pods[a].IP}}
	}
	iso := Isolation{Members: []netip.Addr{pods["front"].IP, pods["app"].IP, pods["db"].IP}}
	iso.Pairs = append(append(iso.Pairs, pair("front", "app")...), pair("app", "db")...)
	if err := node.SetIsolation(iso); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from, to string
		want     bool
	}{{"front", "app", true}, {"app", "front", true}, {"app", "db", true}, {"db", "app", true}, {"front", "db", false}, {"db", "front", false}} {
		if got := reaches(c.from, c.to); got != c.want {
			t.Errorf("%s -> %s: reached %v, want %v", c.from, c.to, got, c.want)
		}
	}
	// Setting it again replaces it: nothing isolated any more.
	if err := node.SetIsolation(Isolation{}); err != nil {
		t.Fatal(err)
	}
	if !reaches("front", "db") {
		t.Error("front -> db after the isolation was lifted: not reached")
	}
}
