package store_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A heartbeat of a node alive here costs etcd nothing: no read, no write,
// no lease renewal; the server keeps the time of the beat in its memory.
// The node's key stays for as long as the beats come, however many TTLs.
// One lease renewal per beat made a starved server let thousands of nodes
// lapse at once, and their re-grants overloaded etcd.
func TestHeartbeatCostsEtcdNothing(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(), MinLeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ttl = time.Second
	counts := storetest.Count(s)
	if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
		t.Fatal(err)
	}
	// One transaction: its key written, any lapsed key of it deleted.
	if got := counts.Take(); got.Writes+got.Txns != 1 {
		t.Errorf("a node's first heartbeat made %d writes and %d transactions, want 1 (its key)", got.Writes, got.Txns)
	}
	// Three TTLs of beats, each a fifth of the TTL apart.
	for end := time.Now().Add(3 * ttl); time.Now().Before(end); {
		if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl / 5)
	}
	got := counts.Take()
	if got != (storetest.Counts{}) {
		t.Errorf("beats made %d linearizable reads, %d serializable reads, %d writes and %d transactions; want none",
			got.Linearizable, got.Serializable, got.Writes, got.Txns)
	}
	if live, err := s.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive while beating: %v, %v", live, err)
	}

	// Its key deleted under it (an expiry through another server), the
	// node's next beats write it again, once.
	if _, err := s.Client().Delete(ctx, "/berth/leases/n1"); err != nil {
		t.Fatal(err)
	}
	counts.Take()
	for {
		if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
			t.Fatal(err)
		}
		if live, err := s.LiveNodes(ctx); err != nil {
			t.Fatal(err)
		} else if live["n1"] {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("n1 never came back after its key was deleted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := counts.Take(); got.Writes+got.Txns != 1 {
		t.Errorf("beats after the key's deletion made %d writes and %d transactions, want 1", got.Writes, got.Txns)
	}
}
