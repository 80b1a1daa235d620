package controller

import (
	"slices"
	"sort"
)

// GlobalState is a global service (one instance on every eligible node)
// and its instances.
type GlobalState struct {
	SpecHash string
	// Nodes are the eligible nodes: ready, schedulable, not draining,
	// matching the service's constraints.
	Nodes   []string
	Settled bool
	// FailedBefore is as in ServiceState.
	FailedBefore string
	Instances    []Instance
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
	eligible := make(map[string]bool, len(s.Nodes))
	for _, n := range s.Nodes {
		eligible[n] = true
	}
	cur, old := part(&res, s.Instances, s.SpecHash, s.Settled, s.FailedBefore, func(in *Instance) bool { return !eligible[in.node()] })
	current, oldOn := byNode(cur), byNode(old)
	unreadyCurrent := 0
	for _, in := range cur {
		if !in.serving() {
			unreadyCurrent++
		}
	}
	nodes := slices.Clone(s.Nodes)
	sort.Strings(nodes)
	createOn, readyNodes := rollNodes(&res, nodes, current, oldOn, unreadyCurrent)
	sort.Strings(res.Delete)
	res.Create = len(createOn)
	oldLeft := false
	for n, ins := range oldOn {
		if len(current[n]) == 0 && !slices.Contains(createOn, n) && len(ins) > 0 && eligible[n] {
			oldLeft = true
		}
	}
	if res.Phase == RolloutProgressing && !oldLeft && len(createOn) == 0 && readyNodes == len(nodes) {
		res.Phase = RolloutComplete
	}
	return res, createOn
}

// node is the node an instance is bound to, or else the one its
// placement pins it to.
func (in *Instance) node() string {
	if in.Node != "" {
		return in.Node
	}
	return in.Target
}

// byNode groups instances by their node.
func byNode(ins []*Instance) map[string][]*Instance {
	out := map[string][]*Instance{}
	for _, in := range ins {
		out[in.node()] = append(out[in.node()], in)
	}
	return out
}

// rollNodes walks the eligible nodes in order: each keeps one current
// instance, and a node done with the current template loses its old
// ones; a node without any gets one; and, while every current instance
// is ready and the rollout has not failed, one node has its old
// instance replaced. It returns the nodes to make an instance on, and
// how many nodes have a ready current one.
func rollNodes(res *ServiceResult, nodes []string, current, old map[string][]*Instance, unreadyCurrent int) (createOn []string, readyNodes int) {
	replacing := false
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
			if cur[0].serving() {
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
	return createOn, readyNodes
}
