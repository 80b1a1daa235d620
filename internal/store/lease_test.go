package store

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
	// The sweep said why n2's key went: it missed its beats here.
	lapsed, err := s.LapsedNodesAt(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !lapsed["n2"] || lapsed["n1"] {
		t.Errorf("lapsed nodes %v, want n2 alone", lapsed)
	}
	// A heartbeat after the lapse makes the node alive again, and no
	// longer lapsed.
	if err := s.KeepNodeAlive(ctx, "n2", 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if live, _ := s.LiveNodes(ctx); !live["n2"] {
		t.Error("n2 is not alive after beating again")
	}
	if lapsed, _ := s.LapsedNodesAt(ctx, 0); lapsed["n2"] {
		t.Error("n2 is still lapsed after beating again")
	}
}

// A restarted server remembers no beats, yet its nodes stay alive: the
// keys its last run wrote outlive it by their lease's TTL, and each node's
// next beat binds its key to the new run's lease. A node that stops
// beating still lapses within its TTL of its last beat.
func TestNodesStayAliveAcrossServerRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	const ttl = 2 * time.Second
	open := func() *Store {
		t.Helper()
		s, err := Open(ctx, Config{DataDir: dir, MinLeaseTTL: ttl})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	s := open()
	for _, n := range []string{"n1", "n2"} {
		if err := s.KeepNodeAlive(ctx, n, ttl); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = open()
	defer s.Close()
	// n1 beats on past the old run's lease; n2 never beats again.
	lastN1 := time.Now()
	deadline := time.Now().Add(3 * ttl)
	n2Gone := time.Time{}
	for time.Now().Before(deadline) {
		if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
			t.Fatal(err)
		}
		lastN1 = time.Now()
		live, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !live["n1"] {
			t.Fatal("n1 lapsed across the restart while beating")
		}
		if !live["n2"] && n2Gone.IsZero() {
			n2Gone = time.Now()
		}
		time.Sleep(ttl / 5)
	}
	if n2Gone.IsZero() {
		t.Fatal("n2 outlived its beats by three TTLs")
	}
	// Without beats n1 lapses too, within its TTL and a sweep.
	for {
		live, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !live["n1"] {
			break
		}
		if time.Since(lastN1) > ttl+2*time.Second {
			t.Fatalf("n1 alive %v after its last beat, TTL %v", time.Since(lastN1), ttl)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if gone := time.Since(lastN1); gone < ttl {
		t.Errorf("n1 lapsed %v after its last beat, under its TTL %v", gone, ttl)
	}
}

// A server whose own lease lapses (etcd too slow to take its renewals)
// loses its nodes' keys with it; it grants another lease and binds to it,
// at once and in batches, the keys of the nodes still beating here.
func TestServerLeaseLapseRebindsLiveNodes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), MinLeaseTTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const ttl = 4 * time.Second
	nodes := []string{"n1", "n2", "n3"}
	for _, n := range nodes {
		if err := s.KeepNodeAlive(ctx, n, ttl); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Client().Revoke(ctx, s.live.leaseID()); err != nil {
		t.Fatal(err)
	}
	// No beat comes in meanwhile: the server rebinds them itself.
	for {
		live, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if live["n1"] && live["n2"] && live["n3"] {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("nodes not rebound after the server's lease lapsed: %v", live)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// And the new lease is the one renewed: they stay past its TTL.
	for end := time.Now().Add(ttl + time.Second); time.Now().Before(end); time.Sleep(ttl / 4) {
		for _, n := range nodes {
			if err := s.KeepNodeAlive(ctx, n, ttl); err != nil {
				t.Fatal(err)
			}
		}
	}
	if live, err := s.LiveNodes(ctx); err != nil || len(live) != 3 {
		t.Fatalf("live after the new lease's TTL: %v, %v", live, err)
	}
}

// Beats of one node that reach a server together (a partitioned agent's
// stale beat, delivered when its link came back, and its next one) both
// find the key unowned and both write it. The server must still know the
// key's latest revision as its own: a node that then stops beating lapses
// within its TTL, rather than staying alive for as long as the server
// lives.
func TestConcurrentBeatsStillLapse(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ttl = 2 * time.Second
	const nodes, together = 100, 4
	names := make([]string, nodes)
	for i := range names {
		names[i] = fmt.Sprintf("n%d", i+1)
	}
	var wg sync.WaitGroup
	errs := make(chan error, nodes*together)
	for _, n := range names {
		for range together {
			wg.Go(func() {
				if err := s.KeepNodeAlive(ctx, n, ttl); err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	waitLapsed(ctx, t, s, ttl, names...)
}

// A beat whose caller gave up (its context ended while etcd took the
// write) gets no answer, yet its write may land, after the one this
// server knows of. The server learns of it from its watch of the keys,
// and a node that then stops beating still lapses within its TTL.
func TestBeatLandedWithoutAnswerStillLapses(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const ttl = 2 * time.Second
	if err := s.KeepNodeAlive(ctx, "n1", ttl); err != nil {
		t.Fatal(err)
	}
	// The write of a beat that had no answer, as the beat makes it.
	if _, err := s.Client().Put(ctx, s.leaseKey("n1"), s.live.owner, clientv3.WithLease(s.live.leaseID())); err != nil {
		t.Fatal(err)
	}
	waitLapsed(ctx, t, s, ttl, "n1")
	if lapsed, err := s.LapsedNodesAt(ctx, 0); err != nil || !lapsed["n1"] {
		t.Errorf("lapsed nodes %v, %v; want n1, which missed its beats here", lapsed, err)
	}
}

// waitLapsed waits until none of nodes, beaten for the last time just
// now, is alive, for their TTL and 15 s for a loaded machine's late
// sweeps.
func waitLapsed(ctx context.Context, t *testing.T, s *Store, ttl time.Duration, nodes ...string) {
	t.Helper()
	last := time.Now()
	for {
		live, err := s.LiveNodes(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var left []string
		for _, n := range nodes {
			if live[n] {
				left = append(left, n)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Since(last) > ttl+15*time.Second {
			t.Fatalf("%d of %d nodes still alive %v after their last beats (TTL %v): %v",
				len(left), len(nodes), time.Since(last).Round(time.Millisecond), ttl, left)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
