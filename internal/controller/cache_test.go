package controller

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

func openTestStore(t *testing.T) *store.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// The cache, fed by its watch, holds what the store holds after any mix
// of creates, status writes, deletes and lease changes; and once it has
// reached LastWrite it shows every write this process made.
func TestCacheMatchesStore(t *testing.T) {
	s := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Some objects before the cache lists, some after.
	mk := func(i int) {
		svc := &api.Service{Metadata: api.Metadata{Name: fmt.Sprintf("svc-%d", i)}, Spec: api.ServiceSpec{Replicas: 1,
			Template: api.Template{Image: "demo/busybox:1"}}}
		in := &api.Instance{Metadata: api.Metadata{Name: fmt.Sprintf("in-%d", i)}, Spec: api.InstanceSpec{
			Template: api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: svc.Metadata.Name}}}
		if err := s.CreateMany(ctx, []api.Object{svc, in}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 20 {
		mk(i)
	}
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	c := newCache(s)
	go c.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})

	rng := rand.New(rand.NewPCG(1, 2))
	for i := 20; i < 120; i++ {
		switch rng.IntN(4) {
		case 0:
			mk(i)
		case 1:
			name := fmt.Sprintf("in-%d", rng.IntN(i))
			if in, err := store.Get[api.Instance](ctx, s, "default", name); err == nil {
				in.Status.Phase = api.PhaseRunning
				in.Status.Message = fmt.Sprint("write ", i)
				if err := s.UpdateStatus(ctx, in, 0); err != nil {
					t.Fatal(err)
				}
			}
		case 2:
			_ = s.Delete(ctx, api.KindService, "default", fmt.Sprintf("svc-%d", rng.IntN(i)), 0)
		case 3:
			if rng.IntN(2) == 0 {
				if err := s.ExpireNode(ctx, "n1"); err != nil {
					t.Fatal(err)
				}
			} else if err := s.KeepNodeAlive(ctx, "n1", 10*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		if i%10 != 0 {
			continue
		}
		if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
			t.Fatal(err)
		}
		got, live := c.snapshot()
		want, err := (&Manager{s: s}).list(ctx)
		if err != nil {
			t.Fatal(err)
		}
		wantLive, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if g, w := render(got), render(want); g != w {
			t.Fatalf("after write %d the cache holds\n%s\nand the store\n%s", i, g, w)
		}
		if fmt.Sprint(live) != fmt.Sprint(wantLive) {
			t.Fatalf("after write %d the cache has leases %v, the store %v", i, live, wantLive)
		}
	}
}

func render(sn *snapshot) string {
	out := ""
	for _, n := range sn.nodes {
		out += fmt.Sprintf("node %s@%d\n", n.Metadata.Name, n.Metadata.Revision)
	}
	for _, s := range sn.services {
		out += fmt.Sprintf("service %s@%d\n", s.Metadata.Name, s.Metadata.Revision)
	}
	for _, in := range sn.instances {
		out += fmt.Sprintf("instance %s@%d %s %q\n", in.Metadata.Name, in.Metadata.Revision, in.Status.Phase, in.Status.Message)
	}
	return out
}

// Passes get copies: what a pass assigns to an object does not reach
// the cache.
func TestCacheSnapshotsAreCopies(t *testing.T) {
	s := openTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	c := newCache(s)
	go c.follow(ctx, slog.New(slog.DiscardHandler), time.Hour, func() {})
	if err := c.waitFor(ctx, s.LastWrite(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	a, _ := c.snapshot()
	a.nodes[0].Status.Condition = api.NodeNotReady
	b, _ := c.snapshot()
	if b.nodes[0].Status.Condition == api.NodeNotReady {
		t.Error("a change to a snapshot's node reached the cache")
	}
}
