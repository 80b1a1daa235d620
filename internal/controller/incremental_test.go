package controller_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
)

// Passes look only at the services whose instances changed; the others
// are settled. A settled service whose instance goes (deleted behind the
// controllers' back, its service untouched) is looked at again at once
// and gets a replacement while its untouched neighbour keeps its
// instances; a status report alone shows in its service's status.
func TestSettledServiceSeesItsInstancesChange(t *testing.T) {
	h := newHarness(t, "n1", "n2")
	runManager(t, h, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: time.Hour, IdleResync: time.Hour, StartGrace: -1})
	h.service("web", 3, api.Placement{})
	h.service("api", 2, api.Placement{})
	h.settle("web", 3)
	h.settle("api", 2)
	var gone *api.Instance
	for _, in := range h.instances() {
		if in.Spec.Owner.Name == "web" {
			gone = in
			break
		}
	}
	if err := h.s.Delete(h.ctx, api.KindInstance, gone.Metadata.Namespace, gone.Metadata.Name, 0); err != nil {
		t.Fatal(err)
	}
	live := func(owner string) func() bool {
		return func() bool {
			n := h.count(func(in *api.Instance) bool {
				return in.Spec.Owner.Name == owner && in.Spec.Node != "" && !in.Status.Phase.Terminal() && in.Metadata.Name != gone.Metadata.Name
			})
			return n == map[string]int{"web": 3, "api": 2}[owner]
		}
	}
	// Well within the passes' full look at every service (30 s) and
	// their resync (an hour): the watch's change is what brings it.
	waitFor(t, 5*time.Second, "web's deleted instance replaced", live("web"), func() string { return dump(h.instances()) })
	if !live("api")() {
		t.Fatalf("api's instances changed: %s", dump(h.instances()))
	}
	// A status report alone, an instance of api no longer ready, shows
	// in api's status.
	var sick *api.Instance
	for _, in := range h.instances() {
		if in.Spec.Owner.Name == "api" {
			sick = in
			break
		}
	}
	sick.Status.Healthy = false
	if err := h.s.UpdateStatus(h.ctx, sick, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "api's status to count 1 ready", func() bool {
		s, err := store.Get[api.Service](h.ctx, h.s, "default", "api")
		return err == nil && s.Status.ReadyReplicas == 1
	}, nil)
}
