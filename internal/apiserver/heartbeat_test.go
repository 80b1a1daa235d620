package apiserver_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A heartbeat that only says the node is still there renews its lease and
// writes nothing, however long it goes on: etcd's revision stays where it
// was. Node reads show the time of the latest beat all the same. One that
// says something new is written.
// startWithNode serves a new store holding node n1, and gives a context
// the test's requests end by, 20 s on.
func startWithNode(t *testing.T) (*env, context.Context) {
	t.Helper()
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	t.Cleanup(cancel)
	if _, err := e.client.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	return e, ctx
}

func TestHeartbeatRenewsLeaseWithoutWriting(t *testing.T) {
	e, ctx := startWithNode(t)
	t0 := time.Now().UTC().Truncate(time.Second)
	beat := func(at time.Duration, msg string) {
		t.Helper()
		n := &api.Node{Metadata: api.Metadata{Name: "n1"},
			Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: t0.Add(at), Message: msg}}
		if _, err := e.client.Nodes().UpdateStatus(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	storeRev := func() int64 {
		t.Helper()
		r, err := e.store.Client().Get(ctx, "/berth/none")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	beat(0, "") // the first is written, and makes the lease
	r0 := storeRev()
	// Three TTLs of beats, as an agent sends them.
	var before time.Time
	for i := 1; i <= 9; i++ {
		before = time.Now()
		beat(time.Duration(i)*apiserver.DefaultNodeTTL/3, "")
		if r := storeRev(); r != r0 {
			t.Fatalf("heartbeat %d with nothing new wrote to etcd: revision %d, was %d", i, r, r0)
		}
	}
	got, err := e.client.Nodes().Get(ctx, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Status.Condition != api.NodeReady || got.Status.LastHeartbeat.Before(before.Add(-time.Millisecond)) {
		t.Fatalf("node after its beats: %s, last heartbeat %v; want Ready, heard from at %v or later", got.Status.Condition, got.Status.LastHeartbeat, before)
	}
	list, _, err := e.client.Nodes().List(ctx, "")
	if err != nil || len(list) != 1 || !list[0].Status.LastHeartbeat.Equal(got.Status.LastHeartbeat) {
		t.Fatalf("listed nodes %v, %v; want n1 last heard from at %v", list, err, got.Status.LastHeartbeat)
	}

	// The lease is renewed even so: gone, and back with the next beat.
	if err := e.store.ExpireNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	beat(4*apiserver.DefaultNodeTTL, "")
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("lease not renewed by a heartbeat-only write: live %v, %v", live, err)
	}
	if after, err := e.client.Nodes().Get(ctx, "", "n1"); err != nil || after.Metadata.Revision != got.Metadata.Revision {
		t.Fatalf("a beat after a lapse, of a node stored Ready, wrote it: %v, %v", after, err)
	}
	r1 := storeRev()
	beat(4*apiserver.DefaultNodeTTL+time.Second, "disk pressure")
	if r := storeRev(); r == r1 {
		t.Fatal("a heartbeat with a new message was not written")
	}
	if got, _ := e.client.Nodes().Get(ctx, "", "n1"); got.Status.Message != "disk pressure" {
		t.Fatalf("stored message %q, want the beat's", got.Status.Message)
	}
}

// A heartbeat that only says the node is still there costs etcd nothing
// but the lease's renewal: no read, no raft round, no write. The server
// knows the node is stored Ready and its lease bound, and neither changes
// while the lease is held. At 200 instances on one machine, the reads of
// heartbeats were a third of an idle berth up's etcd work.
func TestHeartbeatReadsWithoutRaftRound(t *testing.T) {
	e, ctx := startWithNode(t)
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
	if got := counts.Take(); got != (storetest.Counts{}) {
		t.Errorf("a heartbeat made %d linearizable reads, %d serializable reads, %d writes and %d transactions; want none",
			got.Linearizable, got.Serializable, got.Writes, got.Txns)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("n1 not alive after its heartbeats: %v, %v", live, err)
	}
}

// A node whose heartbeats stop is found lost within its TTL and a margin,
// though none of its beats wrote anything: its lease lapses in etcd, the
// controller marks it NotReady and its instance Lost, and replaces that
// on a node still beating.
func TestNodeLossFoundWithinTTLThoughBeatsWriteNothing(t *testing.T) {
	const ttl = 2 * time.Second
	e := startWith(t, apiserver.Config{NodeTTL: ttl})
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	mctx, stopManager := context.WithCancel(ctx)
	managed := make(chan struct{})
	go func() {
		defer close(managed)
		_ = controller.NewManager(e.store, controller.Options{Logger: slog.New(slog.DiscardHandler), StartGrace: -1}).Run(mctx)
	}()
	defer func() { stopManager(); <-managed }()

	beats := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, name := range []string{"n1", "n2"} {
		n := &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{Address: "10.0.0.1",
			Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}, Unschedulable: name == "n2"}}
		if _, err := e.client.Nodes().Apply(ctx, n); err != nil {
			t.Fatal(err)
		}
		bctx, stop := context.WithCancel(ctx)
		beats[name] = stop
		defer stop()
		wg.Go(func() {
			for bctx.Err() == nil {
				// At the pace the server asks: a third of its TTL.
				next, err := e.client.Nodes().Heartbeat(bctx, name, time.Now().UTC())
				if err != nil && bctx.Err() == nil {
					t.Errorf("%s: heartbeat: %v", name, err)
				}
				if err == nil && next != ttl/3 {
					t.Errorf("%s: the server asks for the next beat in %v; want a third of its TTL, %v", name, next, ttl/3)
				}
				select {
				case <-bctx.Done():
				case <-time.After(ttl / 3):
				}
			}
		})
	}
	// One replica, on n1: n2 is cordoned until n1 has it.
	svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "web"},
		Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "sim/none:1", Resources: api.Resources{CPU: 0.1, Memory: 64 << 20}}}}
	if _, err := e.client.Services().Apply(ctx, svc); err != nil {
		t.Fatal(err)
	}
	on := func(node string) func() bool {
		return func() bool {
			insts, _, err := e.client.Instances().List(ctx, "default")
			return err == nil && len(insts) > 0 && slices.ContainsFunc(insts, func(in *api.Instance) bool {
				return in.Spec.Node == node && !in.Status.Phase.Terminal()
			})
		}
	}
	eventually(t, 10*time.Second, on("n1"))
	if _, err := e.client.Nodes().Uncordon(ctx, "n2"); err != nil {
		t.Fatal(err)
	}
	// Beats for two TTLs write nothing: the node keeps its revision.
	n1, err := e.client.Nodes().Get(ctx, "", "n1")
	if err != nil || n1.Status.Condition != api.NodeReady {
		t.Fatalf("n1: %v, %v; want Ready", n1, err)
	}
	time.Sleep(2 * ttl) // beats go on meanwhile; nothing to wait for but time
	if again, err := e.client.Nodes().Get(ctx, "", "n1"); err != nil || again.Metadata.Revision != n1.Metadata.Revision ||
		again.Status.Condition != api.NodeReady {
		t.Fatalf("n1 after two TTLs of beats: %v, %v; want Ready at revision %d", again, err, n1.Metadata.Revision)
	}

	beats["n1"]()
	stopped := time.Now()
	eventually(t, 10*time.Second, func() bool {
		n, err := e.client.Nodes().Get(ctx, "", "n1")
		return err == nil && n.Status.Condition == api.NodeNotReady
	})
	eventually(t, 10*time.Second, on("n2"))
	took, limit := time.Since(stopped), ttl+3*time.Second
	t.Logf("n1 lost and its replica replaced %v after its last beat", took)
	if took > limit {
		t.Errorf("n1's loss took %v to find and replace; want within the TTL and a margin, %v", took, limit)
	}
	if n2, err := e.client.Nodes().Get(ctx, "", "n2"); err != nil || n2.Status.Condition != api.NodeReady {
		t.Errorf("n2, still beating: %v, %v; want Ready", n2, err)
	}
}

