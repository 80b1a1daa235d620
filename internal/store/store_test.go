package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

func openStore(t testing.TB) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func service(name string, replicas int) *api.Service {
	return &api.Service{
		Metadata: api.Metadata{Name: name},
		Spec: api.ServiceSpec{
			Replicas: replicas,
			Template: api.Template{Image: "demo/busybox:1", Command: []string{"sleep", "1d"}},
		},
	}
}

func instance(name string) *api.Instance {
	return &api.Instance{
		Metadata: api.Metadata{Name: name},
		Spec: api.InstanceSpec{
			Template: &api.Template{Image: "demo/busybox:1"},
			Owner:    api.Owner{Kind: api.KindService, Name: "web"},
		},
	}
}

func TestCRUD(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)

	web := service("web", 2)
	if err := s.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	if web.Metadata.Revision == 0 || web.Metadata.UID == "" || web.Metadata.CreatedAt.IsZero() || web.Metadata.Namespace != "default" {
		t.Fatalf("create did not fill metadata: %+v", web.Metadata)
	}
	if err := s.Create(ctx, service("web", 1)); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second create: got %v, want AlreadyExists", err)
	}

	got, err := Get[api.Service](ctx, s, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Replicas != 2 || got.Metadata.Revision != web.Metadata.Revision || got.Metadata.UID != web.Metadata.UID {
		t.Fatalf("get: %+v", got)
	}

	// A status write and a spec write, each from its own copy: neither
	// undoes the other.
	st := *got
	st.Status.ReadyReplicas = 2
	st.Spec.Replicas = 99 // ignored by UpdateStatus
	if err := s.UpdateStatus(ctx, &st, got.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	if st.Spec.Replicas != 2 {
		t.Fatalf("status update changed the spec: replicas %d", st.Spec.Replicas)
	}
	spec := *got
	spec.Spec.Replicas = 5
	if err := s.Update(ctx, &spec, got.Metadata.Revision); !errdefs.IsConflict(err) {
		t.Fatalf("update at stale revision: got %v, want Conflict", err)
	}
	spec.Status.ReadyReplicas = 0 // a spec writer's stale view of status
	if err := s.Update(ctx, &spec, st.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	got, err = Get[api.Service](ctx, s, "", "web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Replicas != 5 || got.Status.ReadyReplicas != 2 {
		t.Fatalf("after spec and status updates: replicas %d ready %d, want 5 and 2", got.Spec.Replicas, got.Status.ReadyReplicas)
	}
	if got.Metadata.UID != web.Metadata.UID || !got.Metadata.CreatedAt.Equal(web.Metadata.CreatedAt) {
		t.Fatal("update changed the object's identity")
	}

	if err := s.Delete(ctx, api.KindService, "default", "web", web.Metadata.Revision); !errdefs.IsConflict(err) {
		t.Fatalf("delete at stale revision: got %v, want Conflict", err)
	}
	if err := s.Delete(ctx, api.KindService, "default", "web", got.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	_, err = Get[api.Service](ctx, s, "default", "web")
	if !errdefs.IsNotFound(err) {
		t.Fatalf("get after delete: got %v, want NotFound", err)
	}
	if want := `service "web" in namespace "default": not found`; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
}

func TestInvalidNotStored(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	bad := service("web", -1)
	err := s.Create(ctx, bad)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
	if fe := api.FieldErrors(err); len(fe) != 1 || fe[0].Field != "replicas" {
		t.Fatalf("field errors %+v, want one on replicas", fe)
	}
	list, _, err := List[api.Service](ctx, s, "")
	if err != nil || len(list) != 0 {
		t.Fatalf("list after invalid create: %d objects, err %v", len(list), err)
	}
}

func TestConcurrentUpdatesOneConflictEach(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	web := service("web", 1)
	if err := s.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	rev := web.Metadata.Revision
	const writers = 8
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			o := service("web", 10+i)
			errs[i] = s.Update(ctx, o, rev)
		})
	}
	wg.Wait()
	ok, conflicts := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errdefs.IsConflict(err):
			conflicts++
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	}
	if ok != 1 || conflicts != writers-1 {
		t.Fatalf("%d succeeded and %d conflicted, want 1 and %d", ok, conflicts, writers-1)
	}
}

