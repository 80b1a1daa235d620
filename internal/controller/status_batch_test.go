package controller

import (
	"fmt"
	"log/slog"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// Services' statuses go out in batches; a batch holding a service
// removed since the pass read it still writes the others, and the
// removed one is no error.
func TestServiceStatusesInBatches(t *testing.T) {
	ctx := t.Context()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler)})
	var sts []serviceStatus
	for i := range 5 {
		svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("web-%d", i)},
			Spec: api.ServiceSpec{Replicas: 2, Template: api.Template{Image: "demo/busybox:1"}}}
		if err := s.Create(ctx, svc); err != nil {
			t.Fatal(err)
		}
		next := own(svc)
		next.Status.ReadyReplicas = i
		sts = append(sts, serviceStatus{svc: next, events: []api.Event{{Type: api.EventNormal, Reason: "RolloutComplete", Message: "revision 1"}}})
	}
	if err := s.Delete(ctx, api.KindService, "default", "web-2", 0); err != nil {
		t.Fatal(err)
	}
	if err := m.writeServiceStatuses(ctx, sts); err != nil {
		t.Fatalf("statuses with one service gone meanwhile: %v", err)
	}
	for i := range 5 {
		got, err := store.Get[api.Service](ctx, s, "default", fmt.Sprintf("web-%d", i))
		switch {
		case i == 2 && err == nil:
			t.Errorf("web-2 was removed: written again")
		case i != 2 && (err != nil || got.Status.ReadyReplicas != i):
			t.Errorf("web-%d: %v, ready %d, want %d", i, err, got.Status.ReadyReplicas, i)
		}
	}
	evs, _, err := store.List[api.Event](ctx, s, "default")
	if err != nil || len(evs) != 4 {
		t.Errorf("%d events (%v), want one for each service written (4)", len(evs), err)
	}
}
