package scheduler

import "errors"

// Resources is an amount of the three scalar resources a node offers.
type Resources struct {
	MilliCPU    int64 // 1000 = one logical CPU
	MemoryBytes int64
	Pids        int64
}

// Core is one physical core: its logical CPUs (SMT siblings) share it.
type Core struct {
	ID      int
	NUMA    int
	Threads []int // logical CPU ids, as the kernel numbers them
}

// Topology is the CPU layout of a node. A node without cores cannot host
// instances that ask for exclusive CPUs.
type Topology struct {
	Cores []Core
}

// Node is the scheduler's view of one node.
type Node struct {
	Name  string
	Ready bool
	// Cordoned keeps new instances off a node that is otherwise fine (the
	// user cordoned or drains it); explanations say so, not "not ready".
	Cordoned bool
	Labels   map[string]string
	Capacity Resources
	Topology Topology
}

// Port is a host port an instance publishes. Protocol is "tcp" (the
// default when empty) or "udp".
type Port struct {
	Number   int
	Protocol string
}

// Instance is one unit of work to place: one container of a service or job.
type Instance struct {
	ID       string
	Group    string // the service or job; spread and anti-affinity work per group
	Priority int    // higher may preempt lower
	// Resources are what the instance reserves on its node.
	Resources Resources
	// ExclusiveCPUs asks for that many logical CPUs pinned for this instance
	// alone. They come as whole physical cores; see Placement.Reserved.
	ExclusiveCPUs int
	HostPorts     []Port
	Constraints   []Constraint
	// Spread lists domains to spread the group's replicas over, most
	// important first: "node" or a node label key such as "zone".
	Spread []string
	// AntiAffinity forbids two replicas of the group on one node.
	AntiAffinity bool
}

// Allocation is an instance already bound to a node, as the store has it.
type Allocation struct {
	Instance Instance
	Node     string
	CPUSet   []int // exclusive CPUs given to the instance, if any
}

// Placement binds an instance of the batch to a node.
type Placement struct {
	Instance Instance
	Node     string
	// CPUSet is the exclusive set of logical CPUs, sorted, when the
	// instance asked for ExclusiveCPUs.
	CPUSet []int
	// Reserved are SMT siblings held idle so that no other workload shares
	// a physical core with CPUSet; only an odd request on an SMT node has them.
	Reserved []int
}

// Eviction is an allocation a plan removes to make room for a placement
// of higher priority.
type Eviction struct {
	Instance string
	Node     string
	Priority int
	For      string // the instance it makes room for
}

// Failure is an instance of the batch that could not be placed.
type Failure struct {
	Instance string
	Reason   string
}

// Plan is the output of Place. Evictions come before the placements that
// need them when the plan is applied.
type Plan struct {
	Placements  []Placement
	Preemptions []Eviction
	Failures    []Failure
}

// Conflict is a placement of a plan that no longer fits a newer state.
type Conflict struct {
	Instance string
	Node     string
	Reason   string
}

// Options tune one call of Place.
type Options struct {
	// Seed drives the order nodes are sampled in; same state, batch and
	// seed give the same plan.
	Seed uint64
	// Candidates is how many feasible nodes are scored before the best is
	// taken (more: tighter packing, slower). Zero means DefaultCandidates.
	Candidates int
	// NoPreemption disables evicting lower-priority instances.
	NoPreemption bool
}

// DefaultCandidates is the number of feasible nodes scored per instance.
const DefaultCandidates = 8

// MaxSpreadKeys bounds Instance.Spread.
const MaxSpreadKeys = 4

// Errors returned when state is changed directly; they are wrapped with the
// name of the object.
var (
	ErrUnknownNode       = errors.New("unknown node")
	ErrDuplicateNode     = errors.New("node already exists")
	ErrUnknownInstance   = errors.New("unknown instance")
	ErrDuplicateInstance = errors.New("instance already allocated")
	ErrInvalid           = errors.New("invalid")
	ErrDoesNotFit        = errors.New("does not fit")
)
