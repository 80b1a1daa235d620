package apiserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A heartbeat that only says the node is still there renews its lease and
// writes nothing; one that says something new, or comes a whole TTL after
// the recorded one, is written.
func TestHeartbeatRenewsLeaseWithoutWriting(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := e.client.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	beat := func(at time.Duration, msg string) int64 {
		t.Helper()
		n := &api.Node{Metadata: api.Metadata{Name: "n1"},
			Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: t0.Add(at), Message: msg}}
		if _, err := e.client.Nodes().UpdateStatus(ctx, n); err != nil {
			t.Fatal(err)
		}
		got, err := e.client.Nodes().Get(ctx, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return got.Metadata.Revision
	}
	r0 := beat(0, "")
	for i := 1; i <= 4; i++ {
		if r := beat(time.Duration(i)*2*time.Second, ""); r != r0 {
			t.Fatalf("heartbeat %d with nothing new wrote the node: revision %d, was %d", i, r, r0)
		}
	}
	// The lease is renewed even so: gone, and back with the next beat.
	if err := e.store.ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if r := beat(9*time.Second, ""); r != r0 {
		t.Fatalf("heartbeat wrote the node: revision %d, was %d", r, r0)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("lease not renewed by a heartbeat-only write: live %v, %v", live, err)
	}
	r1 := beat(apiserver.DefaultNodeTTL, "")
	if r1 == r0 {
		t.Fatal("a heartbeat a whole TTL after the recorded one was not written")
	}
	got, _ := e.client.Nodes().Get(ctx, "", "n1")
	if !got.Status.LastHeartbeat.Equal(t0.Add(apiserver.DefaultNodeTTL)) {
		t.Fatalf("recorded heartbeat %v, want %v", got.Status.LastHeartbeat, t0.Add(apiserver.DefaultNodeTTL))
	}
	if r := beat(apiserver.DefaultNodeTTL+time.Second, "disk pressure"); r == r1 {
		t.Fatal("a heartbeat with a new message was not written")
	}
}

// A heartbeat that only says the node is still there costs etcd no raft
// round: the lease's key and the stored node are read from the member's
// own state, and nothing is written. At 200 instances on one machine,
// the reads of heartbeats were a third of an idle berth up's etcd work.
func TestHeartbeatReadsWithoutRaftRound(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := e.client.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC()
	beat := func(at time.Duration) {
		t.Helper()
		n := &api.Node{Metadata: api.Metadata{Name: "n1"}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: t0.Add(at)}}
		if _, err := e.client.Nodes().UpdateStatus(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	beat(0) // the first is written, and makes the lease
	counts := storetest.Count(e.store)
	beat(2 * time.Second)
	if got := counts.Take(); got.Linearizable != 0 || got.Writes != 0 || got.Txns != 0 {
		t.Errorf("a heartbeat made %d linearizable reads, %d writes and %d transactions; want none", got.Linearizable, got.Writes, got.Txns)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive after its heartbeats: %v, %v", live, err)
	}
}

// A heartbeat made in process (berth up's own node) does what the
// agent's status write over the API does: it renews the lease, writes
// nothing when only the time moved within a TTL, and writes the node
// Ready again once it was marked otherwise.
func TestInProcessHeartbeat(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if _, err := e.client.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now().UTC().Truncate(time.Second)
	beat := func(at time.Duration) *api.Node {
		t.Helper()
		if err := e.srv.Heartbeat(ctx, "n1", t0.Add(at)); err != nil {
			t.Fatal(err)
		}
		got, err := e.client.Nodes().Get(ctx, "", "n1")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	first := beat(0)
	if first.Status.Condition != api.NodeReady || !first.Status.LastHeartbeat.Equal(t0) {
		t.Fatalf("after the first beat: %s at %v, want Ready at %v", first.Status.Condition, first.Status.LastHeartbeat, t0)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive after a heartbeat: %v, %v", live, err)
	}
	counts := storetest.Count(e.store)
	if n := beat(2 * time.Second); n.Metadata.Revision != first.Metadata.Revision {
		t.Fatalf("a beat with nothing new wrote the node: revision %d, was %d", n.Metadata.Revision, first.Metadata.Revision)
	}
	if got := counts.Take(); got.Writes != 0 || got.Txns != 0 {
		t.Errorf("a beat with nothing new made %d writes and %d transactions; want none", got.Writes, got.Txns)
	}
	if err := e.store.ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	first.Status.Condition, first.Status.Message = api.NodeNotReady, "its heartbeat lease expired"
	if _, err := e.client.Nodes().UpdateStatus(ctx, first); err != nil {
		t.Fatal(err)
	}
	if n := beat(4 * time.Second); n.Status.Condition != api.NodeReady || n.Status.Message != "" {
		t.Fatalf("after a beat past a lapse: %s (%q), want Ready", n.Status.Condition, n.Status.Message)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive after beating past a lapse: %v, %v", live, err)
	}
}
