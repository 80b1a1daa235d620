package store_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// A request's Timing adds up its store calls' reads, waits in the bulk
// lane and write transactions, each where it happened: a single write
// never waits in the lane, a batch held back does, for as long as it is.
func TestTimingAddsUpWhereTheTimeWent(t *testing.T) {
	ctx, s := openFor(t)

	var single store.Timing
	sctx := store.WithTiming(ctx, &single)
	if err := s.Create(sctx, api.RunService("one", "demo/busybox:1", nil)); err != nil {
		t.Fatal(err)
	}
	if single.Write() <= 0 || single.Lane() != 0 || single.Read() != 0 {
		t.Fatalf("a create: read %v, lane %v, write %v; want only a write", single.Read(), single.Lane(), single.Write())
	}
	svc, err := store.Get[api.Service](sctx, s, "default", "one")
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Replicas = 3
	if err := s.Update(sctx, svc, svc.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	if single.Read() <= 0 || single.Lane() != 0 {
		t.Fatalf("a get and an update: read %v, lane %v; want reads and no lane", single.Read(), single.Lane())
	}

	const held = 100 * time.Millisecond
	release, err := s.HoldBulk(ctx, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer release()
		for s.BulkWaiting() == 0 && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(held) // the lane stays full this long after the batch came
	}()
	var batch store.Timing
	err = s.CreateMany(store.WithTiming(ctx, &batch), []api.Object{api.RunService("b1", "demo/busybox:1", nil), api.RunService("b2", "demo/busybox:1", nil)})
	if err != nil {
		t.Fatal(err)
	}
	if batch.Lane() < held || batch.Write() <= 0 {
		t.Fatalf("a batch held in the lane %v: lane %v, write %v", held, batch.Lane(), batch.Write())
	}
}

// UpdateRead writes over the value the caller read, with no read of its
// own, and only while the object is still at the revision read.
func TestUpdateReadComparesTheRevisionRead(t *testing.T) {
	ctx, s := openFor(t)
	if err := s.Create(ctx, api.RunService("web", "demo/busybox:1", nil)); err != nil {
		t.Fatal(err)
	}
	var cur api.Service
	raw, err := s.GetIntoLocalRaw(ctx, &cur, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	var tm store.Timing
	upd := cur
	upd.Spec.Replicas = 3
	if err := s.UpdateRead(store.WithTiming(ctx, &tm), &upd, raw, cur.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	if tm.Read() != 0 {
		t.Errorf("UpdateRead read the object again (%v)", tm.Read())
	}
	got, err := store.Get[api.Service](ctx, s, "default", "web")
	if err != nil || got.Spec.Replicas != 3 || got.Metadata.UID != cur.Metadata.UID {
		t.Fatalf("after UpdateRead: %+v, %v", got, err)
	}
	// The value read is stale now: its revision no longer matches.
	upd = cur
	upd.Spec.Replicas = 5
	if err := s.UpdateRead(ctx, &upd, raw, cur.Metadata.Revision); !errdefs.IsConflict(err) {
		t.Fatalf("UpdateRead of a stale read: %v, want a conflict", err)
	}
	if err := s.UpdateRead(ctx, &upd, nil, got.Metadata.Revision); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("UpdateRead without the value read: %v, want invalid", err)
	}
}
