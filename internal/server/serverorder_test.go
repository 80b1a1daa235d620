package server

import (
	"fmt"
	"slices"
	"testing"
)

// A fleet given the same three servers spreads over them, each node
// starts on the same one every time, and the rest follow in the order
// given.
func TestServerOrderSpreadsNodes(t *testing.T) {
	servers := []string{"https://a:7443", "https://b:7443", "https://c:7443"}
	const nodes = 3000
	count := map[string]int{}
	for i := range nodes {
		name := fmt.Sprintf("node-%05d", i)
		got := ServerOrder(servers, name)
		if again := ServerOrder(servers, name); !slices.Equal(got, again) {
			t.Fatalf("node %s: %v, then %v", name, got, again)
		}
		k := slices.Index(servers, got[0])
		if want := append(slices.Clone(servers[k:]), servers[:k]...); !slices.Equal(got, want) {
			t.Fatalf("node %s: %v, want the servers in order from %s: %v", name, got, got[0], want)
		}
		count[got[0]]++
	}
	// A third each, give or take a fifth of that.
	for _, s := range servers {
		if n := count[s]; n < nodes/3*4/5 || n > nodes/3*6/5 {
			t.Errorf("%d of %d nodes start on %s, want about a third: %v", n, nodes, s, count)
		}
	}
	if !slices.Equal(servers, []string{"https://a:7443", "https://b:7443", "https://c:7443"}) {
		t.Fatalf("ServerOrder changed the caller's list: %v", servers)
	}
	one := []string{"https://a:7443"}
	if got := ServerOrder(one, "node-1"); !slices.Equal(got, one) {
		t.Fatalf("one server: %v", got)
	}
}
