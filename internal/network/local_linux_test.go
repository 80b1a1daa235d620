package network

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/network/vip"
	"github.com/berth-dev/berth/internal/testing/netnstest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// The container networks of two data dirs on one host stay apart: their
// own bridges, subnets, tables and veth names (the same container name in
// both included), and a host port one holds is refused to the other.
// Sync from no containers takes every veth and rule away; RemoveLocal
// the bridge and the tables.
func TestLocalsOfTwoDataDirsStayApart(t *testing.T) {
	testenv.RequireRoot(t)
	host := netnstest.Host(t, "host")
	ctx := context.Background()
	dirs := []string{t.TempDir(), t.TempDir()}
	err := netns.Do(host, func() error {
		var locals []*Local
		for _, d := range dirs {
			l, err := OpenLocal(ctx, d)
			if err != nil {
				return err
			}
			defer l.Close()
			locals = append(locals, l)
		}
		a, b := locals[0], locals[1]
		if a.Names().Bridge == b.Names().Bridge || a.Names().PortTable == b.Names().PortTable || a.node.cfg.Subnet == b.node.cfg.Subnet {
			t.Errorf("two data dirs share a name or a subnet: %+v %v, %+v %v", a.Names(), a.node.cfg.Subnet, b.Names(), b.node.cfg.Subnet)
		}
		if a.Names().Bridge == "berth0" || len(a.Names().Bridge) > 15 {
			t.Errorf("bridge name %q", a.Names().Bridge)
		}
		var veths []string
		for _, l := range locals {
			att, wire, err := l.Reserve(ctx, "web")
			if err != nil {
				return err
			}
			if err := wire(); err != nil {
				return err
			}
			veths = append(veths, att.HostVeth)
		}
		if veths[0] == veths[1] {
			t.Errorf("the same container name in two data dirs got one veth name %s", veths[0])
		}

		// A's port is held: B cannot hold it too.
		f, port, err := HoldHostPort(vip.TCP, netip.Addr{}, 0)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, _, err := HoldHostPort(vip.TCP, netip.MustParseAddr("127.0.0.1"), port); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("holding a held port again: %v", err)
		}
		pub := []LocalContainer{{ID: "web", Ports: []PublishedPort{{HostPort: port, ContainerPort: 80, Protocol: vip.TCP}}}}
		if err := a.Sync(ctx, pub, []string{"web"}); err != nil {
			return err
		}
		if got := len(a.vip.Services()); got != 1 {
			t.Errorf("A publishes %d services, want 1", got)
		}

		// Nothing left: no rule, no address, no veth.
		for _, l := range locals {
			if err := l.Sync(ctx, nil, nil); err != nil {
				return err
			}
			if len(l.vip.Services()) != 0 || len(l.node.Attachments()) != 0 {
				t.Errorf("after an empty sync: %v, %v", l.vip.Services(), l.node.Attachments())
			}
		}
		for _, v := range veths {
			if l, err := netlink.LinkByName(v); err == nil && l.Attrs().OperState == netlink.OperUp {
				t.Errorf("veth %s still up after its container went", v)
			}
		}
		for _, d := range dirs {
			done, err := RemoveLocal(d)
			if err != nil {
				return err
			}
			if len(done) != 3 {
				t.Errorf("RemoveLocal removed %v, want the bridge and two tables", done)
			}
		}
		links, _ := netlink.LinkList()
		for _, l := range links {
			if strings.HasPrefix(l.Attrs().Name, "berthc-") {
				t.Errorf("bridge %s left", l.Attrs().Name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
