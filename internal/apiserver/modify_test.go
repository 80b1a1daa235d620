package apiserver_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// TestModifyWritesOnlyChanges scales a service to the replicas it has:
// the store's revision stays where it was and watchers hear nothing; the
// next real change is the first event a watch from before both sees.
func TestModifyWritesOnlyChanges(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	svc, err := e.client.Services().Apply(ctx, &api.Service{Metadata: api.Metadata{Name: "web"},
		Spec: api.ServiceSpec{Replicas: 2, Template: api.Template{Image: "demo/app:1"}}})
	if err != nil {
		t.Fatal(err)
	}
	revision := func() int64 {
		t.Helper()
		_, rev, err := store.List[api.Service](ctx, e.store, "")
		if err != nil {
			t.Fatal(err)
		}
		return rev
	}
	before := revision()
	events, err := e.client.Services().Watch(ctx, "default", before)
	if err != nil {
		t.Fatal(err)
	}

	same, err := e.client.Services().Scale(ctx, "default", "web", 2)
	if err != nil {
		t.Fatal(err)
	}
	if same.Metadata.Revision != svc.Metadata.Revision || same.Spec.Replicas != 2 {
		t.Errorf("scaled to the replicas it has: revision %d, replicas %d; want revision %d kept, 2", same.Metadata.Revision, same.Spec.Replicas, svc.Metadata.Revision)
	}
	if got := revision(); got != before {
		t.Errorf("the store's revision went from %d to %d for a scale that changed nothing", before, got)
	}

	if _, err := e.client.Services().Scale(ctx, "default", "web", 3); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Err != nil || ev.Object.Spec.Replicas != 3 {
			t.Errorf("the first event after the no-op scale: %+v, want the scale to 3", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for the scale to 3")
	}
	if got := revision(); got != before+1 {
		t.Errorf("one real change moved the revision from %d to %d, want %d", before, got, before+1)
	}
}

// A watch from now sees every change made once it has been answered: the
// server starts it at the revision the request found, not whenever its
// etcd watch is in place.
func TestWatchFromNowSeesTheNextChange(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	for i := range 20 {
		wctx, wcancel := context.WithCancel(ctx)
		events, err := e.client.Services().Watch(wctx, "default", 0)
		if err != nil {
			t.Fatal(err)
		}
		name := fmt.Sprintf("next-%d", i)
		s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1"}}}
		if _, err := e.client.Services().Apply(ctx, s); err != nil {
			t.Fatalf("apply %s: %v", name, err)
		}
		seen := false
		timeout := time.After(10 * time.Second)
		for !seen {
			select {
			case ev, ok := <-events:
				if !ok || ev.Err != nil {
					t.Fatalf("watch before %s ended: %v", name, ev.Err)
				}
				seen = ev.Object != nil && ev.Object.Metadata.Name == name
			case <-timeout:
				t.Fatalf("watch from now: no event for %s, applied once the watch was answered", name)
			}
		}
		wcancel()
	}
}
