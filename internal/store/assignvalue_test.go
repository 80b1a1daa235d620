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

// A node's watch read from history gets every instance as its key stood
// for it, as a copy would have been, through each way an instance leaves
// or changes on its node: moved after its node reported, given up as
// lost, deleted and created again under its name, its spec updated. The
// watch's events arrive in one response, more than one transaction of
// reads fills, so the batching is read too.
func TestAssignmentWatchFromHistoryReadsEachAsBound(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	names := []string{"web-0", "web-1", "web-2", "web-3"}
	uids := map[string]string{}
	for _, n := range names {
		in := instance(n)
		in.Spec.Template.Env = map[string]string{"V": "1"}
		if err := s.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
		uids[n] = in.Metadata.UID
	}
	r, err := s.client.Get(ctx, s.prefix+"/")
	if err != nil {
		t.Fatal(err)
	}
	from := r.Header.Revision + 1
	var bs []Binding
	for _, n := range names {
		bs = append(bs, Binding{Name: n, Node: "n1"})
	}
	if err := s.Bind(ctx, bs); err != nil {
		t.Fatal(err)
	}
	report := func(name string, phase api.Phase) {
		t.Helper()
		cur, err := Get[api.Instance](ctx, s, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		cur.Status.Phase, cur.Status.ContainerID = phase, "c-"+name
		if err := s.UpdateStatus(ctx, cur, 0); err != nil {
			t.Fatalf("%s %s: %v", name, phase, err)
		}
	}
	// web-0 runs, then moves to n2.
	report("web-0", api.PhaseRunning)
	if err := s.Move(ctx, Binding{Name: "web-0", Node: "n2", From: "n1", Status: &api.InstanceStatus{Phase: api.PhaseRunning, ContainerID: "c2"}}); err != nil {
		t.Fatal(err)
	}
	// web-1 runs, then is given up as lost.
	report("web-1", api.PhaseRunning)
	report("web-1", api.PhaseLost)
	// web-2 is deleted and made again, with another spec.
	report("web-2", api.PhaseRunning)
	if err := s.Delete(ctx, api.KindInstance, "default", "web-2", 0); err != nil {
		t.Fatal(err)
	}
	again := instance("web-2")
	again.Spec.Template.Env = map[string]string{"V": "2"}
	if err := s.Create(ctx, again); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-2", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	// web-3's spec changes while it runs.
	report("web-3", api.PhaseRunning)
	up, err := Get[api.Instance](ctx, s, "default", "web-3")
	if err != nil {
		t.Fatal(err)
	}
	up.Spec.Template.Env = map[string]string{"V": "3"}
	if err := s.Update(ctx, up, 0); err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ   EventType
		name  string
		uid   string
		env   string
		phase api.Phase
	}
	wants := []want{
		{Added, "web-0", uids["web-0"], "1", api.PhaseScheduled},
		{Added, "web-1", uids["web-1"], "1", api.PhaseScheduled},
		{Added, "web-2", uids["web-2"], "1", api.PhaseScheduled},
		{Added, "web-3", uids["web-3"], "1", api.PhaseScheduled},
		{Deleted, "web-0", uids["web-0"], "1", api.PhaseScheduled},
		{Deleted, "web-1", uids["web-1"], "1", api.PhaseScheduled},
		{Deleted, "web-2", uids["web-2"], "1", api.PhaseScheduled},
		{Added, "web-2", again.Metadata.UID, "2", api.PhaseScheduled},
		{Modified, "web-3", uids["web-3"], "3", api.PhaseRunning},
	}
	s.maxOps = 2 // several transactions of reads for one response
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	own := s.WatchAssignments(wctx, "n1", from)
	for i, w := range wants {
		select {
		case ev := <-own:
			g, _ := ev.Object.(*api.Instance)
			if ev.Err != nil || g == nil {
				t.Fatalf("event %d: %v", i, ev.Err)
			}
			if ev.Type != w.typ || g.Metadata.Name != w.name || g.Metadata.UID != w.uid || g.Spec.Template.Env["V"] != w.env || g.Status.Phase != w.phase || g.Spec.Node != "n1" {
				t.Fatalf("event %d: %s %s uid %s env %v phase %s node %s; want %+v", i, ev.Type, g.Metadata.Name, g.Metadata.UID, g.Spec.Template.Env, g.Status.Phase, g.Spec.Node, w)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("event %d: none, want %+v", i, w)
		}
	}
	list, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(list) != 2 {
		t.Fatalf("assignments: %+v, %v", list, err)
	}
	for _, g := range list {
		if g.Metadata.Name == "web-2" && (g.Metadata.UID != again.Metadata.UID || g.Status.Phase != api.PhaseScheduled) ||
			g.Metadata.Name == "web-3" && (g.Spec.Template.Env["V"] != "3" || g.Status.Phase != api.PhaseRunning) {
			t.Fatalf("assignment %+v", g)
		}
	}
}
