package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
)

func TestPoolSkipsNetworkBroadcastAndReserved(t *testing.T) {
	gw := netip.MustParseAddr("10.244.1.1")
	p, err := NewPool(netip.MustParsePrefix("10.244.1.0/29"), gw)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 5 {
		a, err := p.Allocate(fmt.Sprint("c", i))
		if err != nil {
			t.Fatalf("allocate %d: %v", i, err)
		}
		got = append(got, a.String())
	}
	want := []string{"10.244.1.2", "10.244.1.3", "10.244.1.4", "10.244.1.5", "10.244.1.6"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if _, err := p.Allocate("one-too-many"); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full pool: got %v, want ErrExhausted", err)
	}
	again, _ := p.Allocate("c2")
	if again.String() != "10.244.1.4" {
		t.Fatalf("allocate is not idempotent: c2 got %v", again)
	}
	if err := p.Claim("x", gw); !errors.Is(err, ErrOutOfRange) {
		t.Fatalf("claiming the gateway: got %v", err)
	}
	if err := p.Claim("x", netip.MustParseAddr("10.244.1.3")); !errors.Is(err, ErrConflict) {
		t.Fatalf("claiming a held address: got %v", err)
	}
}

func TestPoolRoundRobinDelaysReuse(t *testing.T) {
	p, _ := NewPool(netip.MustParsePrefix("10.0.0.0/24"))
	a, _ := p.Allocate("a")
	p.Release("a")
	b, _ := p.Allocate("b")
	if a == b {
		t.Fatalf("released address %v handed out again at once", a)
	}
}

