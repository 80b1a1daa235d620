package controller

import (
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/store"
)

// rollOnChange is level-triggered: a config changed while no controller
// ran (and with no roll made by the API server) rolls its service when a
// controller runs again, once, however many passes follow.
func TestDataPassRollsOnceAfterOutage(t *testing.T) {
	s := OpenTestStore(t)
	ctx := t.Context()
	cfg := &api.Config{Metadata: api.Metadata{Name: "app"}, Data: map[string][]byte{"k": []byte("v1")}}
	cfg.Digest = api.ConfigDigest(cfg.Data)
	api.Default(cfg)
	if err := s.Create(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1, RollOnChange: true,
		Template: api.Template{Image: "demo/busybox:1", Files: []api.FileMount{{Config: "app", Path: "/etc/app"}}}}}
	api.Default(svc)
	// As the API server records it at create.
	svc.Spec.DataDigest = svc.Spec.Template.DataDigest(func(r api.ObjectRef) string { return s.DataDigest(ctx, "default", r) })
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	newManager := func() *Manager {
		return NewManager(s, Options{Logger: slog.New(slog.DiscardHandler), Network: DefaultNetwork, Clock: func() time.Time { return now }})
	}
	get := func() *api.Service {
		t.Helper()
		got, err := store.Get[api.Service](ctx, s, "default", "web")
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	m := newManager()
	for range 3 {
		if err := m.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := get(); !got.Spec.Template.RestartedAt.IsZero() {
		t.Fatalf("rolled with no change: restartedAt %v", got.Spec.Template.RestartedAt)
	}

	// The change, made with no controller running and no roll by the API server.
	cur, err := store.Get[api.Config](ctx, s, "default", "app")
	if err != nil {
		t.Fatal(err)
	}
	cur.Data = map[string][]byte{"k": []byte("v2")}
	cur.Digest = api.ConfigDigest(cur.Data)
	if err := s.Update(ctx, cur, cur.Metadata.Revision); err != nil {
		t.Fatal(err)
	}

	m = newManager()
	now = now.Add(time.Minute)
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	rolled := get()
	if !rolled.Spec.Template.RestartedAt.Equal(now) {
		t.Fatalf("after the controller came back: restartedAt %v, want %v (a roll)", rolled.Spec.Template.RestartedAt, now)
	}
	for range 3 {
		now = now.Add(time.Second)
		if err := m.Pass(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := get(); !got.Spec.Template.RestartedAt.Equal(rolled.Spec.Template.RestartedAt) || got.Spec.DataDigest != rolled.Spec.DataDigest {
		t.Fatalf("rolled again: restartedAt %v (first roll %v)", got.Spec.Template.RestartedAt, rolled.Spec.Template.RestartedAt)
	}
	// The API server's own roll of a later change, then the controller's pass: still one roll.
	cur, _ = store.Get[api.Config](ctx, s, "default", "app")
	cur.Data = map[string][]byte{"k": []byte("v3")}
	cur.Digest = api.ConfigDigest(cur.Data)
	if err := s.Update(ctx, cur, cur.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	byServer := get()
	serverAt := now.Add(time.Second)
	digest := byServer.Spec.Template.DataDigest(func(r api.ObjectRef) string { return s.DataDigest(ctx, "default", r) })
	if !byServer.Spec.RollForData(digest, serverAt) {
		t.Fatal("RollForData after a change: no change")
	}
	if err := s.Update(ctx, byServer, byServer.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	if err := m.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := get(); !got.Spec.Template.RestartedAt.Equal(serverAt) {
		t.Fatalf("the controller rolled what the API server had rolled: restartedAt %v, want %v", got.Spec.Template.RestartedAt, serverAt)
	}
}
