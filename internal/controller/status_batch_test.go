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

// Owners' new instances go together while few: an owner with more than
// the most of a group is a group of its own, and no owner is split.
func TestOwnerGroups(t *testing.T) {
	fresh := func(sizes ...int) []newInstances {
		var out []newInstances
		for _, n := range sizes {
			out = append(out, newInstances{insts: make([]*api.Instance, n)})
		}
		return out
	}
	for _, c := range []struct {
		sizes []int
		want  string
	}{
		{nil, "[]"},
		{[]int{1, 1, 1}, "[[0 3]]"},
		{[]int{2, 2, 1, 3}, "[[0 3] [3 4]]"},
		{[]int{9, 1, 1}, "[[0 1] [1 3]]"},
		{[]int{1, 9, 1}, "[[0 1] [1 2] [2 3]]"},
		{[]int{5, 0, 0, 5}, "[[0 3] [3 4]]"},
	} {
		if got := fmt.Sprint(ownerGroups(fresh(c.sizes...), 5)); got != c.want {
			t.Errorf("ownerGroups(%v, 5) = %s, want %s", c.sizes, got, c.want)
		}
	}
}

// A group whose transaction fails (a job's instance made already) is
// stored owner by owner: the others' instances are stored all the same,
// and the one made already is no error.
func TestCreateGroupFallsBackOwnerByOwner(t *testing.T) {
	ctx := t.Context()
	s := OpenTestStore(t)
	m := NewManager(s, Options{Logger: slog.New(slog.DiscardHandler)})
	inst := func(name string) *api.Instance {
		tmpl := api.Template{Image: "demo/busybox:1"}
		return &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: name}, Spec: api.InstanceSpec{Template: &tmpl}}
	}
	if err := s.Create(ctx, inst("job-0-0")); err != nil {
		t.Fatal(err)
	}
	job := &api.Job{Metadata: api.Metadata{Namespace: "default", Name: "job"}}
	svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "web"}}
	group := []newInstances{
		{owner: svc, insts: []*api.Instance{inst("web-a"), inst("web-b")}},
		{owner: job, insts: []*api.Instance{inst("job-0-0")}, taken: true},
		{owner: svc, insts: []*api.Instance{inst("web-c")}},
	}
	if err := m.createGroup(ctx, group, nil); err != nil {
		t.Fatalf("a group with a job's instance made already: %v, want no error", err)
	}
	for _, name := range []string{"web-a", "web-b", "web-c", "job-0-0"} {
		if _, err := store.Get[api.Instance](ctx, s, "default", name); err != nil {
			t.Errorf("%s: %v, want stored", name, err)
		}
	}
}
