// Package scheduler is berth's placement engine: a pure function from a
// snapshot of the cluster and a batch of pending instances to a plan.
// It does no I/O, reads no clock and uses no global randomness; the seed
// is an input, so the same state, batch and seed give the same plan.
//
// # Vocabulary
//
//   - Node: a machine with a capacity (millicores, memory, pids), labels,
//     a Ready flag and a CPU topology (cores, their SMT threads, NUMA node).
//   - Instance: one container to place, with resources, optional whole
//     CPUs (ExclusiveCPUs), host ports, label constraints, a group (its
//     service or job), spread keys, anti-affinity and a priority.
//   - Allocation: an instance already bound to a node.
//   - State: the snapshot Place reads and commits to. Not safe for
//     concurrent use; Clone it to plan on a copy.
//   - Class: the nodes that are Ready and meet one constraint set, cached
//     per set and per node version, so constraints are evaluated once per
//     node, not once per instance.
//   - Plan: placements (instance → node, plus CPU set), evictions made for
//     higher-priority instances, and failures with an aggregated reason
//     such as "0/10,000 nodes: 9,120 insufficient memory, 880 port 8080 in use".
//   - Conflict: a placement of a plan that no longer fits a newer state.
//
// # Pipeline
//
//	batch ──sort by priority, then size──▶ for each instance:
//
//	 class (Ready ∧ constraints, cached)
//	   │  walk in seeded random order (start + stride coprime to n),
//	   │  each search starting where the batch last placed in this class
//	   ▼
//	 feasibility: free cpu/memory/pids (flat array) → whole free cores
//	   │          → host ports → anti-affinity
//	   ▼
//	 ranking of the first K feasible nodes (Options.Candidates, default 8):
//	   │  spread counts first (exact: the walk goes on until a node at the
//	   │  group's minimum count is among them), then nodes in use before
//	   │  empty ones, then fullest after placement, then lowest node index
//	   ▼
//	 cpuset: whole cores, on the tightest single NUMA node that fits,
//	   │     spanning NUMA nodes only when none does
//	   ▼
//	 commit to the State ──▶ next instance, next batch see it
//
//	 no node fits ─▶ preemption (lowest-priority, fewest victims on one
//	                 node) ─▶ else failure: every node's first failing
//	                 check, counted
//
// # Whole cores
//
// An instance asking for ExclusiveCPUs gets whole physical cores: both SMT
// siblings of a core go to it or to nobody. An odd request on an SMT node
// holds its last core whole and reports the idle sibling in
// Placement.Reserved; ranking prefers nodes where no sibling idles. A core
// is never split between two instances: when no node has enough whole free
// cores, the instance fails with "too few whole free cores".
//
// # Preemption
//
// An instance that fits nowhere may evict instances of strictly lower
// priority on one node, never ones placed by the same batch. Per node the
// victims are the owners of ports it needs (and, with anti-affinity, its
// group's replicas), plus the smallest set of other instances that makes
// room, lowest priorities preferred among sets of that size (exact up to
// 10 evictable instances on the node; beyond, lowest-priority and largest
// first, then any that prove unnecessary are kept). Nodes are compared by
// number of victims, then highest and summed victim priority; on large
// clusters the comparison stops after 16 workable nodes, as kube-scheduler
// bounds its candidates, or at once on a node needing one victim of the
// lowest priority present.
//
// # Optimistic concurrency
//
// A scheduler plans on a snapshot at some store revision. Before the plan
// is committed, State.Verify checks it against the newer state (node gone
// or NotReady, resources, ports, cores taken meanwhile) and State.Apply
// commits what still fits, returning the rest as conflicts. Evictions go
// with the placement they make room for: when it conflicts, its victims
// stay.
package scheduler
