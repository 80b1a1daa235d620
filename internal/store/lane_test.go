package store_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// While batches fill the bulk lane, a single object's write still goes
// straight to etcd, and the next batch waits for the lane, writing
// nothing until it is let in; one whose caller gives up meanwhile writes
// nothing at all.
func TestBulkLaneLetsSingleWritesPass(t *testing.T) {
	ctx, s := openFor(t)
	release, err := s.HoldBulk(ctx, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			release()
		}
	}()

	if err := s.Create(ctx, api.RunService("single", "demo/busybox:1", nil)); err != nil {
		t.Fatalf("a single write while the lane is full: %v", err)
	}

	// A batch given up while it waits writes nothing.
	gaveUp, giveUp := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.CreateMany(gaveUp, []api.Object{api.RunService("a1", "demo/busybox:1", nil), api.RunService("a2", "demo/busybox:1", nil)})
	}()
	waitFor(t, func() bool { return s.BulkWaiting() == 1 })
	giveUp()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a batch given up in the lane: %v, want context.Canceled", err)
	}
	if _, err := store.Get[api.Service](ctx, s, "default", "a1"); !errdefs.IsNotFound(err) {
		t.Fatalf("a batch given up in the lane wrote a1: %v", err)
	}

	go func() {
		done <- s.CreateMany(ctx, []api.Object{api.RunService("b1", "demo/busybox:1", nil), api.RunService("b2", "demo/busybox:1", nil)})
	}()
	waitFor(t, func() bool { return s.BulkWaiting() == 1 })
	if _, err := store.Get[api.Service](ctx, s, "default", "b1"); !errdefs.IsNotFound(err) {
		t.Fatalf("a batch waiting in the lane wrote b1 already: %v", err)
	}
	released = true
	release()
	if err := <-done; err != nil {
		t.Fatalf("the batch once let in: %v", err)
	}
	for _, name := range []string{"b1", "b2"} {
		if _, err := store.Get[api.Service](ctx, s, "default", name); err != nil {
			t.Errorf("%s after the batch was let in: %v", name, err)
		}
	}
}