func TestWatchFromListRevisionMissesNothing(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	for i := range 5 {
		if err := s.Create(ctx, service(fmt.Sprintf("before-%d", i), 1)); err != nil {
			t.Fatal(err)
		}
	}
	list, rev, err := List[api.Service](ctx, s, "default")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 5 {
		t.Fatalf("listed %d, want 5", len(list))
	}
	// Changes after the list and before the watch starts.
	var want []string
	for i := range 5 {
		if err := s.Create(ctx, service(fmt.Sprintf("after-%d", i), 1)); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("Added after-%d", i))
	}
	up := list[0]
	up.Spec.Replicas = 3
	if err := s.Update(ctx, up, up.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	want = append(want, "Modified before-0")
	if err := s.Delete(ctx, api.KindService, "default", "before-1", 0); err != nil {
		t.Fatal(err)
	}
	want = append(want, "Deleted before-1")
	// Another namespace is not watched.
	other := service("elsewhere", 1)
	other.Metadata.Namespace = "other"
	if err := s.Create(ctx, other); err != nil {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch := WatchOf[api.Service](wctx, s, "default", rev+1)
	var got []string
	last := rev
	for len(got) < len(want) {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("watch closed after %v", got)
			}
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			if ev.Revision <= last {
				t.Fatalf("revision went from %d to %d", last, ev.Revision)
			}
			last = ev.Revision
			got = append(got, fmt.Sprintf("%s %s", ev.Type, ev.Object.Metadata.Name))
		case <-wctx.Done():
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// Nothing more is pending.
	select {
	case ev := <-ch:
		t.Fatalf("unexpected event %+v", ev)
	case <-time.After(100 * time.Millisecond):
	}
}

func TestBindAndAssignments(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	a, b := instance("web-1"), instance("web-2")
	if err := s.CreateMany(ctx, []api.Object{a, b}); err != nil {
		t.Fatal(err)
	}
	_, rev, err := s.Assignments(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ch := s.WatchAssignments(wctx, "n1", rev+1)

	err = s.Bind(ctx, []Binding{
		{Name: "web-1", Node: "n1", CPUSet: []int{2, 3}, Revision: a.Metadata.Revision},
		{Name: "web-2", Node: "n1", Revision: b.Metadata.Revision},
	})
	if err != nil {
		t.Fatal(err)
	}
	got, err := Get[api.Instance](ctx, s, "default", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Node != "n1" || got.Status.Phase != api.PhaseScheduled || fmt.Sprint(got.Spec.CPUSet) != "[2 3]" {
		t.Fatalf("bound instance: node %q phase %q cpuset %v", got.Spec.Node, got.Status.Phase, got.Spec.CPUSet)
	}
	assigned, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(assigned) != 2 {
		t.Fatalf("assignments of n1: %d, %v", len(assigned), err)
	}
	if assigned[0].Metadata.Revision != got.Metadata.Revision {
		t.Fatalf("assignment at revision %d, instance at %d: not one transaction", assigned[0].Metadata.Revision, got.Metadata.Revision)
	}

	// Binding a bound instance elsewhere fails, and binds nothing else.
	c := instance("web-3")
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	err = s.Bind(ctx, []Binding{{Name: "web-3", Node: "n2"}, {Name: "web-1", Node: "n2"}})
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("rebinding: got %v, want FailedPrecondition", err)
	}
	if n2, _, _ := s.Assignments(ctx, "n2"); len(n2) != 0 {
		t.Fatalf("a failed bind left %d assignments", len(n2))
	}

	// A spec update that leaves the node out (a controller re-applying
	// its template) keeps the binding, and moves the assignment along.
	re := instance("web-1")
	re.Spec.Template.Env = map[string]string{"V": "2"}
	if err := s.Update(ctx, re, 0); err != nil {
		t.Fatal(err)
	}
	if re.Spec.Node != "n1" || fmt.Sprint(re.Spec.CPUSet) != "[2 3]" {
		t.Fatalf("spec update unbound the instance: node %q cpuset %v", re.Spec.Node, re.Spec.CPUSet)
	}
	got = re

	// A status write from the agent does not touch the assignment; deleting
	// the instance removes it.
	got.Status.Phase = api.PhaseRunning
	if err := s.UpdateStatus(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, api.KindInstance, "default", "web-2", 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"Added web-1", "Added web-2", "Modified web-1", "Deleted web-2"}
	var seen []string
	for len(seen) < len(want) {
		select {
		case ev := <-ch:
			if ev.Err != nil {
				t.Fatal(ev.Err)
			}
			seen = append(seen, fmt.Sprintf("%s %s", ev.Type, ev.Object.GetMetadata().Name))
		case <-wctx.Done():
			t.Fatalf("assignment events %v, want %v", seen, want)
		}
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("assignment events %v, want %v", seen, want)
	}
}

func TestCreateManyBeyondOneTransaction(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	n := embeddedMaxTxnOps + 200
	objs := make([]api.Object, n)
	for i := range objs {
		objs[i] = instance(fmt.Sprintf("i-%d", i))
	}
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	list, _, err := List[api.Instance](ctx, s, "default")
	if err != nil || len(list) != n {
		t.Fatalf("listed %d, want %d (%v)", len(list), n, err)
	}
	// Large objects split by size as well as by count.
	big := make([]api.Object, 70)
	for i := range big {
		in := instance(fmt.Sprintf("big-%d", i))
		in.Spec.Template.Env = map[string]string{"PAYLOAD": strings.Repeat("x", api.MaxTemplateBytes-1024)}
		big[i] = in
	}
	if err := s.CreateMany(ctx, big); err != nil {
		t.Fatalf("4 MB of instances: %v", err)
	}
	// A taken name fails its whole transaction and is named.
	err = s.CreateMany(ctx, []api.Object{instance("fresh"), instance("i-7")})
	if !errdefs.IsAlreadyExists(err) || !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("got %v, want AlreadyExists", err)
	}
	if want := `instance "i-7" in namespace "default": already exists`; err.Error() != want {
		t.Fatalf("error %q, want %q", err, want)
	}
	if _, err := Get[api.Instance](ctx, s, "default", "fresh"); !errdefs.IsNotFound(err) {
		t.Fatalf("a failed batch stored part of itself: %v", err)
	}
}

func TestEvents(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	for range 3 {
		ev := &api.Event{Object: api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"}, Type: api.EventNormal, Reason: "Scaled"}
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	list, _, err := List[api.Event](ctx, s, "")
	if err != nil || len(list) != 3 {
		t.Fatalf("listed %d events, want 3 (%v)", len(list), err)
	}
	r, err := s.client.Get(ctx, s.Key(api.KindEvent, "default", list[0].Metadata.Name))
	if err != nil || r.Kvs[0].Lease == 0 {
		t.Fatalf("event stored without a lease: %v", err)
	}
}

func TestNodesAreClusterWide(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	n := &api.Node{Metadata: api.Metadata{Name: "n1", Namespace: "ignored"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}
	if err := s.Create(ctx, n); err != nil {
		t.Fatal(err)
	}
	if n.Metadata.Namespace != "" {
		t.Fatalf("node namespace %q, want none", n.Metadata.Namespace)
	}
	n.Status.Condition = api.NodeReady
	n.Status.LastHeartbeat = time.Now()
	if err := s.UpdateStatus(ctx, n, n.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	got, err := Get[api.Node](ctx, s, "whatever", "n1")
	if err != nil || got.Status.Condition != api.NodeReady || got.Spec.Address != "10.0.0.1" {
		t.Fatalf("node: %+v, %v", got, err)
	}
}

func TestEventsBounded(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), MaxEvents: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var names []string
	for i := range pruneEvery + 6 {
		ev := &api.Event{Object: api.ObjectRef{Kind: api.KindJob, Namespace: "default", Name: "tests"}, Type: api.EventNormal, Reason: fmt.Sprint("R", i)}
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		names = append(names, ev.Metadata.Name)
	}
	list, _, err := List[api.Event](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 16 {
		t.Fatalf("%d events kept, want 16 (10 after the prune at %d, then 6)", len(list), pruneEvery)
	}
	if err := s.PruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	list, _, err = List[api.Event](ctx, s, "")
	if err != nil || len(list) != 10 {
		t.Fatalf("%d events after pruning, want 10 (%v)", len(list), err)
	}
	kept := map[string]bool{}
	for _, ev := range list {
		kept[ev.Metadata.Name] = true
	}
	for _, n := range names[len(names)-10:] {
		if !kept[n] {
			t.Fatalf("newest event %s was pruned", n)
		}
	}
}

// Audit events (who ran what in which instance) have their own quota: a
// flood of other events does not push them out, nor does a flood of audit
// events of another kind, they are pruned only among their kind, and no
// event a client records can pass for one.
func TestAuditEventsKeptThroughFlood(t *testing.T) {
	ctx := t.Context()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), MaxEvents: 10})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	exec := func(i int) *api.Event {
		ev := &api.Event{Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal,
			Reason: "Exec", Message: fmt.Sprintf("admin ran [\"sh\" \"-c\" \"%d\"] on node n1", i), Source: "apiserver"}
		if err := s.RecordAuditEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		return ev
	}
	count := func() (audit, other map[string]bool) {
		list, _, err := List[api.Event](ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		audit, other = map[string]bool{}, map[string]bool{}
		for _, ev := range list {
			if ev.Reason == "Exec" {
				audit[ev.Message] = true
			} else {
				other[ev.Metadata.Name] = true
			}
		}
		return audit, other
	}
	for i := range 3 {
		exec(i)
	}
	for i := range 3 * pruneEvery {
		ev := &api.Event{Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal, Reason: fmt.Sprint("Flood", i)}
		if err := s.RecordEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	audit, other := count()
	if len(audit) != 3 || len(other) != 10 {
		t.Fatalf("after a flood: %d exec events and %d others kept, want the 3 and 10", len(audit), len(other))
	}
	// Beyond their own quota, the oldest audit events go, and only they.
	for i := 3; i < 15; i++ {
		exec(i)
	}
	if err := s.PruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	audit, other2 := count()
	if len(audit) != 10 || !audit["admin ran [\"sh\" \"-c\" \"14\"] on node n1"] || audit["admin ran [\"sh\" \"-c\" \"4\"] on node n1"] {
		t.Errorf("audit events kept: %v, want the newest 10 (5 to 14)", audit)
	}
	if len(other2) != len(other) {
		t.Errorf("pruning audit events removed others: %d left of %d", len(other2), len(other))
	}
	// Nor do audit events of another kind: a busy port-forward's.
	for i := range 3 * pruneEvery {
		ev := &api.Event{Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal,
			Reason: "PortForward", Message: fmt.Sprint("admin forwarded port ", i), Source: "apiserver"}
		if err := s.RecordAuditEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	audit, other3 := count()
	if len(audit) != 10 || !audit["admin ran [\"sh\" \"-c\" \"14\"] on node n1"] {
		t.Errorf("exec events kept through a flood of port-forward ones: %v, want the newest 10 (5 to 14)", audit)
	}
	if len(other3) != len(other)+10 {
		t.Errorf("after %d port-forward events: %d other events, want the %d before and the newest 10 port-forward ones", 3*pruneEvery, len(other3), len(other))
	}
	forged := &api.Event{Metadata: api.Metadata{Name: "web-1-1-audit"}, Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal, Reason: "Exec"}
	if err := s.RecordEvent(ctx, forged); !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), "metadata.name") {
		t.Errorf("an event named as an audit one: %v, want it refused naming metadata.name", err)
	}
}

func TestWatchFromCompactedRevision(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	first := service("a", 1)
	if err := s.Create(ctx, first); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, service("b", 1)); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.client.Compact(ctx, rev); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ev, ok := <-s.Watch(wctx, api.KindService, "", first.Metadata.Revision)
	if !ok || !errdefs.IsFailedPrecondition(ev.Err) {
		t.Fatalf("watch from a compacted revision: %+v, want FailedPrecondition", ev)
	}
}

func TestExternalEndpoints(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	embedded, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer embedded.Close()
	// A second store reaches the first one's etcd over gRPC, as a server
	// does with --etcd-endpoints.
	ext, err := Open(ctx, Config{EtcdEndpoints: []string{"unix://" + dir + "/etcd/client.sock"}})
	if err != nil {
		t.Fatal(err)
	}
	defer ext.Close()
	if err := ext.Create(ctx, service("web", 1)); err != nil {
		t.Fatal(err)
	}
	got, err := Get[api.Service](ctx, embedded, "default", "web")
	if err != nil || got.Spec.Replicas != 1 {
		t.Fatalf("written over gRPC, read in-process: %+v, %v", got, err)
	}
	short, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if _, err := Open(short, Config{EtcdEndpoints: []string{"unix://" + dir + "/nothing.sock"}}); !errdefs.IsUnavailable(err) {
		t.Fatalf("unreachable etcd: %v", err)
	}
}

func TestDataDirInUse(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	s, err := Open(ctx, Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, service("web", 3)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, Config{DataDir: dir}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("second store on one data dir: %v, want FailedPrecondition", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopening after a close keeps the data.
	if err := func() error {
		s, err := Open(ctx, Config{DataDir: dir})
		if err != nil {
			return err
		}
		defer s.Close()
		got, err := Get[api.Service](ctx, s, "default", "web")
		if err != nil {
			return fmt.Errorf("get after reopen: %w", err)
		}
		if got.Spec.Replicas != 3 {
			return fmt.Errorf("after reopen: replicas %d, want 3", got.Spec.Replicas)
		}
		return nil
	}(); err != nil {
		t.Fatal(err)
	}
}

// TestMove: a move rebinds a running instance from one node to another
// with its new status, its assignment key going along; a move from a
// node it is not on, or of a lost instance, is refused.
func TestMove(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	in := instance("db-1")
	if err := s.Create(ctx, in); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "db-1", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	st := api.InstanceStatus{Phase: api.PhaseRunning, IP: "10.244.2.5", ContainerID: "c1"}
	if err := s.Move(ctx, Binding{Name: "db-1", Node: "n2", From: "n3", Status: &st}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("move from a node it is not on: %v, want FailedPrecondition", err)
	}
	if err := s.Move(ctx, Binding{Name: "db-1", Node: "n2"}); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("move without its source: %v, want InvalidArgument", err)
	}
	if err := s.Move(ctx, Binding{Name: "db-1", Node: "n2", From: "n1", Status: &st}); err != nil {
		t.Fatal(err)
	}
	got, err := Get[api.Instance](ctx, s, "default", "db-1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Spec.Node != "n2" || got.Status.IP != "10.244.2.5" || got.Status.Phase != api.PhaseRunning || got.Metadata.UID != in.Metadata.UID {
		t.Fatalf("moved instance: node %q status %+v uid %s", got.Spec.Node, got.Status, got.Metadata.UID)
	}
	n1, _, _ := s.Assignments(ctx, "n1")
	n2, _, _ := s.Assignments(ctx, "n2")
	if len(n1) != 0 || len(n2) != 1 {
		t.Fatalf("after the move n1 has %d assignments, n2 %d", len(n1), len(n2))
	}
	got.Status.Phase = api.PhaseLost
	if err := s.UpdateStatus(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Move(ctx, Binding{Name: "db-1", Node: "n1", From: "n2", Status: &st}); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("move of a lost instance: %v, want FailedPrecondition", err)
	}
}

// An agent that starts over gets its assignments with the status each
// instance has now, not as it was bound, and only its own node's.
func TestAssignmentsCurrentCarryLatestStatus(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	var objs []api.Object
	for _, n := range []string{"web-1", "web-2", "web-3", "other"} {
		objs = append(objs, instance(n))
	}
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-1", Node: "n1"}, {Name: "web-2", Node: "n1"}, {Name: "web-3", Node: "n1"}, {Name: "other", Node: "n2"}}); err != nil {
		t.Fatal(err)
	}
	for i, n := range []string{"web-1", "web-3"} {
		in, err := Get[api.Instance](ctx, s, "default", n)
		if err != nil {
			t.Fatal(err)
		}
		in.Status.Phase, in.Status.ContainerID, in.Status.Healthy = api.PhaseRunning, fmt.Sprintf("c%d", i), true
		if err := s.UpdateStatus(ctx, in, 0); err != nil {
			t.Fatal(err)
		}
	}
	s.maxOps = 2 // several read batches from three instances
	bound, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(bound) != 3 || bound[0].Status.Phase != api.PhaseScheduled {
		t.Fatalf("assignments as bound: %d, %v", len(bound), err)
	}
	cur, _, err := s.AssignmentsCurrent(ctx, "n1")
	if err != nil || len(cur) != 3 {
		t.Fatalf("current assignments of n1: %d, %v", len(cur), err)
	}
	got := map[string]string{}
	for _, in := range cur {
		got[in.Metadata.Name] = fmt.Sprintf("%s/%s/%v", in.Status.Phase, in.Status.ContainerID, in.Status.Healthy)
	}
	want := map[string]string{"web-1": "Running/c0/true", "web-2": "Scheduled//false", "web-3": "Running/c1/true"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("current assignments %v, want %v", got, want)
	}
}

// SetStatus writes the status of instances read with InstancesNamed in
// one transaction, leaving spec and assignment as they are; an instance
// changed since the read makes the whole transaction a conflict, and a
// Lost one is not revived.
func TestSetStatusOfInstancesRead(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	a, b := instance("web-1"), instance("web-2")
	if err := s.CreateMany(ctx, []api.Object{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-1", Node: "n1", CPUSet: []int{1}}, {Name: "web-2", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	refs := [][2]string{{"default", "web-1"}, {"default", "web-2"}}
	cur, raw, err := s.InstancesNamed(ctx, refs)
	if err != nil {
		t.Fatal(err)
	}
	// What a report is checked against is there, though not the whole instance.
	if h := cur[0]; h.Spec.Node != "n1" || h.Metadata.UID != a.Metadata.UID || h.Metadata.Revision == 0 ||
		h.Metadata.Name != "web-1" || h.Status.Phase != api.PhaseScheduled || h.Status.ScheduledAt.IsZero() {
		t.Fatalf("InstancesNamed read web-1 as %+v", h)
	}
	running := api.InstanceStatus{Phase: api.PhaseRunning, ContainerID: "c1", Healthy: true}
	if err := s.Txn().SetStatus(cur[0], raw[0], running).SetStatus(cur[1], raw[1], running).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web-1", "web-2"} {
		got, err := Get[api.Instance](ctx, s, "default", name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Phase != api.PhaseRunning || got.Status.ContainerID != "c1" || got.Spec.Node != "n1" || got.Spec.Template.Image == "" {
			t.Fatalf("%s after SetStatus: node %q image %q status %+v", name, got.Spec.Node, got.Spec.Template.Image, got.Status)
		}
	}
	if got, _ := Get[api.Instance](ctx, s, "default", "web-1"); fmt.Sprint(got.Spec.CPUSet) != "[1]" {
		t.Fatalf("SetStatus changed the spec: cpuset %v", got.Spec.CPUSet)
	}
	assigned, _, err := s.Assignments(ctx, "n1")
	if err != nil || len(assigned) != 2 {
		t.Fatalf("assignments of n1 after SetStatus: %d, %v", len(assigned), err)
	}

	// What was read is stale now: nothing of the transaction is written.
	stale := api.InstanceStatus{Phase: api.PhaseFailed, ExitCode: 1}
	fresh, freshRaw, err := s.InstancesNamed(ctx, refs[1:])
	if err != nil {
		t.Fatal(err)
	}
	err = s.Txn().SetStatus(fresh[0], freshRaw[0], stale).SetStatus(cur[0], raw[0], stale).Commit(ctx)
	if !errdefs.IsConflict(err) || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("SetStatus on a stale read: %v, want a conflict naming web-1", err)
	}
	if got, _ := Get[api.Instance](ctx, s, "default", "web-2"); got.Status.Phase != api.PhaseRunning {
		t.Fatalf("a failed transaction wrote web-2: %s", got.Status.Phase)
	}

	// Lost is final.
	lost, lostRaw, err := s.InstancesNamed(ctx, refs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Txn().SetStatus(lost[0], lostRaw[0], api.InstanceStatus{Phase: api.PhaseLost}).Commit(ctx); err != nil {
		t.Fatal(err)
	}
	lost, lostRaw, err = s.InstancesNamed(ctx, refs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Txn().SetStatus(lost[0], lostRaw[0], running).Commit(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("reviving a Lost instance: %v, want FailedPrecondition", err)
	}
	if n1, _, _ := s.Assignments(ctx, "n1"); len(n1) != 1 {
		t.Fatalf("a Lost instance stays assigned: %d assignments of n1", len(n1))
	}
}

// A node that reports again the status an instance has (every one of
// them after its agent restarts) costs etcd no put: no revision of the
// whole instance kept to the next compaction, no event to its watchers.
// The report still answers for the value it was checked against: an
// instance changed since the read is a conflict.
func TestSetStatusOfTheSameStatusPutsNothing(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	a, b := instance("web-1"), instance("web-2")
	if err := s.CreateMany(ctx, []api.Object{a, b}); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-1", Node: "n1"}, {Name: "web-2", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	refs := [][2]string{{"default", "web-1"}, {"default", "web-2"}}
	running := api.InstanceStatus{Phase: api.PhaseRunning, ContainerID: "c1", Pid: 7, Healthy: true,
		StartedAt: time.Date(2026, 12, 7, 13, 0, 0, 123456789, time.UTC)}
	report := func(sts ...api.InstanceStatus) error {
		cur, raw, err := s.InstancesNamed(ctx, refs[:len(sts)])
		if err != nil {
			t.Fatal(err)
		}
		txn := s.Txn()
		for i, st := range sts {
			txn.SetStatus(cur[i], raw[i], st)
		}
		return txn.Commit(ctx)
	}
	if err := report(running, running); err != nil {
		t.Fatal(err)
	}
	revs := func() (int64, int64, int64) {
		r, err := s.client.Get(ctx, s.Key(api.KindInstance, "default", "web-1"))
		if err != nil || len(r.Kvs) != 1 {
			t.Fatalf("read web-1: %v", err)
		}
		w2, err := Get[api.Instance](ctx, s, "default", "web-2")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision, r.Kvs[0].ModRevision, w2.Metadata.Revision
	}
	etcdRev, rev1, rev2 := revs()

	// Both again, as they are: nothing written.
	if err := report(running, running); err != nil {
		t.Fatal(err)
	}
	if e, r1, r2 := revs(); e != etcdRev || r1 != rev1 || r2 != rev2 {
		t.Fatalf("the same statuses again: etcd at %d, web-1 at %d, web-2 at %d; want nothing written (%d, %d, %d)", e, r1, r2, etcdRev, rev1, rev2)
	}

	// One the same, one changed: the changed one alone is written.
	exited := api.InstanceStatus{Phase: api.PhaseFailed, ContainerID: "c1", ExitCode: 1}
	if err := report(running, exited); err != nil {
		t.Fatal(err)
	}
	e, r1, r2 := revs()
	if r1 != rev1 || r2 == rev2 || e != etcdRev+1 {
		t.Fatalf("web-1 the same, web-2 changed: web-1 at %d (was %d), web-2 at %d (was %d), etcd at %d (was %d)", r1, rev1, r2, rev2, e, etcdRev)
	}
	if got, _ := Get[api.Instance](ctx, s, "default", "web-2"); got.Status.Phase != api.PhaseFailed || got.Status.ExitCode != 1 {
		t.Fatalf("web-2's new status not written: %+v", got.Status)
	}

	// The same status as a stale read had: a conflict, as any write.
	cur, raw, err := s.InstancesNamed(ctx, refs[:1])
	if err != nil {
		t.Fatal(err)
	}
	if err := report(exited); err != nil {
		t.Fatal(err)
	}
	if err := s.Txn().SetStatus(cur[0], raw[0], running).Commit(ctx); !errdefs.IsConflict(err) {
		t.Fatalf("the stored status again on a stale read: %v, want a conflict", err)
	}
}

// TestBindOneOutlastsStatusWrites binds instances while their statuses
// are written over and over, as the controller writes an unplaceable
// instance's reason: a bind that names no revision binds each one, and a
// bind that names a revision the status write passed is a conflict.
func TestBindOneOutlastsStatusWrites(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	const n = 20
	var objs []api.Object
	for i := range n {
		objs = append(objs, instance(fmt.Sprintf("free-%d", i)))
	}
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	wrote := make(chan int)
	go func() {
		writes := 0
		defer func() { wrote <- writes }()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			default:
			}
			in := instance(fmt.Sprintf("free-%d", i%n))
			in.Status = api.InstanceStatus{Phase: api.PhasePending, Reason: "Unschedulable", Message: fmt.Sprint(i)}
			if err := s.UpdateStatus(ctx, in, 0); err != nil {
				t.Errorf("status of %s: %v", in.Metadata.Name, err)
				return
			}
			writes++
		}
	}()
	var errs []error
	for i := range n {
		if err := s.BindOne(ctx, Binding{Name: fmt.Sprintf("free-%d", i), Node: "n1"}); err != nil {
			errs = append(errs, err)
		}
	}
	close(done)
	if writes := <-wrote; writes == 0 {
		t.Fatal("no status was written while binding")
	}
	if len(errs) > 0 {
		t.Fatalf("%d of %d binds without a revision failed, first: %v", len(errs), n, errs[0])
	}
	got, err := Get[api.Instance](ctx, s, "default", "free-7")
	if err != nil || got.Spec.Node != "n1" {
		t.Fatalf("free-7 after the binds: node %q, %v", got.Spec.Node, err)
	}
	c := instance("stale")
	if err := s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	stale := c.Metadata.Revision
	if stale == 0 {
		t.Fatal("create gave stale no revision")
	}
	c.Status.Reason = "Unschedulable"
	if err := s.UpdateStatus(ctx, c, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.BindOne(ctx, Binding{Name: "stale", Node: "n1", Revision: stale}); !errdefs.IsConflict(err) {
		t.Fatalf("bind at a revision a status write passed: %v, want a conflict", err)
	}
}

// A list of more than a page reads every object once, in key order, all
// as of one revision even when they change meanwhile; RevisionsAt names
// the same objects at the same revisions, reading no value; a compacted
// revision fails it with FailedPrecondition.
func TestListPagesAtOneRevision(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	n := 2*listPage + 37
	var objs []api.Object
	for i := range n {
		in := instance(fmt.Sprintf("i-%05d", i))
		in.Metadata.Namespace = []string{"a", "b"}[i%2]
		objs = append(objs, in)
	}
	// Keys just past the instances' prefix must stay out of the list.
	objs = append(objs, service("web", 1))
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Afterwards: some gone, some changed, one more.
	for i := 0; i < n; i += 97 {
		if err := s.Delete(ctx, api.KindInstance, []string{"a", "b"}[i%2], fmt.Sprintf("i-%05d", i), 0); err != nil {
			t.Fatal(err)
		}
	}
	in, err := Get[api.Instance](ctx, s, "b", "i-02001")
	if err != nil {
		t.Fatal(err)
	}
	in.Status.Message = "changed"
	if err := s.UpdateStatus(ctx, in, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Create(ctx, instance("late")); err != nil {
		t.Fatal(err)
	}

	type seen struct {
		ns, name string
		rev      int64
	}
	var listed []seen
	if _, err := s.ListFuncAt(ctx, api.KindInstance, "", rev, func(value []byte, modRev int64) error {
		var in api.Instance
		if err := Decode(&in, value, modRev); err != nil {
			return err
		}
		listed = append(listed, seen{in.Metadata.Namespace, in.Metadata.Name, modRev})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(listed) != n {
		t.Fatalf("listed %d instances at revision %d, want %d", len(listed), rev, n)
	}
	for i, l := range listed {
		// Namespace a holds the even ones, b the odd; each in order.
		j := 2 * i
		if i >= (n+1)/2 {
			j = 2*(i-(n+1)/2) + 1
		}
		if want := fmt.Sprintf("i-%05d", j); l.name != want || l.ns != []string{"a", "b"}[j%2] || l.rev > rev {
			t.Fatalf("listed #%d: %s/%s at %d, want %s/%s at or before %d", i, l.ns, l.name, l.rev, []string{"a", "b"}[j%2], want, rev)
		}
	}
	var named []seen
	if err := s.RevisionsAt(ctx, api.KindInstance, rev, func(ns, name string, modRev int64) {
		named = append(named, seen{ns, name, modRev})
	}); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(named) != fmt.Sprint(listed) {
		t.Fatalf("RevisionsAt differs from the list at revision %d", rev)
	}
	var nodes []string
	if err := s.Create(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	now, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RevisionsAt(ctx, api.KindNode, now, func(ns, name string, _ int64) { nodes = append(nodes, ns+"/"+name) }); err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(nodes) != "[/n1]" {
		t.Fatalf("nodes named %v, want [/n1] (no namespace)", nodes)
	}
	if _, err := s.client.Compact(ctx, now); err != nil {
		t.Fatal(err)
	}
	err = s.RevisionsAt(ctx, api.KindInstance, rev, func(string, string, int64) {})
	if !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("RevisionsAt a compacted revision: %v, want FailedPrecondition", err)
	}
}
