package store_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A heartbeat of a node whose lease is held renews it with no read and
// no raft round: etcd's leader moves the lease's deadline in its memory.
// Each linearizable read woke etcd's raft loop, its read-index loop and
// the caller, every heartbeat of every node; a serializable one still
// cost a range and its copy.
func TestHeartbeatRenewalReadsWithoutRaftRound(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ttl = 4 * time.Second
	if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
		t.Fatal(err)
	}
	r, err := s.Client().Get(ctx, "/berth/leases/n1")
	if err != nil || len(r.Kvs) != 1 || r.Kvs[0].Lease == 0 {
		t.Fatalf("n1's lease key: %v, %v", r, err)
	}
	id := clientv3.LeaseID(r.Kvs[0].Lease)
	left := func() int64 {
		t.Helper()
		l, err := s.Client().TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return l.TTL
	}
	// Wait until the lease has run down, so that the renewal shows (etcd
	// gives whole seconds left, rounded down).
	for left() > 2 {
		if ctx.Err() != nil {
			t.Fatal("n1's lease never ran down")
		}
		time.Sleep(50 * time.Millisecond)
	}

	counts := storetest.Count(s)
	if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
		t.Fatal(err)
	}
	got := counts.Take()
	if got != (storetest.Counts{}) {
		t.Errorf("a renewal made %d linearizable reads, %d serializable reads, %d writes and %d transactions; want none",
			got.Linearizable, got.Serializable, got.Writes, got.Txns)
	}
	if l := left(); l < 3 {
		t.Errorf("n1's lease has %ds left after the renewal, want the whole %v", l, ttl)
	}

	// Once lapsed, the next heartbeat binds the key to a new lease.
	if _, err := s.Client().Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
		t.Fatal(err)
	}
	if live, err := s.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive after beating past a lapse: %v, %v", live, err)
	}
	if got := counts.Take(); got.Writes != 1 {
		t.Errorf("a heartbeat after a lapse made %d writes, want 1 (the key bound to a new lease)", got.Writes)
	}
	if r, err := s.Client().Get(ctx, "/berth/leases/n1"); err != nil || len(r.Kvs) != 1 || clientv3.LeaseID(r.Kvs[0].Lease) != id {
		t.Fatalf("n1's key after the lapse: %v, %v; want bound to its own lease %x again", r, err, id)
	}
}
