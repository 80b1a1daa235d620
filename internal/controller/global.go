package controller

import (
	"slices"
	"sort"

	"github.com/berth-dev/berth/api"
)

// GlobalState is a global service (one instance on every eligible node)
// and its instances.
type GlobalState struct {
	SpecHash string
	// Nodes are the eligible nodes: ready, schedulable, not draining,
	// matching the service's constraints.
	Nodes     []string
	Settled   bool
	Instances []Instance
}

// ComputeGlobal keeps one instance of the current template on every
// eligible node: a node that joins gets one at once, and an instance on
// a node no longer eligible (cordoned, drained, gone, its labels changed)
// goes. An instance's node is the one it is bound to, or else the one
// its placement pins it to (Instance.Target).
//
// A template change goes node by node: one node's old instance is
// replaced at a time, the next only once every current instance is
// running and healthy; a failed new instance stops it. CreateOn names the
// nodes to make a current instance on.
func ComputeGlobal(s GlobalState) (res ServiceResult, createOn []string) {
	res.Phase = RolloutProgressing
	eligible := make(map[string]bool, len(s.Nodes))
	for _, n := range s.Nodes {
		eligible[n] = true
	}
	current := map[string][]Instance{}
	old := map[string][]Instance{}
	unreadyCurrent := 0
	for _, in := range s.Instances {
		if in.Deleting {
			continue
		}
		node := in.Node
		if node == "" {
			node = in.Target
		}
		if in.Phase == api.PhaseLost || !eligible[node] || (in.Phase.Terminal() && in.SpecHash != s.SpecHash) {
			res.Delete = append(res.Delete, in.Name)
			continue
		}
		if in.Phase.Terminal() {
			res.Exited = append(res.Exited, in.Name)
		}
		ready := in.Phase == api.PhaseRunning && in.Healthy
		if ready {
			res.Ready++
		}
		if in.SpecHash != s.SpecHash {
			old[node] = append(old[node], in)
			continue
		}
		current[node] = append(current[node], in)
		if ready {
			res.ReadyUpdated++
		} else {
			unreadyCurrent++
		}
		if why := failure(in); why != "" && !s.Settled && res.Reason == "" {
			res.Reason = why
		}
	}
	if res.Reason != "" {
		res.Phase = RolloutFailed
	}
	nodes := slices.Clone(s.Nodes)
	sort.Strings(nodes)
	replacing := false
	readyNodes := 0
	for _, n := range nodes {
		cur := current[n]
		// More than one current instance on a node: the newest go.
		if len(cur) > 1 {
			newestFirst(cur)
			for _, in := range cur[:len(cur)-1] {
				res.Delete = append(res.Delete, in.Name)
			}
			cur = cur[len(cur)-1:]
		}
		switch {
		case len(cur) == 1:
			res.Updated++
			if cur[0].Phase == api.PhaseRunning && cur[0].Healthy {
				readyNodes++
			}
			// The node is done: its old instances go.
			for _, in := range old[n] {
				res.Delete = append(res.Delete, in.Name)
			}
		case len(old[n]) == 0:
			// A node without an instance (one that joined) gets one now.
			createOn = append(createOn, n)
			res.Updated++
		case !replacing && unreadyCurrent == 0 && res.Phase != RolloutFailed:
			// One node at a time: its old instance goes and a new one
			// comes in its place (host ports allow no overlap).
			replacing = true
			for _, in := range old[n] {
				res.Delete = append(res.Delete, in.Name)
			}
			createOn = append(createOn, n)
			res.Updated++
		}
	}
	sort.Strings(res.Delete)
	sort.Strings(res.Exited)
	res.Create = len(createOn)
	oldLeft := false
	for n, ins := range old {
		if len(current[n]) == 0 && !slices.Contains(createOn, n) && len(ins) > 0 && eligible[n] {
			oldLeft = true
		}
	}
	if res.Phase == RolloutProgressing && !oldLeft && len(createOn) == 0 && readyNodes == len(nodes) {
		res.Phase = RolloutComplete
	}
	return res, createOn
}
