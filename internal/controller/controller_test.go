package controller

import (
	"fmt"
	"reflect"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/berth-dev/berth/api"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func inst(name string, phase api.Phase, age int) Instance {
	return Instance{Name: name, Phase: phase, Healthy: phase == api.PhaseRunning, CreatedAt: t0.Add(time.Duration(age) * time.Second), SpecHash: "v1"}
}

func TestComputeService(t *testing.T) {
	tests := []struct {
		name   string
		s      ServiceState
		create int
		delete []string
	}{
		{"create to replicas", ServiceState{Replicas: 3, SpecHash: "v1"}, 3, nil},
		{"steady", ServiceState{Replicas: 2, SpecHash: "v1", Instances: []Instance{inst("a", api.PhaseRunning, 1), inst("b", api.PhaseRunning, 2)}}, 0, nil},
		{"scale down removes newest first", ServiceState{Replicas: 1, SpecHash: "v1",
			Instances: []Instance{inst("a", api.PhaseRunning, 1), inst("c", api.PhaseRunning, 3), inst("b", api.PhaseRunning, 2)}}, 0, []string{"c", "b"}},
		{"lost are replaced, failed and succeeded stay", ServiceState{Replicas: 4, SpecHash: "v1",
			Instances: []Instance{inst("a", api.PhaseRunning, 1), inst("b", api.PhaseFailed, 2), inst("c", api.PhaseLost, 3), inst("d", api.PhaseSucceeded, 4)}}, 1, []string{"c"}},
		{"exited ones go first on a scale down", ServiceState{Replicas: 1, SpecHash: "v1",
			Instances: []Instance{inst("a", api.PhaseRunning, 1), inst("b", api.PhaseFailed, 2), inst("c", api.PhaseRunning, 3)}}, 0, []string{"b", "c"}},
		{"exited ones of an old template go at once", ServiceState{Replicas: 1, SpecHash: "v2",
			Instances: []Instance{{Name: "a", Phase: api.PhaseFailed, SpecHash: "v1"}}}, 1, []string{"a"}},
		{"deleting ones are not counted twice", ServiceState{Replicas: 2, SpecHash: "v1",
			Instances: []Instance{inst("a", api.PhaseRunning, 1), {Name: "b", Phase: api.PhaseRunning, Deleting: true, SpecHash: "v1"}}}, 1, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := ComputeService(tc.s)
			if res.Create != tc.create || !reflect.DeepEqual(res.Delete, tc.delete) {
				t.Errorf("create %d delete %v, want %d %v", res.Create, res.Delete, tc.create, tc.delete)
			}
		})
	}
}

// simulateService applies results step by step: created instances start
// Pending and run healthy one step later.
func simulateService(t *rapid.T, s ServiceState, steps int, check func(ServiceState)) ServiceState {
	n := 0
	for step := range steps {
		for i := range s.Instances {
			if s.Instances[i].Phase == api.PhasePending {
				s.Instances[i].Phase, s.Instances[i].Healthy = api.PhaseRunning, true
			}
		}
		res := ComputeService(s)
		s.Instances = without(s.Instances, res.Delete)
		for range res.Create {
			n++
			s.Instances = append(s.Instances, Instance{Name: fmt.Sprintf("new-%d", n), Phase: api.PhasePending, SpecHash: s.SpecHash, CreatedAt: t0.Add(time.Duration(1000+step) * time.Second)})
		}
		check(s)
	}
	return s
}

func TestServiceConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		replicas := rapid.IntRange(0, 12).Draw(t, "replicas")
		var s ServiceState
		s.SpecHash = rapid.SampledFrom([]string{"v1", "v2"}).Draw(t, "hash")
		s.Replicas = replicas
		s.MaxSurge = rapid.IntRange(1, 3).Draw(t, "surge")
		phases := []api.Phase{api.PhasePending, api.PhaseRunning, api.PhaseFailed, api.PhaseLost, api.PhaseSucceeded}
		for i := range rapid.IntRange(0, 15).Draw(t, "existing") {
			p := rapid.SampledFrom(phases).Draw(t, "phase")
			s.Instances = append(s.Instances, Instance{Name: fmt.Sprintf("old-%02d", i), Phase: p, Healthy: p == api.PhaseRunning,
				SpecHash: "v1", CreatedAt: t0.Add(time.Duration(i) * time.Second)})
		}
		rolling := s.SpecHash == "v2"
		final := simulateService(t, s, 3*replicas+10, func(cur ServiceState) {
			live := 0
			for _, in := range cur.Instances {
				if !in.Phase.Terminal() {
					live++
				}
			}
			if rolling && live > max(s.Replicas+s.MaxSurge, len(s.Instances)) {
				t.Fatalf("rolling update runs %d instances, over %d replicas + %d surge", live, s.Replicas, s.MaxSurge)
			}
		})
		if len(final.Instances) != replicas {
			t.Fatalf("converged to %d instances, want %d", len(final.Instances), replicas)
		}
		for _, in := range final.Instances {
			// Exited ones of the current template stay: their restart policy said so.
			exited := in.Phase == api.PhaseFailed || in.Phase == api.PhaseSucceeded
			if in.SpecHash != s.SpecHash || (in.Phase != api.PhaseRunning && !exited) {
				t.Fatalf("instance %s: hash %s phase %s after convergence", in.Name, in.SpecHash, in.Phase)
			}
		}
	})
}

func shard(name string, index, attempt int, p api.Phase) Instance {
	return Instance{Name: name, Index: index, Attempt: attempt, Phase: p}
}

func TestComputeJob(t *testing.T) {
	res := ComputeJob(JobState{Completions: 8, Parallelism: 4, BackoffLimit: 2})
	if len(res.Create) != 4 || res.Create[0] != (NewShard{0, 0}) || res.Create[3] != (NewShard{3, 0}) {
		t.Errorf("first round creates %v, want indices 0-3", res.Create)
	}
	res = ComputeJob(JobState{Completions: 4, Parallelism: 2, BackoffLimit: 2, Instances: []Instance{
		shard("a", 0, 0, api.PhaseSucceeded), shard("b", 1, 0, api.PhaseFailed), shard("c", 2, 0, api.PhaseRunning),
	}})
	if !reflect.DeepEqual(res.Create, []NewShard{{1, 1}}) || res.Phase != JobRunning {
		t.Errorf("retry: %+v", res)
	}
	res = ComputeJob(JobState{Completions: 4, Parallelism: 2, BackoffLimit: 2, Instances: []Instance{
		shard("a", 3, 0, api.PhaseFailed), shard("b", 3, 1, api.PhaseFailed), shard("c", 3, 2, api.PhaseFailed), shard("d", 0, 0, api.PhaseRunning),
	}})
	if res.Phase != JobFailed || !reflect.DeepEqual(res.Delete, []string{"d"}) || len(res.Create) != 0 {
		t.Errorf("past the backoff limit: %+v", res)
	}
	res = ComputeJob(JobState{Completions: 2, Parallelism: 2, Instances: []Instance{shard("a", 0, 0, api.PhaseSucceeded), shard("b", 1, 3, api.PhaseSucceeded)}})
	if res.Phase != JobSucceeded {
		t.Errorf("all indices done: phase %s", res.Phase)
	}
}

func TestJobProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		j := JobState{
			Completions:  rapid.IntRange(1, 20).Draw(t, "completions"),
			Parallelism:  rapid.IntRange(1, 6).Draw(t, "parallelism"),
			BackoffLimit: rapid.IntRange(0, 5).Draw(t, "backoff"),
		}
		alwaysFails := rapid.IntRange(-1, j.Completions-1).Draw(t, "failing index")
		n := 0
		for step := 0; step < 200; step++ {
			// Each running shard finishes: the failing index fails, others succeed.
			for i := range j.Instances {
				if j.Instances[i].Phase == api.PhaseRunning {
					if j.Instances[i].Index == alwaysFails {
						j.Instances[i].Phase = api.PhaseFailed
					} else {
						j.Instances[i].Phase = api.PhaseSucceeded
					}
				}
			}
			res := ComputeJob(j)
			if res.Active+len(res.Create) > j.Parallelism {
				t.Fatalf("%d active + %d new exceeds parallelism %d", res.Active, len(res.Create), j.Parallelism)
			}
			if res.Phase != JobRunning {
				if alwaysFails >= 0 && res.Phase != JobFailed {
					t.Fatalf("index %d always fails, yet the job %s", alwaysFails, res.Phase)
				}
				if alwaysFails < 0 && res.Phase != JobSucceeded {
					t.Fatalf("no index fails, yet the job %s", res.Phase)
				}
				if res.Phase == JobFailed && res.Failures != j.BackoffLimit+1 {
					t.Fatalf("failed after %d failures, want %d", res.Failures, j.BackoffLimit+1)
				}
				return
			}
			for _, c := range res.Create {
				n++
				j.Instances = append(j.Instances, Instance{Name: fmt.Sprintf("s%d", n), Index: c.Index, Attempt: c.Attempt, Phase: api.PhaseRunning})
			}
		}
		t.Fatal("job never finished")
	})
}

func TestComputeNodes(t *testing.T) {
	grace := 5 * time.Second
	nodes := []NodeState{
		{Name: "up", Alive: true, Ready: true, Instances: []Instance{inst("a", api.PhaseRunning, 0)}},
		{Name: "just-lost", Alive: false, Ready: true},
		{Name: "back", Alive: true, Ready: false},
		{Name: "gone", Alive: false, Ready: false, NotReadySince: t0.Add(-10 * time.Second),
			Instances: []Instance{inst("x", api.PhaseRunning, 0), inst("y", api.PhaseSucceeded, 0)}},
		{Name: "recent", Alive: false, Ready: false, NotReadySince: t0.Add(-time.Second), Instances: []Instance{inst("z", api.PhaseRunning, 0)}},
	}
	res := ComputeNodes(nodes, t0, grace)
	want := NodeResult{MarkReady: []string{"back"}, MarkNotReady: []string{"just-lost"}, Lost: []string{"/x"}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("got %+v, want %+v", res, want)
	}

	// No grace: the lapsed lease was the wait, so a node's instances are
	// Lost in the pass that marks it NotReady.
	nodes[1].Instances = []Instance{inst("w", api.PhaseRunning, 0), inst("v", api.PhaseFailed, 0)}
	res = ComputeNodes(nodes, t0, 0)
	want = NodeResult{MarkReady: []string{"back"}, MarkNotReady: []string{"just-lost"}, Lost: []string{"/w", "/x", "/z"}}
	if !reflect.DeepEqual(res, want) {
		t.Errorf("no grace: got %+v, want %+v", res, want)
	}
}

// A failed rollout stays failed while its instance, between a restart and
// its next report, shows no failure: no more new instances, no old one goes.
func TestFailedRolloutStaysFailed(t *testing.T) {
	old := []Instance{inst("a", api.PhaseRunning, 1), inst("b", api.PhaseRunning, 2)}
	restarting := Instance{Name: "c", Phase: api.PhasePending, SpecHash: "v2", CreatedAt: t0.Add(3 * time.Second)}
	s := ServiceState{Replicas: 2, SpecHash: "v2", MaxSurge: 1, Instances: append(old, restarting)}
	if res := ComputeService(s); res.Phase != RolloutProgressing {
		t.Fatalf("before any failure: phase %s, want Progressing", res.Phase)
	}
	s.FailedBefore = "instance c failed its health check"
	res := ComputeService(s)
	if res.Phase != RolloutFailed || res.Reason != s.FailedBefore || res.Create != 0 || len(res.Delete) != 0 {
		t.Fatalf("after a failure: %+v, want Failed with its reason, nothing made or removed", res)
	}
	if res, _ := ComputeGlobal(GlobalState{SpecHash: "v2", Nodes: []string{"n1"}, FailedBefore: s.FailedBefore,
		Instances: []Instance{restarting}}); res.Phase != RolloutFailed {
		t.Fatalf("a global service after a failure: phase %s, want Failed", res.Phase)
	}
}
