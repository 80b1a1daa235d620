package scheduler

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// State is a snapshot of nodes and the instances allocated on them. Place
// reads it and commits its plan to it, so the next batch sees the last one.
// A State is not safe for concurrent use; Clone it to keep a copy.
//
// Nodes are kept in flat slices indexed by the order they were added, so
// that the hot loop of Place touches a few words per node.
type State struct {
	nodes []nodeState
	// free is capacity minus use per node, apart from nodes so that the
	// scan over candidates reads 24 bytes per node, not a whole nodeState.
	free   []Resources
	byName map[string]int32
	live   int
	allocs map[string]*alloc
	groups map[string]*group
	// lastGroup is the group looked up last: allocations come by group,
	// and a lookup by name each was a good part of building a large state.
	lastGroup *group
	// slab holds the allocations of a state built sized (NewStateSized)
	// while it has room: one object for them all, not one each. It never
	// grows, so pointers into it stay.
	slab []alloc

	// version changes whenever a node appears, goes, changes readiness or
	// labels: the cached eligibility classes are only valid for one version.
	version uint64
	classes map[string]*class
	all     *class
	// index lists node indexes per label key and value (and per name under
	// NodeNameKey), built on first use per version, so that a class for
	// "zone == a" or "node.name == n7" looks only at matching nodes.
	index map[string]map[string][]int32

	seq uint64 // number of batches placed, to tell this batch's allocations apart
}

type nodeState struct {
	name string
	// ready says the node takes new instances: Ready and not cordoned.
	ready    bool
	cordoned bool
	gone     bool
	labels   map[string]string
	cap      Resources
	ports    map[uint32]string // host port key → instance
	allocs   []*alloc
	cpu      *cpuState
	// levels sums allocations per priority, ascending, so preemption can
	// rule a node out without walking its allocations.
	levels []level
}

type level struct {
	prio  int
	n     int32
	milli int64
	mem   int64
	pids  int64
}

func (n *nodeState) account(a *alloc, sign int32) {
	i, found := slices.BinarySearchFunc(n.levels, a.inst.Priority, func(l level, p int) int { return l.prio - p })
	if !found {
		n.levels = slices.Insert(n.levels, i, level{prio: a.inst.Priority})
	}
	l := &n.levels[i]
	l.n += sign
	l.milli += int64(sign) * a.milli
	l.mem += int64(sign) * a.inst.Resources.MemoryBytes
	l.pids += int64(sign) * a.inst.Resources.Pids
	if l.n == 0 {
		n.levels = slices.Delete(n.levels, i, i+1)
	}
}

type alloc struct {
	inst     Instance
	node     int32
	cpus     []int
	reserved []int
	cores    []int32
	milli    int64 // CPU charged: the request, or all held threads when exclusive
	ports    []uint32
	grp      *group
	seq      uint64
}

type group struct {
	name     string
	perNode  map[int32]int32
	trackers []*tracker
}

// class is the set of nodes that are ready and satisfy one constraint set,
// in node order. Instances with equal constraints share it.
type class struct {
	cons    []Constraint
	nodes   []int32
	member  []uint64
	domains map[string][]string // label key → distinct values among the nodes
}

func (c *class) has(n int32) bool { return c.member[n>>6]&(1<<(n&63)) != 0 }

