package controller

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

func old(name string, ready bool) Instance {
	in := Instance{Name: name, Phase: api.PhaseRunning, Healthy: ready, SpecHash: "v1", CreatedAt: t0}
	if !ready {
		in.Phase = api.PhaseStarting
	}
	return in
}

// With maxSurge 0 and maxUnavailable 1, an old instance goes before each
// new one comes, and never more than one is missing.
// without is insts less those named in deleted.
func without(insts []Instance, deleted []string) []Instance {
	var kept []Instance
	for _, in := range insts {
		if !slices.Contains(deleted, in.Name) {
			kept = append(kept, in)
		}
	}
	return kept
}

func TestRollingUpdateMaxUnavailable(t *testing.T) {
	s := ServiceState{Replicas: 3, SpecHash: "v2", MaxUnavailable: 1,
		Instances: []Instance{old("a", true), old("b", true), old("c", true)}}
	n := 0
	for step := range 20 {
		res := ComputeService(s)
		kept := without(s.Instances, res.Delete)
		if step == 0 && (res.Create != 0 || len(res.Delete) != 1) {
			t.Fatalf("first step: create %d delete %v, want an old one to go first", res.Create, res.Delete)
		}
		// New ones made last step are ready now.
		for i := range kept {
			if kept[i].SpecHash == "v2" {
				kept[i].Phase, kept[i].Healthy = api.PhaseRunning, true
			}
		}
		for range res.Create {
			n++
			kept = append(kept, Instance{Name: fmt.Sprintf("new-%d", n), Phase: api.PhasePending, SpecHash: "v2", CreatedAt: t0.Add(time.Duration(step+1) * time.Second)})
		}
		s.Instances = kept
		if len(kept) > 3 {
			t.Fatalf("step %d: %d instances, over replicas with no surge", step, len(kept))
		}
		ready := 0
		for _, in := range kept {
			if in.Phase == api.PhaseRunning && in.Healthy {
				ready++
			}
		}
		if ready < 2 && res.Create == 0 {
			t.Fatalf("step %d: %d ready, below replicas - maxUnavailable", step, ready)
		}
		if res.Phase == RolloutComplete {
			return
		}
	}
	t.Fatalf("rollout not complete: %+v", s.Instances)
}

// A new instance that fails stops the rollout where it is: no more new
// ones, no old ones retired, READY counts the old ones still serving.
func TestFailedRolloutStalls(t *testing.T) {
	s := ServiceState{Replicas: 2, SpecHash: "v2", MaxSurge: 1,
		Instances: []Instance{old("a", true), old("b", true),
			{Name: "n", Phase: api.PhaseRunning, SpecHash: "v2", Restarts: 2, Reason: "Unhealthy", CreatedAt: t0.Add(time.Second)}}}
	res := ComputeService(s)
	if res.Create != 0 || len(res.Delete) != 0 || res.Phase != RolloutFailed || res.Ready != 2 || res.Updated != 1 || res.ReadyUpdated != 0 {
		t.Fatalf("got %+v", res)
	}
	// Once settled (rolled back, say), the same troubles fail nothing.
	s.Settled = true
	if res := ComputeService(s); res.Phase == RolloutFailed {
		t.Fatalf("settled rollout failed again: %+v", res)
	}
}

func TestHistory(t *testing.T) {
	var h []api.TemplateRevision
	for i, hash := range []string{"a", "b", "a", "a", "c"} {
		h = nextHistory(h, api.Template{Image: "img:" + hash}, hash, t0.Add(time.Duration(i)*time.Second))
	}
	var got []string
	for _, e := range h {
		got = append(got, fmt.Sprintf("%d:%s", e.Revision, e.Hash))
	}
	if want := []string{"2:b", "3:a", "4:c"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	for i := range 20 {
		h = nextHistory(h, api.Template{}, fmt.Sprint(i), t0)
	}
	if len(h) != api.MaxHistory || h[len(h)-1].Revision != 24 {
		t.Fatalf("history of %d, last revision %d", len(h), h[len(h)-1].Revision)
	}
}
