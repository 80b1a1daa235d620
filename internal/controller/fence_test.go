package controller_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/store"
)

// Two managers on one store, each fenced on its own term of the
// controllers' election: once the election moved on, the old one (as a
// leader paused past its term would) writes nothing, and its pass says
// why, while the new one makes exactly the replicas asked for.
func TestManagerOfAnOldTermWritesNothing(t *testing.T) {
	ctx := t.Context()
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	s, err := store.Open(octx, store.Config{DataDir: t.TempDir()})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })

	node := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{
		Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
	if err := s.Create(ctx, node); err != nil {
		t.Fatal(err)
	}
	node.Status.Condition = api.NodeReady
	if err := s.UpdateStatus(ctx, node, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.KeepNodeAlive(ctx, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 2,
		Template: api.Template{Image: "demo/busybox:1"}}}
	if err := s.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	count := func() int {
		t.Helper()
		insts, _, err := store.List[api.Instance](ctx, s, "")
		if err != nil {
			t.Fatal(err)
		}
		return len(insts)
	}

	// Two candidates; each term's work hands its term out and waits.
	key := s.LeaderKey("controller")
	terms := make(chan leader.Term, 4)
	campaign := func(name string) (stop func()) {
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = leader.Run(cctx, s.Client(), key, name, func(ctx context.Context) error {
				term, ok := leader.TermFrom(ctx)
				if !ok {
					t.Error("no term in the work's context")
				}
				terms <- term
				<-ctx.Done()
				return nil
			}, leader.WithTTL(2*time.Second))
		}()
		stop = func() { cancel(); <-done }
		t.Cleanup(stop)
		return stop
	}
	next := func() leader.Term {
		t.Helper()
		select {
		case term := <-terms:
			return term
		case <-time.After(20 * time.Second):
			t.Fatal("no new term")
			return leader.Term{}
		}
	}
	stopA := campaign("a")
	termA := next()
	campaign("b")
	opt := controller.Options{Logger: slog.New(slog.DiscardHandler)}
	old := controller.NewManager(s.Fenced(termA.Cmp()), opt)
	if err := old.Pass(ctx); err != nil {
		t.Fatalf("pass in its own term: %v", err)
	}
	if n := count(); n != 2 {
		t.Fatalf("%d instances after the first term's pass, want 2", n)
	}

	// The election moves on; the first term's manager is still there.
	stopA()
	termB := next()
	if termB.Identity != "b" || termB.Revision <= termA.Revision {
		t.Fatalf("terms %+v then %+v", termA, termB)
	}
	svc, err = store.Get[api.Service](ctx, s, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Replicas = 5
	if err := s.Update(ctx, svc, 0); err != nil {
		t.Fatal(err)
	}
	before, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = old.Pass(ctx)
	if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), "no longer the leader") {
		t.Fatalf("pass after its term: got %v, want FailedPrecondition: no longer the leader", err)
	}
	if n := count(); n != 2 {
		t.Fatalf("the old term's pass made instances: %d, want 2", n)
	}
	if after, err := s.Revision(ctx); err != nil || after != before {
		t.Fatalf("the old term's pass wrote: store at revision %d, was %d (%v)", after, before, err)
	}

	cur := controller.NewManager(s.Fenced(termB.Cmp()), opt)
	if err := cur.Pass(ctx); err != nil {
		t.Fatalf("pass in the new term: %v", err)
	}
	insts, _, err := store.List[api.Instance](ctx, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(insts) != 5 {
		t.Fatalf("%d instances after the new term's pass, want 5", len(insts))
	}
	for _, in := range insts {
		if in.Spec.Node != "n1" {
			t.Errorf("instance %s on node %q, want n1", in.Metadata.Name, in.Spec.Node)
		}
	}
	// Still nothing from the old one, with work to do or without.
	if err := old.Pass(ctx); err != nil {
		t.Fatalf("the old term's pass with nothing to write: %v", err)
	}
	svc, err = store.Get[api.Service](ctx, s, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	svc.Spec.Replicas = 6
	if err := s.Update(ctx, svc, 0); err != nil {
		t.Fatal(err)
	}
	if err := old.Pass(ctx); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("the old term's pass after a scale: got %v, want FailedPrecondition", err)
	}
	if n := count(); n != 5 {
		t.Fatalf("%d instances after the old term's pass, want 5", n)
	}
}
