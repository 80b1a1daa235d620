package store

import (
	"fmt"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// A fenced handle writes while its election key keeps its create
// revision; once the key is gone or made again (a new term), every kind
// of write through it fails with FailedPrecondition and changes nothing,
// while an unfenced handle, and one fenced on the new term, still write.
func TestFencedWritesStopWithTheTerm(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	key := s.LeaderKey("test") + "/a"
	put := func() int64 {
		t.Helper()
		r, err := s.Client().Put(ctx, key, "a")
		if err != nil {
			t.Fatal(err)
		}
		return r.Header.Revision
	}
	termA := put()
	f := s.Fenced(clientv3.Compare(clientv3.CreateRevision(key), "=", termA))

	// While the term lasts, every kind of write lands.
	web := service("web", 2)
	if err := f.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	var objs []api.Object
	for i := range 5 {
		objs = append(objs, instance(fmt.Sprintf("web-%d", i)))
	}
	if err := f.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	web.Spec.Replicas = 3
	if err := f.Update(ctx, web, web.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	web.Status.ReadyReplicas = 1
	if err := f.UpdateStatus(ctx, web, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Bind(ctx, []Binding{{Name: "web-0", Node: "n1"}}); err != nil {
		t.Fatal(err)
	}
	if err := f.Delete(ctx, api.KindInstance, "default", "web-4", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Apply(ctx, service("db", 1), 0); err != nil {
		t.Fatal(err)
	}
	if err := f.RecordEvent(ctx, &api.Event{Object: api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"}, Type: api.EventNormal, Reason: "Test"}); err != nil {
		t.Fatal(err)
	}
	// The handles share what this process last wrote.
	if s.LastWrite() == 0 || s.LastWrite() != f.LastWrite() {
		t.Fatalf("last write: %d through the store, %d through the fenced handle", s.LastWrite(), f.LastWrite())
	}
	// The fence takes one operation of each transaction: a batch of as
	// many creates as etcd allows still goes through, split in two.
	big := make([]api.Object, embeddedMaxTxnOps)
	for i := range big {
		big[i] = instance(fmt.Sprintf("batch-%d", i))
	}
	if err := f.CreateMany(ctx, big); err != nil {
		t.Fatalf("a full batch through the fenced handle: %v", err)
	}

	// Every kind of write through the old handle, against the store as it
	// is now.
	writes := []struct {
		name  string
		write func() error
	}{
		{"create", func() error { return f.Create(ctx, service("new", 1)) }},
		{"create many", func() error {
			return f.CreateMany(ctx, []api.Object{instance("new-1"), instance("new-2")})
		}},
		{"update", func() error {
			up := service("web", 9)
			return f.Update(ctx, up, 0)
		}},
		{"update at a revision", func() error {
			cur, err := Get[api.Service](ctx, s, "default", "web")
			if err != nil {
				return err
			}
			cur.Spec.Replicas = 9
			return f.Update(ctx, cur, cur.Metadata.Revision)
		}},
		{"update status", func() error {
			cur, err := Get[api.Service](ctx, s, "default", "web")
			if err != nil {
				return err
			}
			cur.Status.ReadyReplicas = 9
			return f.UpdateStatus(ctx, cur, cur.Metadata.Revision)
		}},
		{"apply", func() error {
			_, err := f.Apply(ctx, service("db", 9), 0)
			return err
		}},
		{"delete", func() error { return f.Delete(ctx, api.KindInstance, "default", "web-1", 0) }},
		{"bind", func() error { return f.Bind(ctx, []Binding{{Name: "web-2", Node: "n2"}, {Name: "web-3", Node: "n2"}}) }},
		{"transaction", func() error {
			return f.Txn().Create(instance("new-3")).Delete(api.KindInstance, "default", "web-1", 0).Commit(ctx)
		}},
		{"event", func() error {
			return f.RecordEvent(ctx, &api.Event{Object: api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"}, Type: api.EventNormal, Reason: "Test"})
		}},
	}
	// state renders everything stored, with revisions: a failed write
	// leaves it as it was.
	state := func() string {
		t.Helper()
		r, err := s.Client().Get(ctx, s.prefix+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for _, kv := range r.Kvs {
			if !strings.HasPrefix(string(kv.Key), s.LeaderKey("")) {
				fmt.Fprintf(&b, "%s@%d\n", kv.Key, kv.ModRevision)
			}
		}
		return b.String()
	}
	tryAll := func(why, wantMsg string) {
		t.Helper()
		before := state()
		for _, w := range writes {
			err := w.write()
			if !errdefs.IsFailedPrecondition(err) || errdefs.IsConflict(err) {
				t.Errorf("%s: %s through the old handle: got %v, want FailedPrecondition", why, w.name, err)
				continue
			}
			if msg := err.Error(); !strings.Contains(msg, "no longer the leader") || !strings.Contains(msg, key) || !strings.Contains(msg, wantMsg) {
				t.Errorf("%s: %s: error %q does not say the term is over (%q)", why, w.name, msg, wantMsg)
			}
		}
		if after := state(); after != before {
			t.Errorf("%s: failed writes changed the store:\nbefore\n%s\nafter\n%s", why, before, after)
		}
	}

	// The term ends: the key is gone.
	if _, err := s.Client().Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	tryAll("key deleted", "it is gone")
	// Another term begins under the same key.
	termB := put()
	tryAll("key made again", fmt.Sprintf("its create revision is %d, not %d", termB, termA))
	if err := f.Create(ctx, service("new", 1)); err == nil || !strings.HasPrefix(err.Error(), `service "new" in namespace "default": `) {
		t.Errorf("the error does not name the object first: %v", err)
	}

	// A handle fenced on both the old and the new term fails too; one on
	// the new term alone writes.
	g := s.Fenced(clientv3.Compare(clientv3.CreateRevision(key), "=", termB))
	if err := g.Fenced(clientv3.Compare(clientv3.CreateRevision(key), "=", termA)).Create(ctx, service("new", 1)); !errdefs.IsFailedPrecondition(err) {
		t.Errorf("fenced on both terms: got %v, want FailedPrecondition", err)
	}
	if err := g.Create(ctx, service("new", 1)); err != nil {
		t.Errorf("fenced on the new term: %v", err)
	}

	// The unfenced store is unaffected, and the old handle still reads.
	if err := s.Delete(ctx, api.KindInstance, "default", "web-1", 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Bind(ctx, []Binding{{Name: "web-2", Node: "n2"}}); err != nil {
		t.Fatal(err)
	}
	up := service("web", 7)
	if err := s.Update(ctx, up, 0); err != nil {
		t.Fatal(err)
	}
	got, err := Get[api.Service](ctx, f, "default", "web")
	if err != nil || got.Spec.Replicas != 7 {
		t.Fatalf("reading through the old handle: %+v, %v", got, err)
	}
	// An object's own conflict is still a conflict while the term lasts.
	if err := g.Update(ctx, got, got.Metadata.Revision-1); !errdefs.IsConflict(err) {
		t.Errorf("stale revision on the new term: got %v, want Conflict", err)
	}
}

// The fence is checked against what etcd compared: a comparison other
// than a create revision's, and a range, are explained too.
func TestFenceFailureNamesTheComparison(t *testing.T) {
	ctx := t.Context()
	s := openStore(t)
	key := s.LeaderKey("test") + "/b"
	if _, err := s.Client().Put(ctx, key, "one"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cmp  clientv3.Cmp
		want string
	}{
		{clientv3.Compare(clientv3.Value(key), "=", "two"), `its value is "one", not "two"`},
		{clientv3.Compare(clientv3.Version(key), ">", 1), "its version is 1, the fence wants > 1"},
		{clientv3.Compare(clientv3.Version(s.LeaderKey("test")+"/"), ">", 1).WithPrefix(), "its version is 1, the fence wants > 1"},
		{clientv3.Compare(clientv3.Value(key+"x"), "=", "one"), "it is gone"},
	} {
		err := s.Fenced(tc.cmp).Create(ctx, service("web", 1))
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want FailedPrecondition saying %q", err, tc.want)
		}
		// A batch reads why after it failed, at the revision it failed at.
		err = s.Fenced(tc.cmp).CreateMany(ctx, []api.Object{service("web", 1), service("db", 1)})
		if !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("batch: got %v, want FailedPrecondition saying %q", err, tc.want)
		}
	}
	// Comparisons that hold let the write through.
	ok := s.Fenced(clientv3.Compare(clientv3.Value(key), "=", "one"), clientv3.Compare(clientv3.Version(key), "<", 2))
	if err := ok.Create(ctx, service("web", 1)); err != nil {
		t.Fatal(err)
	}
}
