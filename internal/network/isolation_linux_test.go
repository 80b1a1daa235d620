package network

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestIsolation: among members, only listed pairs reach each other; with
// the isolation lifted, everyone does again.
func TestIsolation(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	node := newTestNode(t, netnstest.Host(t, "host"), t.TempDir(), 43)
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
		ctx, cancel := context.WithTimeout(ctx, time.Second)
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
		if c.want {
			// On a loaded machine a connection may take its time: retried.
			eventually(t, c.from+" to reach "+c.to, func() error {
				if !reaches(c.from, c.to) {
					return fmt.Errorf("not reached")
				}
				return nil
			})
		} else if reaches(c.from, c.to) {
			t.Errorf("%s -> %s: reached across networks", c.from, c.to)
		}
	}
	// Setting it again replaces it: nothing isolated any more.
	if err := node.SetIsolation(Isolation{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "front to reach db once the isolation is lifted", func() error {
		if !reaches("front", "db") {
			return fmt.Errorf("not reached")
		}
		return nil
	})
}