// A node's status reports wait in the lane however few they are
// (store.Bulk), and however small, at most 16 transactions are in it at
// once: etcd's cost is per transaction too.
func TestBulkLaneBoundsTransactions(t *testing.T) {
	ctx, s := openFor(t)
	var releases []func()
	defer func() {
		for _, r := range releases {
			r()
		}
	}()
	for range 15 {
		r, err := s.HoldBulk(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	// The sixteenth small batch goes in.
	if err := s.CreateMany(ctx, []api.Object{api.RunService("c1", "demo/busybox:1", nil), api.RunService("c2", "demo/busybox:1", nil)}); err != nil {
		t.Fatal(err)
	}
	r, err := s.HoldBulk(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	releases = append(releases, r)
	// Then a single write marked as background work waits.
	done := make(chan error, 1)
	go func() { done <- s.Create(store.Bulk(ctx), api.RunService("d1", "demo/busybox:1", nil)) }()
	waitFor(t, func() bool { return s.BulkWaiting() == 1 })
	if _, err := store.Get[api.Service](ctx, s, "default", "d1"); !errdefs.IsNotFound(err) {
		t.Fatalf("a background write waiting in the lane wrote d1 already: %v", err)
	}
	releases[0]()
	releases = releases[1:]
	if err := <-done; err != nil {
		t.Fatalf("the background write once let in: %v", err)
	}
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// While etcd takes longer than the lane's target, the lane lets fewer
// transactions in at once, down to two, so that a single object's write
// (an API client's) finds little ahead of it in etcd: a third batch
// waits while a single write goes through. Once etcd is quick again, it
// lets sixteen in again.
func TestBulkLaneFollowsEtcdPace(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	batch := func(name string) error {
		return s.CreateMany(ctx, []api.Object{api.RunService(name+"-a", "demo/busybox:1", nil), api.RunService(name+"-b", "demo/busybox:1", nil)})
	}
	if s.BulkLimit() != 16 {
		t.Fatalf("a new lane lets %d in, want 16", s.BulkLimit())
	}
	s.SetBulkTarget(time.Nanosecond) // every transaction is slow
	for i := range 4 {
		if err := batch(fmt.Sprintf("slow%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if s.BulkLimit() != 2 {
		t.Fatalf("after 4 slow batches the lane lets %d in, want 2", s.BulkLimit())
	}
	var releases []func()
	for range 2 {
		r, err := s.HoldBulk(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		releases = append(releases, r)
	}
	done := make(chan error, 1)
	go func() { done <- batch("third") }()
	waitFor(t, func() bool { return s.BulkWaiting() == 1 })
	if err := s.Create(ctx, api.RunService("single", "demo/busybox:1", nil)); err != nil {
		t.Fatalf("a single write while two batches fill the lane: %v", err)
	}
	if _, err := store.Get[api.Service](ctx, s, "default", "third-a"); !errdefs.IsNotFound(err) {
		t.Fatalf("the third batch went in with two in flight: %v", err)
	}
	for _, r := range releases {
		r()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	s.SetBulkTarget(time.Minute) // every transaction is quick
	for i := 0; s.BulkLimit() < 16; i++ {
		if i == 300 {
			t.Fatalf("after %d quick batches the lane lets %d in, want 16", i, s.BulkLimit())
		}
		if err := batch(fmt.Sprintf("quick%d", i)); err != nil {
			t.Fatal(err)
		}
	}
}

// A heartbeat that writes the node's lease key, sent as the node's own
// background work (Bulk), waits in the lane; one that is not goes
// straight to etcd.
func TestBulkHeartbeatWaitsInTheLane(t *testing.T) {
	ctx, s := openFor(t)
	if _, err := s.RenewNode(ctx, "warm", 10*time.Second); err != nil { // the store's lease, granted once
		t.Fatal(err)
	}
	release, err := s.HoldBulk(ctx, 1<<40)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := s.RenewNode(store.Bulk(ctx), "n1", 10*time.Second); done <- err }()
	waitFor(t, func() bool { return s.BulkWaiting() == 1 })
	if _, err := s.RenewNode(ctx, "n2", 10*time.Second); err != nil {
		t.Fatalf("a heartbeat not marked Bulk while the lane is full: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("a Bulk heartbeat went past the full lane: %v", err)
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	live, err := s.LiveNodes(ctx)
	if err != nil || !live["n1"] || !live["n2"] {
		t.Fatalf("live nodes %v, %v; want n1 and n2", live, err)
	}
}

// openFor opens a store of its own for t, with a context that bounds
// the test's calls; both end with t.
func openFor(t *testing.T) (context.Context, *store.Store) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return ctx, s
}

// A batch goes to etcd in transactions of at most MaxTxnBytes, however
// many objects: a single object's write queues in etcd behind no more
// than that of each batch.
func TestCreateManySplitsAtMaxTxnBytes(t *testing.T) {
	ctx, s := openFor(t)
	const size = 8 << 10 // each object is a little more
	var objs []api.Object
	for i := range 3 * store.MaxTxnBytes / size {
		svc := api.RunService(fmt.Sprintf("big-%d", i), "demo/busybox:1", nil)
		svc.Spec.Template.Env = map[string]string{"PAD": strings.Repeat("x", size)}
		objs = append(objs, svc)
	}
	if err := s.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	per := map[int64]int{} // objects by revision: one a transaction
	for _, o := range objs {
		per[o.GetMetadata().Revision]++
	}
	if len(per) < 3 {
		t.Fatalf("%d objects of over %d KiB in %d transactions, want at least 3 of at most %d KiB", len(objs), size>>10, len(per), store.MaxTxnBytes>>10)
	}
	for rev, n := range per {
		if n > store.MaxTxnBytes/size {
			t.Fatalf("transaction at revision %d wrote %d objects of over %d KiB, over %d KiB", rev, n, size>>10, store.MaxTxnBytes>>10)
		}
	}
}