// NewState builds a snapshot from nodes and the allocations already on them.
func NewState(nodes []Node, allocs []Allocation) (*State, error) {
	s, err := NewStateSized(nodes, len(allocs))
	if err != nil {
		return nil, err
	}
	for _, a := range allocs {
		if err := s.AddAllocation(a); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// NewStateSized builds a snapshot from nodes with nothing allocated yet,
// sized for about n allocations, which the caller adds (AddAllocation):
// a cluster's hundreds of thousands need not be gathered in a slice
// first.
func NewStateSized(nodes []Node, n int) (*State, error) {
	s := &State{
		byName: make(map[string]int32, len(nodes)),
		allocs: make(map[string]*alloc, n),
		groups: make(map[string]*group),
		slab:   make([]alloc, 0, n),
	}
	s.nodes = make([]nodeState, 0, len(nodes))
	for _, n := range nodes {
		if err := s.AddNode(n); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// AddNode adds a node with no allocations.
func (s *State) AddNode(n Node) error {
	if n.Name == "" {
		return fmt.Errorf("node: empty name: %w", ErrInvalid)
	}
	if _, ok := s.byName[n.Name]; ok {
		return fmt.Errorf("node %q: %w", n.Name, ErrDuplicateNode)
	}
	if n.Capacity.MilliCPU < 0 || n.Capacity.MemoryBytes < 0 || n.Capacity.Pids < 0 {
		return fmt.Errorf("node %q: negative capacity: %w", n.Name, ErrInvalid)
	}
	cpu, err := newCPUState(n.Topology)
	if err != nil {
		return fmt.Errorf("node %q: %w", n.Name, err)
	}
	s.byName[n.Name] = int32(len(s.nodes))
	s.free = append(s.free, n.Capacity)
	s.nodes = append(s.nodes, nodeState{
		name:     n.Name,
		ready:    n.Ready && !n.Cordoned,
		cordoned: n.Cordoned,
		labels:   maps.Clone(n.Labels),
		cap:      n.Capacity,
		cpu:      cpu,
	})
	s.live++
	s.nodesChanged()
	return nil
}

// SetReady marks a node Ready or NotReady. A NotReady node keeps its
// allocations but receives no new ones.
func (s *State) SetReady(name string, ready bool) error {
	i, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("node %q: %w", name, ErrUnknownNode)
	}
	ready = ready && !s.nodes[i].cordoned
	if s.nodes[i].ready != ready {
		s.nodes[i].ready = ready
		s.nodesChanged()
	}
	return nil
}

// SetLabels replaces a node's labels.
func (s *State) SetLabels(name string, labels map[string]string) error {
	i, ok := s.byName[name]
	if !ok {
		return fmt.Errorf("node %q: %w", name, ErrUnknownNode)
	}
	// Spread trackers count per label value; nodesChanged makes them stale
	// so they are rebuilt with the new labels.
	s.nodes[i].labels = maps.Clone(labels)
	s.nodesChanged()
	return nil
}

// RemoveNode deletes a node and its allocations, returning their IDs sorted.
func (s *State) RemoveNode(name string) ([]string, error) {
	i, ok := s.byName[name]
	if !ok {
		return nil, fmt.Errorf("node %q: %w", name, ErrUnknownNode)
	}
	var ids []string
	for len(s.nodes[i].allocs) > 0 {
		a := s.nodes[i].allocs[0]
		ids = append(ids, a.inst.ID)
		s.removeAlloc(a)
	}
	slices.Sort(ids)
	delete(s.byName, name)
	// The slot stays as a tombstone: node indexes are referenced by groups.
	s.nodes[i] = nodeState{name: name, gone: true}
	s.free[i] = Resources{}
	s.live--
	s.nodesChanged()
	return ids, nil
}

func (s *State) nodesChanged() {
	s.version++
	s.classes = nil
	s.all = nil
	s.index = nil
}

// AddAllocation records an instance already running on a node. Resources
// are taken as the store reports them, even beyond capacity, but exclusive
// CPU sets must not overlap.
func (s *State) AddAllocation(a Allocation) error {
	if a.Instance.ID == "" {
		return fmt.Errorf("allocation on node %q: empty instance id: %w", a.Node, ErrInvalid)
	}
	if _, ok := s.allocs[a.Instance.ID]; ok {
		return fmt.Errorf("instance %q: %w", a.Instance.ID, ErrDuplicateInstance)
	}
	ni, ok := s.byName[a.Node]
	if !ok {
		return fmt.Errorf("instance %q on node %q: %w", a.Instance.ID, a.Node, ErrUnknownNode)
	}
	cpus, reserved, cores, err := s.claimCPUs(ni, a.CPUSet)
	if err != nil {
		return fmt.Errorf("instance %q on node %q: %w", a.Instance.ID, a.Node, err)
	}
	s.addAlloc(ni, a.Instance, cpus, reserved, cores, 0)
	return nil
}

// claimCPUs checks that a given CPU set lies on whole free cores of node ni
// and lists the siblings it would hold idle.
func (s *State) claimCPUs(ni int32, set []int) (cpus, reserved []int, cores []int32, err error) {
	if len(set) == 0 {
		return nil, nil, nil, nil
	}
	c := s.nodes[ni].cpu
	cores, err = c.coresOf(set)
	if err != nil {
		return nil, nil, nil, err
	}
	cpus = slices.Clone(set)
	slices.Sort(cpus)
	if len(slices.Compact(slices.Clone(cpus))) != len(cpus) {
		return nil, nil, nil, fmt.Errorf("cpus %v: repeated cpu: %w", set, ErrInvalid)
	}
	for _, i := range cores {
		for _, t := range c.cores[i].threads {
			if !slices.Contains(cpus, t) {
				reserved = append(reserved, t)
			}
		}
	}
	slices.Sort(reserved)
	return cpus, reserved, cores, nil
}

// RemoveAllocation deletes an allocation, freeing what it held.
func (s *State) RemoveAllocation(id string) error {
	a, ok := s.allocs[id]
	if !ok {
		return fmt.Errorf("instance %q: %w", id, ErrUnknownInstance)
	}
	s.removeAlloc(a)
	return nil
}

func portKey(p Port) uint32 {
	k := uint32(p.Number) & 0xffff
	if strings.EqualFold(p.Protocol, "udp") {
		k |= 1 << 16
	}
	return k
}

func portText(k uint32) string {
	if k&(1<<16) != 0 {
		return fmt.Sprintf("%d/udp", k&0xffff)
	}
	return fmt.Sprint(k & 0xffff)
}

func (s *State) group(name string) *group {
	if name == "" {
		return nil
	}
	if g := s.lastGroup; g != nil && g.name == name {
		return g
	}
	g := s.groups[name]
	if g == nil {
		g = &group{name: name, perNode: make(map[int32]int32)}
		s.groups[name] = g
	}
	s.lastGroup = g
	return g
}

func (s *State) addAlloc(ni int32, inst Instance, cpus, reserved []int, cores []int32, seq uint64) *alloc {
	n := &s.nodes[ni]
	var a *alloc
	if len(s.slab) < cap(s.slab) {
		s.slab = append(s.slab, alloc{inst: inst, node: ni, cpus: cpus, reserved: reserved, cores: cores, seq: seq})
		a = &s.slab[len(s.slab)-1]
	} else {
		a = &alloc{inst: inst, node: ni, cpus: cpus, reserved: reserved, cores: cores, seq: seq}
	}
	a.milli = inst.Resources.MilliCPU
	if len(cores) > 0 {
		for _, i := range cores {
			n.cpu.hold(int(i))
		}
		a.milli = max(a.milli, int64(len(cpus)+len(reserved))*1000)
	}
	f := &s.free[ni]
	f.MilliCPU -= a.milli
	f.MemoryBytes -= inst.Resources.MemoryBytes
	f.Pids -= inst.Resources.Pids
	for _, p := range inst.HostPorts {
		k := portKey(p)
		a.ports = append(a.ports, k)
		if n.ports == nil {
			n.ports = make(map[uint32]string)
		}
		n.ports[k] = inst.ID
	}
	n.allocs = append(n.allocs, a)
	n.account(a, +1)
	s.allocs[inst.ID] = a
	if g := s.group(inst.Group); g != nil {
		a.grp = g
		g.perNode[ni]++
		s.trackGroup(g, ni, +1)
	}
	return a
}

func (s *State) removeAlloc(a *alloc) {
	n := &s.nodes[a.node]
	f := &s.free[a.node]
	f.MilliCPU += a.milli
	f.MemoryBytes += a.inst.Resources.MemoryBytes
	f.Pids += a.inst.Resources.Pids
	for _, k := range a.ports {
		if n.ports[k] == a.inst.ID {
			delete(n.ports, k)
		}
	}
	for _, i := range a.cores {
		n.cpu.release(int(i))
	}
	if i := slices.Index(n.allocs, a); i >= 0 {
		last := len(n.allocs) - 1
		n.allocs[i] = n.allocs[last]
		n.allocs[last] = nil
		n.allocs = n.allocs[:last]
	}
	n.account(a, -1)
	delete(s.allocs, a.inst.ID)
	if g := a.grp; g != nil {
		if g.perNode[a.node]--; g.perNode[a.node] <= 0 {
			delete(g.perNode, a.node)
		}
		s.trackGroup(g, a.node, -1)
	}
}

// classFor returns the cached eligible nodes for a constraint set.
func (s *State) classFor(cons []Constraint) *class {
	if len(cons) == 0 {
		if s.all == nil {
			s.all = s.buildClass(nil)
		}
		return s.all
	}
	key := classKey(cons)
	if c, ok := s.classes[key]; ok {
		return c
	}
	c := s.buildClass(cons)
	if s.classes == nil {
		s.classes = make(map[string]*class)
	}
	s.classes[key] = c
	return c
}

func (s *State) buildClass(cons []Constraint) *class {
	c := &class{cons: cons, member: make([]uint64, (len(s.nodes)+63)/64)}
	add := func(i int32) {
		n := &s.nodes[i]
		if n.gone || !n.ready || failedConstraint(cons, n) >= 0 {
			return
		}
		c.nodes = append(c.nodes, i)
		c.member[i>>6] |= 1 << (i & 63)
	}
	if cand, ok := s.narrow(cons); ok {
		for _, i := range cand {
			add(i)
		}
		return c
	}
	for i := range s.nodes {
		add(int32(i))
	}
	return c
}

// narrow returns, in node order, the nodes the most selective equality or
// "in" constraint allows, or false when no constraint can use the index.
func (s *State) narrow(cons []Constraint) ([]int32, bool) {
	var best []int32
	found := false
	for _, c := range cons {
		if c.Op != OpEq && c.Op != OpIn {
			continue
		}
		vals := c.Values
		if c.Op == OpEq && len(vals) > 1 {
			vals = vals[:1]
		}
		var cand []int32
		for _, v := range vals {
			cand = append(cand, s.indexOf(c.Key)[v]...)
		}
		if !found || len(cand) < len(best) {
			best, found = cand, true
		}
	}
	if len(cons) > 0 && found {
		slices.Sort(best)
		best = slices.Compact(best)
	}
	return best, found
}

func (s *State) indexOf(key string) map[string][]int32 {
	if idx, ok := s.index[key]; ok {
		return idx
	}
	idx := make(map[string][]int32)
	for i := range s.nodes {
		n := &s.nodes[i]
		if n.gone {
			continue
		}
		if key == NodeNameKey {
			idx[n.name] = append(idx[n.name], int32(i))
		} else if v, ok := n.labels[key]; ok {
			idx[v] = append(idx[v], int32(i))
		}
	}
	if s.index == nil {
		s.index = make(map[string]map[string][]int32)
	}
	s.index[key] = idx
	return idx
}

// failedConstraint returns the index of the first constraint the node
// does not meet, or -1.
func failedConstraint(cons []Constraint, n *nodeState) int {
	for i, c := range cons {
		if !c.matches(n.name, n.labels) {
			return i
		}
	}
	return -1
}

// domainsOf lists the distinct values of a label among a class's nodes;
// a node without the label is its own domain "".
func (s *State) domainsOf(c *class, key string) []string {
	if d, ok := c.domains[key]; ok {
		return d
	}
	seen := make(map[string]struct{})
	for _, ni := range c.nodes {
		seen[s.nodes[ni].labels[key]] = struct{}{}
	}
	d := slices.Sorted(maps.Keys(seen))
	if c.domains == nil {
		c.domains = make(map[string][]string)
	}
	c.domains[key] = d
	return d
}

// Clone returns an independent copy. Caches are not copied; they are
// rebuilt on first use.
func (s *State) Clone() *State {
	d := &State{
		nodes:   slices.Clone(s.nodes),
		free:    slices.Clone(s.free),
		byName:  maps.Clone(s.byName),
		live:    s.live,
		allocs:  make(map[string]*alloc, len(s.allocs)),
		groups:  make(map[string]*group, len(s.groups)),
		version: s.version + 1,
		seq:     s.seq,
	}
	for name, g := range s.groups {
		d.groups[name] = &group{name: name, perNode: maps.Clone(g.perNode)}
	}
	// One slab for all allocations: 100,000 small objects are the bulk of
	// a snapshot's cost to copy and to scan.
	slab := make([]alloc, 0, len(s.allocs))
	for i := range d.nodes {
		n := &d.nodes[i]
		n.ports = maps.Clone(n.ports)
		n.cpu = n.cpu.clone()
		n.levels = slices.Clone(n.levels)
		allocs := make([]*alloc, len(n.allocs))
		for j, a := range n.allocs {
			slab = append(slab, *a)
			b := &slab[len(slab)-1]
			if b.grp != nil {
				b.grp = d.groups[b.grp.name]
			}
			allocs[j] = b
			d.allocs[b.inst.ID] = b
		}
		n.allocs = allocs
	}
	return d
}

// NodeStatus is a read-only view of one node in a State.
type NodeStatus struct {
	Name      string
	Ready     bool
	Labels    map[string]string
	Capacity  Resources
	Used      Resources
	Instances []string // sorted
	// HeldCPUs are the logical CPUs of cores held by exclusive instances.
	HeldCPUs []int
	// FreeCPUs are the logical CPUs on whole free cores.
	FreeCPUs []int
}

// Nodes lists the nodes in the order they were added.
func (s *State) Nodes() []NodeStatus {
	out := make([]NodeStatus, 0, s.live)
	for i := range s.nodes {
		if !s.nodes[i].gone {
			out = append(out, s.status(int32(i)))
		}
	}
	return out
}

// Node returns one node's status.
func (s *State) Node(name string) (NodeStatus, bool) {
	i, ok := s.byName[name]
	if !ok {
		return NodeStatus{}, false
	}
	return s.status(i), true
}

func (s *State) status(i int32) NodeStatus {
	n := &s.nodes[i]
	f := s.free[i]
	used := Resources{n.cap.MilliCPU - f.MilliCPU, n.cap.MemoryBytes - f.MemoryBytes, n.cap.Pids - f.Pids}
	st := NodeStatus{Name: n.name, Ready: n.ready, Labels: maps.Clone(n.labels), Capacity: n.cap, Used: used}
	for _, a := range n.allocs {
		st.Instances = append(st.Instances, a.inst.ID)
	}
	slices.Sort(st.Instances)
	if n.cpu != nil {
		for _, k := range n.cpu.cores {
			if k.held {
				st.HeldCPUs = append(st.HeldCPUs, k.threads...)
			} else {
				st.FreeCPUs = append(st.FreeCPUs, k.threads...)
			}
		}
		slices.Sort(st.HeldCPUs)
		slices.Sort(st.FreeCPUs)
	}
	return st
}

// NodeCount is the number of nodes, ready or not.
func (s *State) NodeCount() int { return s.live }

// Allocation returns the allocation of an instance.
func (s *State) Allocation(id string) (Allocation, bool) {
	a, ok := s.allocs[id]
	if !ok {
		return Allocation{}, false
	}
	return Allocation{Instance: a.inst, Node: s.nodes[a.node].name, CPUSet: slices.Clone(a.cpus)}, true
}

// Allocations lists every allocation, sorted by instance ID.
func (s *State) Allocations() []Allocation {
	ids := slices.Sorted(maps.Keys(s.allocs))
	out := make([]Allocation, len(ids))
	for i, id := range ids {
		out[i], _ = s.Allocation(id)
	}
	return out
}
