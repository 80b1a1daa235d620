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
	// The stored service read for the unchanged check, then the update at
	// its revision: both reads from the member's own state, none waiting
	// for etcd to apply what it has queued.
	if got := counts.Take(); got.Txns != 2 || got.Writes != 0 || got.TxnLinearizable != 0 || got.Linearizable != 0 || got.Serializable != 1 {
		t.Errorf("apply over a stored service: %+v; want one local read, then a local read and the update in 2 transactions, and no linearizable read nor other write", got)
	}
	got, err := e.client.Services().Get(ctx, "default", "web")
	if err != nil || got.Spec.Replicas != 3 || got.Metadata.UID != uid {
		t.Fatalf("stored after apply over: %+v, %v; want 3 replicas and UID %s kept", got, err, uid)
	}

	// Once deleted, an apply creates it again.
	if err := e.client.Services().Delete(ctx, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	res, err = e.client.ApplyWith(ctx, svc, client.ApplyOptions{})
	if err != nil || !res.Created {
		t.Fatalf("apply after delete: %+v, %v", res, err)
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
