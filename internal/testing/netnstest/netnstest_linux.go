// Package netnstest makes the network namespaces that tests of the node's
// network use as hosts: each pinned under the test's temporary directory
// and removed when it ends, so tests running at once never meet.
package netnstest

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/berth-dev/berth/internal/network/netns"
)

// Host makes a namespace named name, with lo up, and returns its path.
func Host(t testing.TB, name string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	err := netns.Create(path, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Delete(path); err != nil {
			t.Error(err)
		}
	})
	return path
}

// Link joins namespaces a and b with a veth pair, both ends up: linkA in
// a with address addrA, linkB in b with addrB (CIDR, "192.168.50.1/24").
func Link(t testing.TB, a, linkA, addrA, b, linkB, addrB string) {
	t.Helper()
	fb, err := os.Open(b)
	if err != nil {
		t.Fatal(err)
	}
	defer fb.Close()
	err = netns.Do(a, func() error {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: linkA, Flags: net.FlagUp},
			PeerName: linkB, PeerNamespace: netlink.NsFd(int(fb.Fd()))}
		if err := netlink.LinkAdd(v); err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(addrA)
		if err != nil {
			return err
		}
		return netlink.AddrAdd(v, addr)
	})
	if err != nil {
		t.Fatalf("link %s in %s: %v", linkA, a, err)
	}
	err = netns.Do(b, func() error {
		l, err := netlink.LinkByName(linkB)
		if err != nil {
			return err
		}
		addr, err := netlink.ParseAddr(addrB)
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(l, addr); err != nil {
			return err
		}
		return netlink.LinkSetUp(l)
	})
	if err != nil {
		t.Fatalf("link %s in %s: %v", linkB, b, err)
	}
}

// NftTable is `nft list table ip TABLE` run in namespace ns: the table's
// ruleset as nft prints it.
func NftTable(t testing.TB, ns, table string) string {
	t.Helper()
	out, err := exec.Command("nsenter", "--net="+ns, "nft", "list", "table", "ip", table).CombinedOutput()
	if err != nil {
		t.Fatalf("nft list table %s: %v\n%s", table, err, out)
	}
	return string(out)
}
