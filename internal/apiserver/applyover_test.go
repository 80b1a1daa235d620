package apiserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A service applied over the stored one is one write: the server has just
// read it, so it updates it rather than first trying a create that would
// fail (a raft round queued behind whatever etcd is applying, which made
// a busy cluster's small writes slow). What an update keeps, it keeps.
func TestApplyOverStoredWritesOnce(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	svc := api.RunService("web", "demo/busybox:1", nil)
	res, err := e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || !res.Created {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	uid := res.Object.GetMetadata().UID

	counts := storetest.Count(e.store)
	svc.Spec.Replicas = 3
	res, err = e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || res.Created || res.Unchanged {
		t.Fatalf("apply over: %+v, %v; want an update", res, err)
	}
	// The stored service read for the unchanged check, from the member's
	// own state (not waiting for etcd to apply what it has queued), then
	// the update at its revision, from that read with no second one.
	if got := counts.Take(); got.Txns != 1 || got.Writes != 0 || got.TxnLinearizable != 0 || got.TxnSerializable != 0 || got.Linearizable != 0 || got.Serializable != 1 {
		t.Errorf("apply over a stored service: %+v; want one local read, then the update in 1 transaction, and no other read nor write", got)
	}
	got, err := e.client.Services().Get(ctx, "default", "web")
	if err != nil || got.Spec.Replicas != 3 || got.Metadata.UID != uid {
		t.Fatalf("stored after apply over: %+v, %v; want 3 replicas and UID %s kept", got, err, uid)
	}

	// Once deleted, an apply creates it again: the local read finds
	// nothing, and the create, which would fail were the name taken, is
	// the only other round, with no linearizable read before it.
	if err := e.client.Services().Delete(ctx, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	counts.Take()
	res, err = e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || !res.Created {
		t.Fatalf("apply after delete: %+v, %v", res, err)
	}
	if got := counts.Take(); got.Txns != 1 || got.Writes != 0 || got.TxnLinearizable != 0 || got.Linearizable != 0 || got.Serializable != 1 {
		t.Errorf("apply of a new service: %+v; want one local read, then the create in 1 transaction, and no linearizable read", got)
	}
}

// The stored service an apply starts from is read from the etcd member's
// own state, which may trail the cluster: another server's write not
// applied there yet. An apply of what the member still holds is then no
// "unchanged", and one of a new spec is not written over the stale read:
// what the apply keeps from the stored service (a restart) is the latest.
func TestApplyOverFromMemberBehind(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	res, err := e.client.ApplyWith(ctx, api.RunService("web", "demo/busybox:1", nil), client.ApplyOptions{})
	if err != nil || !res.Created {
		t.Fatalf("apply: %+v, %v", res, err)
	}
	counts := storetest.Count(e.store)
	// otherServer writes what the member has not applied yet.
	otherServer := func(replicas int, restarted time.Time) {
		t.Helper()
		cur, err := e.client.Services().Get(ctx, "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		counts.Behind(cur.Metadata.Revision)
		cur.Spec.Replicas, cur.Spec.Template.RestartedAt = replicas, restarted
		if err := e.store.Update(ctx, cur, cur.Metadata.Revision); err != nil {
			t.Fatal(err)
		}
	}
	check := func(what string, replicas int, restarted time.Time) {
		t.Helper()
		got, err := e.client.Services().Get(ctx, "default", "web")
		if err != nil || got.Spec.Replicas != replicas || !got.Spec.Template.RestartedAt.Equal(restarted) {
			t.Fatalf("%s: stored %+v, %v; want %d replicas, restarted at %v", what, got, err, replicas, restarted)
		}
	}

	t1 := time.Now().UTC().Truncate(time.Second)
	otherServer(2, t1)
	same := api.RunService("web", "demo/busybox:1", nil) // as the member holds it
	res, err = e.client.ApplyWith(ctx, same, client.ApplyOptions{})
	if err != nil || res.Unchanged || res.Created {
		t.Fatalf("apply of what a member behind holds: %+v, %v; want an update", res, err)
	}
	check("apply of what a member behind holds", 1, t1)

	t2 := t1.Add(time.Minute)
	otherServer(4, t2)
	changed := api.RunService("web", "demo/busybox:1", nil)
	changed.Spec.Replicas = 5
	res, err = e.client.ApplyWith(ctx, changed, client.ApplyOptions{})
	if err != nil || res.Unchanged || res.Created {
		t.Fatalf("apply of a new spec over a member behind: %+v, %v; want an update", res, err)
	}
	check("apply of a new spec over a member behind", 5, t2)
	if got := counts.Take(); got.Linearizable == 0 {
		t.Errorf("applies over a member behind: %+v; want the stored service read again linearizably", got)
	}

	// Up to date, re-applying what is stored writes nothing.
	counts.Behind(0)
	changed = api.RunService("web", "demo/busybox:1", nil)
	changed.Spec.Replicas = 5
	res, err = e.client.ApplyWith(ctx, changed, client.ApplyOptions{})
	if err != nil || !res.Unchanged {
		t.Fatalf("apply of what is stored: %+v, %v; want unchanged", res, err)
	}
}

// A member behind that has not applied a service's creation yet finds no
// service: the apply's create then fails on the name taken, and the apply
// reads the service again linearizably and updates it, keeping what an
// update keeps (a restart), rather than failing or losing it.
func TestApplyCreateOverMemberBehind(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	counts := storetest.Count(e.store)
	rev, err := e.store.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	restarted := time.Now().UTC().Truncate(time.Second)
	other := api.RunService("web", "demo/busybox:1", nil)
	other.Spec.Template.RestartedAt = restarted
	if err := e.store.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	counts.Behind(rev)
	counts.Take()
	svc := api.RunService("web", "demo/busybox:1", nil)
	svc.Spec.Replicas = 3
	res, err := e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || res.Created || res.Unchanged {
		t.Fatalf("apply of a service a member behind lacks: %+v, %v; want an update", res, err)
	}
	got, err := e.client.Services().Get(ctx, "default", "web")
	if err != nil || got.Spec.Replicas != 3 || !got.Spec.Template.RestartedAt.Equal(restarted) || got.Metadata.UID != other.Metadata.UID {
		t.Fatalf("stored: %+v, %v; want 3 replicas, the restart at %v and UID %s kept", got, err, restarted, other.Metadata.UID)
	}
	if c := counts.Take(); c.Linearizable == 0 {
		t.Errorf("apply over a member behind: %+v; want the service read again linearizably", c)
	}
}