// TestPoolRandomNeverDoubleAssigns drives random allocate/release sequences
// and checks the invariant that matters: one address per id, one id per address.
func TestPoolRandomNeverDoubleAssigns(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	p, _ := NewPool(netip.MustParsePrefix("10.9.0.0/27"), netip.MustParseAddr("10.9.0.1"))
	held := map[string]netip.Addr{}
	for i := range 5000 {
		id := fmt.Sprint("c", r.IntN(40))
		if r.IntN(3) == 0 {
			p.Release(id)
			delete(held, id)
			continue
		}
		a, err := p.Allocate(id)
		if errors.Is(err, ErrExhausted) {
			if len(held) < 29 {
				t.Fatalf("step %d: exhausted with %d of 29 held", i, len(held))
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if prev, ok := held[id]; ok && prev != a {
			t.Fatalf("step %d: %s moved from %v to %v", i, id, prev, a)
		}
		held[id] = a
	}
	seen := map[netip.Addr]string{}
	for id, a := range p.Assigned() {
		if other, dup := seen[a]; dup {
			t.Fatalf("%v held by %s and %s", a, id, other)
		}
		seen[a] = id
		if held[id] != a {
			t.Fatalf("%s: pool says %v, test says %v", id, a, held[id])
		}
	}
	if len(seen) != len(held) {
		t.Fatalf("pool holds %d, test %d", len(seen), len(held))
	}
}

func TestStoreSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	prefix := netip.MustParsePrefix("10.244.3.0/24")
	gw := netip.MustParseAddr("10.244.3.1")
	s, err := Open(dir, prefix, gw)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.Allocate("a")
	b, _ := s.Allocate("b")
	c, _ := s.Allocate("c")
	if _, err := s.Release("b"); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(dir, prefix, gw)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.Assigned()
	if len(got) != 2 || got["a"] != a || got["c"] != c {
		t.Fatalf("after reopen: %v, want a=%v c=%v", got, a, c)
	}
	d, _ := s2.Allocate("d")
	if d == a || d == c || d == b {
		t.Fatalf("reopened store handed out %v again (a=%v b=%v c=%v)", d, a, b, c)
	}
}

func TestStoreDropsBrokenEntries(t *testing.T) {
	dir := t.TempDir()
	write := func(name, id string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(id), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("10.244.3.5", "a")
	write("10.244.3.6", "a")  // second address of the same id
	write("10.244.3.7", "")   // crashed mid-write
	write("10.99.0.1", "out") // from another subnet
	s, err := Open(dir, netip.MustParsePrefix("10.244.3.0/24"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Assigned(); len(got) != 1 || got["a"].String() != "10.244.3.5" {
		t.Fatalf("assigned %v", got)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("%d files left, want 1", len(ents))
	}
}

func TestNextSubnet(t *testing.T) {
	cluster := netip.MustParsePrefix("10.244.0.0/16")
	var taken []netip.Prefix
	for i := range 3 {
		p, err := NextSubnet(cluster, 24, taken)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("10.244.%d.0/24", i); p.String() != want {
			t.Fatalf("got %v, want %v", p, want)
		}
		taken = append(taken, p)
	}
	// A larger block taken elsewhere is skipped as a whole.
	taken = append(taken, netip.MustParsePrefix("10.244.4.0/23"))
	p, _ := NextSubnet(cluster, 24, taken)
	if p.String() != "10.244.3.0/24" {
		t.Fatalf("got %v", p)
	}
	taken = append(taken, p)
	p, _ = NextSubnet(cluster, 24, taken)
	if p.String() != "10.244.6.0/24" {
		t.Fatalf("got %v, want 10.244.6.0/24", p)
	}
	if _, err := NextSubnet(netip.MustParsePrefix("10.0.0.0/24"), 25, []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/25"), netip.MustParsePrefix("10.0.0.128/25"),
	}); !errors.Is(err, ErrExhausted) {
		t.Fatalf("full cluster: %v", err)
	}
}

// Subnets hands out every free subnet once, in order, skipping those
// taken (and a larger block taken), and then says the cluster is full.
func TestSubnetsHandsOutEachFreeOnceThenExhausts(t *testing.T) {
	s, err := NewSubnets(netip.MustParsePrefix("10.1.0.0/21"), 24, []netip.Prefix{
		netip.MustParsePrefix("10.1.1.0/24"), netip.MustParsePrefix("10.1.4.0/23"), netip.MustParsePrefix("192.168.0.0/24"),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for {
		p, err := s.Next()
		if errors.Is(err, ErrExhausted) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.String())
	}
	if want := "[10.1.0.0/24 10.1.2.0/24 10.1.3.0/24 10.1.6.0/24 10.1.7.0/24]"; fmt.Sprint(got) != want {
		t.Fatalf("handed out %v, want %s", got, want)
	}
	if _, err := NewSubnets(netip.MustParsePrefix("10.1.0.0/21"), 20, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("a /20 out of a /21: %v, want ErrInvalid", err)
	}
}

// A small pool that has wrapped hands out the address released longest
// ago, not the one just freed, while another is free.
func TestPoolWrapReusesLongestReleasedFirst(t *testing.T) {
	gw := netip.MustParseAddr("10.244.1.1")
	p, err := NewPool(netip.MustParsePrefix("10.244.1.0/29"), gw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 { // .2 to .6: full
		if _, err := p.Allocate(fmt.Sprint("c", i)); err != nil {
			t.Fatal(err)
		}
	}
	p.Release("c1") // .3, first
	p.Release("c0") // .2, just now, and where the cursor stands
	for _, want := range []string{"10.244.1.3", "10.244.1.2"} {
		a, err := p.Allocate("x" + want)
		if err != nil || a.String() != want {
			t.Fatalf("allocate: %v, %v; want %s (released longest ago first)", a, err, want)
		}
	}
}

// Reopening the store (an agent restart) does not hand out an address
// released just before while others are free, and keeps the order in
// which free addresses were released.
func TestStoreReopenKeepsJustReleasedOutOfUse(t *testing.T) {
	dir := t.TempDir()
	prefix, gw := netip.MustParsePrefix("10.244.1.0/29"), netip.MustParseAddr("10.244.1.1")
	s, err := Open(dir, prefix, gw)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d"} { // .2 to .5
		if _, err := s.Allocate(id); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{"a", "d"} { // .2, then .5 (the highest: the old cursor's restart point)
		if _, err := s.Release(id); err != nil {
			t.Fatal(err)
		}
	}
	s, err = Open(dir, prefix, gw)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range []string{"e", "f", "g"} {
		a, err := s.Allocate(id)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	// .6 was never used; then .2, released before .5.
	if want := []string{"10.244.1.6", "10.244.1.2", "10.244.1.5"}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after reopening, addresses handed out %v, want %v", got, want)
	}
}
