package controller

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// The order a snapshot reads instances in, kept by merging those that
// came into it, is the one a sort of every cached instance gives, with
// each instance's owner numbered as it is, through creations, changes,
// removals, names that go and come again between snapshots, and more
// of them than the order held.
func TestCacheOrderMergesWhatCame(t *testing.T) {
	c := newCache(nil)
	c.objs = map[api.Kind]map[objID]api.Object{}
	for _, k := range cachedKinds {
		c.objs[k] = map[objID]api.Object{}
	}
	c.order, c.ownerNum, c.changed = map[api.Kind]*ordered{}, map[ownerID]int32{}, map[ownerID]bool{}
	c.tally, c.byNode = newTally(), map[string]map[*api.Instance]struct{}{}
	c.leases, c.lapsed = map[string]bool{}, map[string]bool{}
	rng := rand.New(rand.NewPCG(3, 4))
	rev := int64(0)
	put := func(name string) store.Change {
		rev++
		owner := fmt.Sprintf("svc-%d", len(name)%3) // one owner per name, always
		ns := []string{"a", "default"}[len(name)%2]
		return store.Change{Type: store.Modified, Kind: api.KindInstance, Object: &api.Instance{
			Metadata: api.Metadata{Namespace: ns, Name: name, Revision: rev},
			Spec:     api.InstanceSpec{Owner: api.Owner{Kind: api.KindService, Name: owner}, Node: fmt.Sprint("n", rng.IntN(3))}}}
	}
	names := func() []string {
		var out []string
		for id := range c.objs[api.KindInstance] {
			out = append(out, id.name)
		}
		return out
	}
	for round := range 300 {
		var b store.ChangeBatch
		n := 1 + rng.IntN(20)
		if round%50 == 10 {
			n = 150 // more than some orders hold: made afresh
		}
		for range n {
			have := names()
			switch op := rng.IntN(5); {
			case op < 2 || len(have) == 0: // a new one, or one gone before come again
				b.Changes = append(b.Changes, put(fmt.Sprintf("in-%d", rng.IntN(400))))
			case op < 4:
				b.Changes = append(b.Changes, put(have[rng.IntN(len(have))]))
			default:
				obj := c.objs[api.KindInstance][objID{"a", have[0]}]
				name := have[rng.IntN(len(have))]
				for _, ns := range []string{"a", "default"} {
					if o, ok := c.objs[api.KindInstance][objID{ns, name}]; ok {
						obj = o
					}
				}
				if obj == nil {
					continue
				}
				md := obj.GetMetadata()
				b.Changes = append(b.Changes, store.Change{Type: store.Deleted, Kind: api.KindInstance, Namespace: md.Namespace, Name: md.Name})
			}
		}
		b.Revision = rev
		c.apply(b)
		if rng.IntN(3) > 0 {
			continue
		}
		sn, _ := c.snapshot()
		want := make([]*api.Instance, 0, len(c.objs[api.KindInstance]))
		for _, o := range c.objs[api.KindInstance] {
			want = append(want, o.(*api.Instance))
		}
		slices.SortFunc(want, func(a, b *api.Instance) int { return compareIDs(idOf(a), idOf(b)) })
		if !slices.Equal(sn.instances, want) {
			t.Fatalf("round %d: the snapshot holds %d instances, %v; the cache %d, %v", round, len(sn.instances), keys(sn.instances), len(want), keys(want))
		}
		for i, in := range sn.instances {
			if got, want := sn.owners[sn.ownerOf[i]], instanceOwner(in); got != want {
				t.Fatalf("round %d: instance %s is numbered as owned by %v, not %v", round, in.Metadata.Name, got, want)
			}
		}
		for node, ins := range c.byNode {
			for in := range ins {
				if i, ok := c.order[api.KindInstance].find(idOf(in)); !ok || sn.instances[i] != in || in.Spec.Node != node {
					t.Fatalf("round %d: instance %s on node %s is not found in the order", round, in.Metadata.Name, node)
				}
			}
		}
	}
}

func keys(insts []*api.Instance) []string {
	var out []string
	for _, in := range insts {
		out = append(out, objKey(in.Metadata.Namespace, in.Metadata.Name))
	}
	return out
}
