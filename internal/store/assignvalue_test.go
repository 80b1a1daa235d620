package store

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
)

// An assignment key holds no copy of its instance, yet its list and its
// watches (an etcd watch of the node's own, and the hub's) give the
// instance as it was bound, as when the key held a copy: an added
// instance as written, a deleted one with the status it was bound with.
func TestAssignmentKeyHoldsNoCopy(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	in := instance("web-1")
	in.Spec.Template.Env = map[string]string{"GREETING": "hello"}
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	from := in.Metadata.Revision + 1
	own := s.WatchAssignments(ctx, "n1", from)
	feed := s.WatchAssignmentsRaw(ctx, "n1", from)
	if err := s.Bind(ctx, []Binding{{Name: "web-1", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	bound, err := s.client.Get(ctx, s.Key(api.KindInstance, "default", "web-1"))
	if err != nil {
		t.Fatal(err)
	}
	boundValue, boundRev := bound.Kvs[0].Value, bound.Kvs[0].ModRevision
	ak, err := s.client.Get(ctx, s.assignKey("n1", "default", "web-1"))
	if err != nil || len(ak.Kvs) != 1 {
		t.Fatalf("assignment key: %v, %v", ak, err)
	}
	if v := ak.Kvs[0].Value; bytes.Contains(v, []byte("busybox")) || len(v) >= len(boundValue)/2 {
		t.Fatalf("assignment key holds %d bytes %s, the instance %d", len(v), v, len(boundValue))
	}

	// The node reports; the list as bound does not show it, the current one does.
	cur, _ := Get[api.Instance](ctx, s, "default", "web-1")
	cur.Status.Phase, cur.Status.ContainerID = api.PhaseRunning, "c1"
	if err := s.UpdateStatus(ctx, cur, 0); err != nil {
		t.Fatal(err)
	}
	list, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(list) != 1 {
		t.Fatalf("assignments: %v, %v", list, err)
	}
	if g := list[0]; g.Status.Phase != api.PhaseScheduled || g.Metadata.Revision != boundRev || g.Spec.Template.Env["GREETING"] != "hello" || g.Spec.Node != "n1" {
		t.Fatalf("assignment as bound: %+v", g)
	}
	now, _, err := s.AssignmentsCurrent(ctx, "n1")
	if err != nil || len(now) != 1 || now[0].Status.ContainerID != "c1" || now[0].Metadata.Revision != boundRev {
		t.Fatalf("current assignments: %+v, %v", now, err)
	}

	if err := s.Delete(ctx, api.KindInstance, "default", "web-1", 0); err != nil {
		t.Fatal(err)
	}
	want, err := Wire(api.KindInstance, boundValue, boundRev)
	if err != nil {
		t.Fatal(err)
	}
	var wantObj map[string]any
	_ = json.Unmarshal(want, &wantObj)
	for _, ev := range takeFeed(t, feed, 2) {
		var got map[string]any
		if err := json.Unmarshal([]byte(ev.Raw), &got); err != nil {
			t.Fatal(err)
		}
		if ev.Type == Added && ev.Raw != string(want) || ev.Type == Deleted && !jsonEqual(got, wantObj) {
			t.Fatalf("hub's %s event %s, want %s", ev.Type, ev.Raw, want)
		}
	}
	for _, typ := range []EventType{Added, Deleted} {
		select {
		case ev := <-own:
			g, _ := ev.Object.(*api.Instance)
			if ev.Err != nil || ev.Type != typ || g.Status.Phase != api.PhaseScheduled || g.Metadata.Revision != boundRev || g.Spec.Template.Env["GREETING"] != "hello" {
				t.Fatalf("node's own watch: %s %+v, %v; want %s of the instance as bound", ev.Type, g, ev.Err, typ)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("node's own watch: no %s event", typ)
		}
	}
}

// An assignment key written with a copy of its instance, as servers did
// before, reads as it did.
func TestAssignmentKeyWithACopyReadsAsBefore(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	if err := s.Create(ctx, instance("web-1")); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-1", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	r, err := s.client.Get(ctx, s.Key(api.KindInstance, "default", "web-1"))
	if err != nil {
		t.Fatal(err)
	}
	copied := string(r.Kvs[0].Value)
	if _, err := s.client.Put(ctx, s.assignKey("n1", "default", "web-1"), copied); err != nil {
		t.Fatal(err)
	}
	cur, _ := Get[api.Instance](ctx, s, "default", "web-1")
	cur.Status.Phase = api.PhaseRunning
	if err := s.UpdateStatus(ctx, cur, 0); err != nil {
		t.Fatal(err)
	}
	bound, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(bound) != 1 || bound[0].Status.Phase != api.PhaseScheduled {
		t.Fatalf("assignments: %+v, %v", bound, err)
	}
	now, _, err := s.AssignmentsCurrent(ctx, "n1")
	if err != nil || len(now) != 1 || now[0].Status.Phase != api.PhaseRunning || now[0].Spec.Template.Image != "demo/busybox:1" {
		t.Fatalf("current assignments: %+v, %v", now, err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	own := s.WatchAssignments(wctx, "n1", r.Header.Revision+1)
	if _, err := s.client.Delete(ctx, s.assignKey("n1", "default", "web-1"), clientv3.WithPrevKV()); err != nil {
		t.Fatal(err)
	}
	for _, typ := range []EventType{Modified, Deleted} {
		select {
		case ev := <-own:
			g, _ := ev.Object.(*api.Instance)
			if ev.Err != nil || ev.Type != typ || g.Metadata.Name != "web-1" || g.Status.Phase != api.PhaseScheduled {
				t.Fatalf("watch: %s %+v, %v; want %s of the copy", ev.Type, g, ev.Err, typ)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("watch: no %s event", typ)
		}
	}
}

func jsonEqual(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}