// A heartbeat made in process (berth up's own node) does what the
// agent's status write over the API does: it renews the lease, writes
// nothing when only the time moved, and writes the node Ready again once
// it was marked otherwise.
func TestInProcessHeartbeat(t *testing.T) {
	e, ctx := startWithNode(t)
	t0 := time.Now().UTC()
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
	if first.Status.Condition != api.NodeReady {
		t.Fatalf("after the first beat: %s, want Ready", first.Status.Condition)
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

// A beat that asks for a minimal answer, as agents' do, gets no body once
// it changes nothing stored, and its node stays alive; one that changes
// something, or asks for no such thing, gets the node back.
func TestHeartbeatPreferringMinimalGetsNoBody(t *testing.T) {
	e, ctx := startWithNode(t)
	beat := func(msg string, prefer bool) (int, string) {
		t.Helper()
		body := fmt.Sprintf(`{"metadata":{"name":"n1"},"status":{"condition":"Ready","lastHeartbeat":%q,"message":%q}}`,
			time.Now().UTC().Format(time.RFC3339Nano), msg)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://berth/v1/nodes/n1/status", strings.NewReader(body))
		if prefer {
			req.Header.Set("Prefer", "respond-async, "+api.PreferMinimal)
		}
		resp, err := e.raw.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := beat("", true); code != http.StatusOK || !strings.Contains(body, `"n1"`) {
		t.Fatalf("the first beat, which writes the node Ready, got %d %q; want 200 and the node", code, body)
	}
	if code, body := beat("", true); code != http.StatusNoContent || body != "" {
		t.Fatalf("a beat that changes nothing, preferring a minimal answer, got %d %q; want 204 and no body", code, body)
	}
	if live, err := e.store.LiveNodes(ctx); err != nil || !live["n1"] {
		t.Fatalf("after beats answered with no body n1 is not alive: %v, %v", live, err)
	}
	if code, body := beat("", false); code != http.StatusOK || !strings.Contains(body, `"n1"`) {
		t.Fatalf("a beat not asking for a minimal answer got %d %q; want 200 and the node", code, body)
	}
	if code, body := beat("disk pressure", true); code != http.StatusOK || !strings.Contains(body, "disk pressure") {
		t.Fatalf("a beat with a new message got %d %q; want 200 and the node written", code, body)
	}
	// The client's beats ask for it, and still learn the server's pace.
	if next, err := e.client.Nodes().Heartbeat(ctx, "n1", time.Now()); err != nil || next <= 0 {
		t.Fatalf("client heartbeat: next in %v, %v; want the server's interval", next, err)
	}
}

// A watch beats at the server's pace, or at the slower one it asks for,
// up to api.MaxWatchHeartbeat, and says which in its answer.
func TestWatchAsksForFewerHeartbeats(t *testing.T) {
	e, ctx := startWithNode(t)
	for _, c := range []struct{ path, want string }{
		{"/v1/nodes/n1/assignments?watch=1", "100ms"}, // the test server's pace
		{"/v1/nodes/n1/assignments?watch=1&heartbeat=1m", "1m0s"},
		{"/v1/nodes/n1/assignments?watch=1&heartbeat=10ms", "100ms"}, // never faster
		{"/v1/nodes/n1/assignments?watch=1&heartbeat=24h", api.MaxWatchHeartbeat.String()},
		{"/v1/services?watch=1&heartbeat=1m", "1m0s"},
	} {
		rctx, cancel := context.WithCancel(ctx)
		req, _ := http.NewRequestWithContext(rctx, http.MethodGet, "http://berth"+c.path, nil)
		resp, err := e.raw.Do(req)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		got := resp.Header.Get(api.WatchHeartbeatHeader)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != http.StatusOK || got != c.want {
			t.Errorf("GET %s: %d, heartbeat every %q; want 200, %q", c.path, resp.StatusCode, got, c.want)
		}
	}
	// A pace that is none is refused, naming the parameter.
	for _, bad := range []string{"soon", "-1m", "0s"} {
		resp, err := e.raw.Get("http://berth/v1/nodes/n1/assignments?watch=1&heartbeat=" + bad)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnprocessableEntity || !strings.Contains(string(body), api.WatchHeartbeatParam) {
			t.Errorf("heartbeat=%s: %d %s; want 422 naming the parameter", bad, resp.StatusCode, body)
		}
	}
}
