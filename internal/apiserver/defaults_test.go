package apiserver_test

import (
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// A service stored before the API wrote templates' defaults in (its
// stored JSON has none) is applied again unchanged: the stored spec is
// compared as it would be stored now, so an upgrade writes nothing, and
// what comes back shows the defaults.
func TestSpecStoredWithoutDefaultsAppliesUnchanged(t *testing.T) {
	e := start(t)
	const bare = `{"metadata":{"name":"web","namespace":"default","uid":"u1"},` +
		`"spec":{"replicas":1,"template":{"image":"demo/busybox:1","ports":[{"container":80}]}}}`
	put, err := e.store.Client().Put(t.Context(), e.store.Key(api.KindService, "default", "web"), bare)
	if err != nil {
		t.Fatal(err)
	}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"},
		Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1", Ports: []api.Port{{Container: 80}}}}}
	res, err := e.client.ApplyWith(t.Context(), svc, client.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := res.Object.(*api.Service)
	if !res.Unchanged || got.Metadata.Revision != put.Header.Revision {
		t.Errorf("apply of the stored spec: unchanged %v, revision %d; want unchanged at %d", res.Unchanged, got.Metadata.Revision, put.Header.Revision)
	}
	if tmpl := got.Spec.Template; tmpl.Restart != api.RestartAlways || tmpl.Ports[0].Protocol != api.DefaultProtocol {
		t.Errorf("answer's template: restart %q, protocol %q; want the defaults", tmpl.Restart, tmpl.Ports[0].Protocol)
	}
	// A real change is still one.
	svc.Spec.Replicas = 2
	if res, err = e.client.ApplyWith(t.Context(), svc, client.ApplyOptions{}); err != nil || res.Unchanged {
		t.Fatalf("apply of a change: unchanged %v, err %v", res.Unchanged, err)
	}
	stored, err := e.client.Services().Get(t.Context(), "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	if stored.Spec.Template.Restart != api.RestartAlways {
		t.Errorf("stored after a change: restart %q, want the default written in", stored.Spec.Template.Restart)
	}
}
