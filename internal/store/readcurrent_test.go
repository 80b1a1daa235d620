package store_test

import (
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/store/storetest"
)

// A write that names the revision it read starts from the member's own
// state, with no raft round (a linearizable read waits for etcd to apply
// everything committed before it); a stale revision is still a conflict,
// checked linearizably, and a write naming none reads linearizably.
func TestWriteAtRevisionReadsLocally(t *testing.T) {
	ctx, s := openFor(t)
	svc := api.RunService("web", "demo/busybox:1", nil)
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	read := svc.Metadata.Revision
	counts := storetest.Count(s)

	svc.Spec.Replicas = 2
	if err := s.Update(ctx, svc, read); err != nil {
		t.Fatal(err)
	}
	if got := counts.Take(); got.TxnLinearizable != 0 || got.TxnSerializable != 1 || got.Linearizable != 0 {
		t.Errorf("an update at the revision read: %+v; want one local read and no linearizable one", got)
	}

	svc.Spec.Replicas = 3
	if err := s.Update(ctx, svc, read); !errdefs.IsConflict(err) {
		t.Fatalf("an update at a stale revision: %v, want a conflict", err)
	}
	if got := counts.Take(); got.TxnLinearizable != 1 {
		t.Errorf("an update at a stale revision: %+v; want the conflict read linearizably", got)
	}

	if err := s.Update(ctx, svc, 0); err != nil {
		t.Fatal(err)
	}
	if got := counts.Take(); got.TxnLinearizable != 1 || got.TxnSerializable != 0 {
		t.Errorf("an update at no revision: %+v; want one linearizable read", got)
	}
	stored, err := store.Get[api.Service](ctx, s, "default", "web")
	if err != nil || stored.Spec.Replicas != 3 {
		t.Fatalf("stored: %+v, %v; want 3 replicas", stored, err)
	}
}
