package apiserver_test

import (
	"context"
	"testing"

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
	// One read of the stored service for the unchanged check, then the
	// update at its revision, whose read is the member's own state.
	if got := counts.Take(); got.Txns != 2 || got.Writes != 0 || got.TxnLinearizable != 0 || got.Linearizable != 1 {
		t.Errorf("apply over a stored service: %+v; want one linearizable read, then a local read and the update in 2 transactions, and no other write", got)
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
