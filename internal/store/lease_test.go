package store

import (
	"context"
	"testing"
	"time"
)

func TestNodeLeaseLapsesWithoutHeartbeats(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	if err := s.KeepNodeAlive(ctx, "n1", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n2", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	// n1 keeps beating, n2 stops: after the TTL only n1 is alive.
	deadline := time.Now().Add(15 * time.Second)
	for {
		if err := s.KeepNodeAlive(ctx, "n1", 2*time.Second); err != nil {
			t.Fatal(err)
		}
		live, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !live["n1"] {
			t.Fatal("n1 lost its lease while beating")
		}
		if !live["n2"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n2's lease never lapsed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	// A heartbeat after the lapse makes the node alive again.
	if err := s.KeepNodeAlive(ctx, "n2", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if live, _ := s.LiveNodes(ctx); !live["n2"] {
		t.Error("n2 is not alive after beating again")
	}
}
