package store_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// A store of its own (berth up's) ticks its raft once a second, yet leads
// at once, fresh and reopened: waiting out its election timeout would take
// one to five ticks, a second at least. The node heartbeat TTL is granted
// as asked, above the shortest lease such slow ticks allow.
func TestLoneStoreLeadsAtOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	for _, what := range []string{"fresh", "reopened"} {
		t0 := time.Now()
		s, err := store.Open(ctx, store.Config{DataDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		took := time.Since(t0)
		t.Logf("%s: ready in %v", what, took)
		if took > 900*time.Millisecond {
			s.Close()
			t.Fatalf("%s store ready in %v, want its leader at once (under 0.9 s, a tick)", what, took)
		}
		if err := s.KeepNodeAlive(ctx, "n1", api.NodeTTL); err != nil {
			s.Close()
			t.Fatal(err)
		}
		r, err := s.Client().Get(ctx, "/berth/leases/n1")
		if err != nil || len(r.Kvs) != 1 {
			s.Close()
			t.Fatalf("n1's lease key: %v, %v", r, err)
		}
		l, err := s.Client().TimeToLive(ctx, clientv3.LeaseID(r.Kvs[0].Lease))
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(api.NodeTTL / time.Second); l.GrantedTTL != want {
			t.Fatalf("%s: node lease granted for %ds, want the heartbeat TTL, %ds", what, l.GrantedTTL, want)
		}
	}
}

// A store of its own asked for shorter leases (a short node TTL) ticks
// finer and grants them as asked; the default one raises them to its
// shortest lease.
func TestLoneStoreMinLeaseTTL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		min  time.Duration
		want int64 // seconds granted for a 2 s lease
	}{{0, 7}, {2 * time.Second, 2}} {
		s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), MinLeaseTTL: tc.min})
		if err != nil {
			t.Fatal(err)
		}
		g, err := s.Client().Grant(ctx, 2)
		s.Close()
		if err != nil {
			t.Fatal(err)
		}
		if g.TTL != tc.want {
			t.Errorf("MinLeaseTTL %v: a 2 s lease granted for %ds, want %ds", tc.min, g.TTL, tc.want)
		}
	}
}
