package controller

import (
	"sort"
	"time"
)

// NodeState is a node as the lifecycle controller sees it.
type NodeState struct {
	Name string
	// Alive says the node's heartbeat lease is held.
	Alive bool
	Ready bool
	// NotReadySince is when the node was marked NotReady.
	NotReadySince time.Time
	Instances     []Instance
}

// NodeResult is what the node lifecycle controller writes.
type NodeResult struct {
	MarkReady    []string
	MarkNotReady []string
	// Lost names ("namespace/name") instances on nodes gone longer than the grace period.
	Lost []string
}

// empty says r asks for nothing.
func (r NodeResult) empty() bool {
	return len(r.MarkReady) == 0 && len(r.MarkNotReady) == 0 && len(r.Lost) == 0
}

// ComputeNodes marks nodes whose lease lapsed NotReady and, once they have
// stayed so for grace, their instances Lost so that controllers replace
// them elsewhere. With no grace both happen at once: the lease's TTL was
// the wait. A node whose lease is back is Ready again.
func ComputeNodes(nodes []NodeState, now time.Time, grace time.Duration) NodeResult {
	var res NodeResult
	for _, n := range nodes {
		if n.Alive {
			if !n.Ready {
				res.MarkReady = append(res.MarkReady, n.Name)
			}
			continue
		}
		since := n.NotReadySince
		if n.Ready {
			res.MarkNotReady = append(res.MarkNotReady, n.Name)
			since = now
		}
		if since.IsZero() || now.Sub(since) < grace {
			continue
		}
		for _, in := range n.Instances {
			if !in.Phase.Terminal() && !in.Deleting {
				res.Lost = append(res.Lost, in.Key())
			}
		}
	}
	sort.Strings(res.MarkReady)
	sort.Strings(res.MarkNotReady)
	sort.Strings(res.Lost)
	return res
}
