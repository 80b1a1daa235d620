package controller_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/store"
)

// While the manager runs, its cache counts the instances by phase for
// /metrics, following their changes; once it stops, it counts no more
// (the scrape lists the store again).
func TestManagerCountsPhasesForMetrics(t *testing.T) {
	s := controller.OpenTestStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	phases := new(metrics.Phases)
	m := controller.NewManager(s, controller.Options{Logger: slog.New(slog.DiscardHandler), Network: controller.DefaultNetwork, Phases: phases})
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	// No node: the service's instances stay Pending until one is written otherwise.
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 2, Template: api.Template{Image: "demo/busybox:1"}}}
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	wait := func(want string) {
		t.Helper()
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			n, ok := phases.Count()
			if got = fmt.Sprint(ok, n); got == want {
				return
			}
		}
		t.Fatalf("the manager counts %s, want %s", got, want)
	}
	wait("true map[Pending:2]")
	insts, _, err := store.List[api.Instance](ctx, s, "default")
	if err != nil {
		t.Fatal(err)
	}
	insts[0].Status.Phase = api.PhaseRunning
	if err := s.UpdateStatus(ctx, insts[0], 0); err != nil {
		t.Fatal(err)
	}
	wait("true map[Pending:1 Running:1]")
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n, ok := phases.Count(); ok {
		t.Errorf("the manager stopped, yet a count is given: %v", n)
	}
}
