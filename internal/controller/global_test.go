package controller

import (
	"slices"
	"testing"

	"github.com/berth-dev/berth/api"
)

func TestComputeGlobal(t *testing.T) {
	run := func(name, node, hash string, ready bool) Instance {
		in := Instance{Name: name, Node: node, SpecHash: hash, Phase: api.PhaseRunning, Healthy: ready}
		return in
	}
	pending := func(name, target, hash string) Instance {
		return Instance{Name: name, Target: target, SpecHash: hash, Phase: api.PhasePending}
	}
	cases := []struct {
		name       string
		s          GlobalState
		wantCreate []string
		wantDelete []string
		wantPhase  RolloutPhase
	}{
		{name: "one per node from none", s: GlobalState{SpecHash: "h", Nodes: []string{"n2", "n1", "n3"}},
			wantCreate: []string{"n1", "n2", "n3"}, wantPhase: RolloutProgressing},
		{name: "complete", s: GlobalState{SpecHash: "h", Nodes: []string{"n1", "n2"},
			Instances: []Instance{run("a", "n1", "h", true), run("b", "n2", "h", true)}}, wantPhase: RolloutComplete},
		{name: "a joining node gets one; a pending one is not doubled", s: GlobalState{SpecHash: "h", Nodes: []string{"n1", "n2", "n3"},
			Instances: []Instance{run("a", "n1", "h", true), pending("b", "n2", "h")}}, wantCreate: []string{"n3"}, wantPhase: RolloutProgressing},
		{name: "a node no longer eligible loses its instance, bound or pending", s: GlobalState{SpecHash: "h", Nodes: []string{"n1"},
			Instances: []Instance{run("a", "n1", "h", true), run("b", "n2", "h", true), pending("c", "n3", "h")}},
			wantDelete: []string{"b", "c"}, wantPhase: RolloutComplete},
		{name: "two on a node: the newest goes", s: GlobalState{SpecHash: "h", Nodes: []string{"n1"},
			Instances: []Instance{run("a", "n1", "h", true), run("b", "n1", "h", true)}}, wantDelete: []string{"b"}, wantPhase: RolloutComplete},
		{name: "rolling update replaces the first node only", s: GlobalState{SpecHash: "new", Nodes: []string{"n1", "n2", "n3"},
			Instances: []Instance{run("a", "n1", "old", true), run("b", "n2", "old", true), run("c", "n3", "old", true)}},
			wantCreate: []string{"n1"}, wantDelete: []string{"a"}, wantPhase: RolloutProgressing},
		{name: "the next node waits for the new instance to be ready", s: GlobalState{SpecHash: "new", Nodes: []string{"n1", "n2"},
			Instances: []Instance{pending("a2", "n1", "new"), run("b", "n2", "old", true)}}, wantPhase: RolloutProgressing},
		{name: "then goes", s: GlobalState{SpecHash: "new", Nodes: []string{"n1", "n2"},
			Instances: []Instance{run("a2", "n1", "new", true), run("b", "n2", "old", true)}},
			wantCreate: []string{"n2"}, wantDelete: []string{"b"}, wantPhase: RolloutProgressing},
		{name: "a failed new instance stops the update", s: GlobalState{SpecHash: "new", Nodes: []string{"n1", "n2"},
			Instances: []Instance{{Name: "a2", Node: "n1", SpecHash: "new", Phase: api.PhaseRunning, Restarts: 2}, run("b", "n2", "old", true)}},
			wantPhase: RolloutFailed},
		{name: "lost instances are replaced", s: GlobalState{SpecHash: "h", Nodes: []string{"n1"},
			Instances: []Instance{{Name: "a", Node: "n1", SpecHash: "h", Phase: api.PhaseLost}}},
			wantCreate: []string{"n1"}, wantDelete: []string{"a"}, wantPhase: RolloutProgressing},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, createOn := ComputeGlobal(tc.s)
			if !slices.Equal(createOn, tc.wantCreate) || res.Create != len(tc.wantCreate) {
				t.Errorf("create on %v (%d), want %v", createOn, res.Create, tc.wantCreate)
			}
			if !slices.Equal(res.Delete, tc.wantDelete) {
				t.Errorf("delete %v, want %v", res.Delete, tc.wantDelete)
			}
			if res.Phase != tc.wantPhase {
				t.Errorf("phase %s, want %s", res.Phase, tc.wantPhase)
			}
		})
	}
}
