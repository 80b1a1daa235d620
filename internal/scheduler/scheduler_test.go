package scheduler_test

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/scheduler/schedtest"
)

func TestParseConstraint(t *testing.T) {
	tests := []struct {
		in      string
		want    scheduler.Constraint
		wantErr bool
	}{
		{in: "node.labels.zone == eu-1", want: scheduler.Constraint{Key: "zone", Op: scheduler.OpEq, Values: []string{"eu-1"}}},
		{in: "node.label.zone==eu-1", want: scheduler.Constraint{Key: "zone", Op: scheduler.OpEq, Values: []string{"eu-1"}}},
		{in: "disk != hdd", want: scheduler.Constraint{Key: "disk", Op: scheduler.OpNe, Values: []string{"hdd"}}},
		{in: "node.labels.disk in (ssd, nvme)", want: scheduler.Constraint{Key: "disk", Op: scheduler.OpIn, Values: []string{"ssd", "nvme"}}},
		{in: "zone not in (a,b)", want: scheduler.Constraint{Key: "zone", Op: scheduler.OpNotIn, Values: []string{"a", "b"}}},
		{in: "node.name == n7", want: scheduler.Constraint{Key: "node.name", Op: scheduler.OpEq, Values: []string{"n7"}}},
		{in: "zone", wantErr: true},
		{in: "== a", wantErr: true},
		{in: "zone ==", wantErr: true},
		{in: "zone in ()", wantErr: true},
	}
	for _, tt := range tests {
		got, err := scheduler.ParseConstraint(tt.in)
		if tt.wantErr {
			if !errors.Is(err, scheduler.ErrInvalid) {
				t.Errorf("ParseConstraint(%q) = %v, %v; want ErrInvalid", tt.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseConstraint(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		}
	}
}

// place runs one instance on a fresh state and returns its placement or
// failure reason.
func place(t *testing.T, nodes []scheduler.Node, allocs []scheduler.Allocation, inst scheduler.Instance) (scheduler.Placement, string) {
	t.Helper()
	s, err := scheduler.NewState(nodes, allocs)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Place([]scheduler.Instance{inst}, scheduler.Options{Seed: 1})
	if len(p.Failures) > 0 {
		return scheduler.Placement{}, p.Failures[0].Reason
	}
	return p.Placements[0], ""
}

func TestConstraintsPickNodes(t *testing.T) {
	nodes := []scheduler.Node{
		schedtest.Node("a", schedtest.NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, map[string]string{"zone": "z1", "disk": "ssd"}),
		schedtest.Node("b", schedtest.NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, map[string]string{"zone": "z2"}),
		schedtest.Node("c", schedtest.NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, map[string]string{"zone": "z3", "disk": "hdd"}),
	}
	tests := []struct {
		where string
		want  []string // nodes that may be chosen
	}{
		{"zone == z2", []string{"b"}},
		{"zone != z1", []string{"b", "c"}},
		{"disk != ssd", []string{"b", "c"}}, // absent label differs
		{"zone in (z1,z3)", []string{"a", "c"}},
		{"disk not in (ssd)", []string{"b", "c"}},
		{"disk in (ssd,hdd)", []string{"a", "c"}},
		{"node.name == c", []string{"c"}},
		{"zone == nowhere", nil},
	}
	for _, tt := range tests {
		c, err := scheduler.ParseConstraint(tt.where)
		if err != nil {
			t.Fatal(err)
		}
		// Every seed must land on an allowed node.
		for seed := range uint64(8) {
			s, _ := scheduler.NewState(nodes, nil)
			p := s.Place([]scheduler.Instance{{ID: "x", Constraints: []scheduler.Constraint{c}}}, scheduler.Options{Seed: seed})
			if tt.want == nil {
				if len(p.Failures) != 1 || !strings.Contains(p.Failures[0].Reason, "3 not matching node.labels.zone == nowhere") {
					t.Errorf("%s: want failure, got %+v", tt.where, p)
				}
				continue
			}
			if len(p.Placements) != 1 || !slices.Contains(tt.want, p.Placements[0].Node) {
				t.Errorf("%s seed %d: placed %+v, want one of %v", tt.where, seed, p, tt.want)
			}
		}
	}
}

func TestExclusiveCPUs(t *testing.T) {
	smt := func(name string, cores, numa int) scheduler.Node {
		return schedtest.Node(name, schedtest.NodeShape{Cores: cores, Threads: 2, NUMA: numa, MemoryPerCPU: schedtest.Gi}, nil)
	}
	flat := func(name string, cores, numa int) scheduler.Node {
		return schedtest.Node(name, schedtest.NodeShape{Cores: cores, Threads: 1, NUMA: numa, MemoryPerCPU: schedtest.Gi}, nil)
	}
	held := func(node string, cpus ...int) scheduler.Allocation {
		return scheduler.Allocation{Instance: scheduler.Instance{ID: fmt.Sprint("held", cpus), ExclusiveCPUs: len(cpus)}, Node: node, CPUSet: cpus}
	}
	tests := []struct {
		name      string
		nodes     []scheduler.Node
		allocs    []scheduler.Allocation
		excl      int
		wantNode  string
		wantCPUs  []int
		wantIdle  []int
		wantError string
	}{
		{name: "both siblings of one core", nodes: []scheduler.Node{smt("s", 4, 1)}, excl: 2, wantNode: "s", wantCPUs: []int{0, 4}},
		{name: "two whole cores", nodes: []scheduler.Node{smt("s", 4, 1)}, excl: 4, wantNode: "s", wantCPUs: []int{0, 1, 4, 5}},
		{name: "odd request holds the sibling idle", nodes: []scheduler.Node{smt("s", 4, 1)}, excl: 3, wantNode: "s", wantCPUs: []int{0, 1, 4}, wantIdle: []int{5}},
		{name: "non-SMT node preferred for odd request", nodes: []scheduler.Node{smt("s", 4, 1), flat("f", 4, 1)}, excl: 1, wantNode: "f", wantCPUs: []int{0}},
		{
			name: "fits one NUMA node: the tighter one", nodes: []scheduler.Node{flat("f", 8, 2)},
			allocs: []scheduler.Allocation{held("f", 4)}, excl: 3, wantNode: "f", wantCPUs: []int{5, 6, 7},
		},
		{
			name: "spans NUMA nodes only when needed", nodes: []scheduler.Node{flat("f", 8, 2)},
			allocs: []scheduler.Allocation{held("f", 0), held("f", 4)}, excl: 4, wantNode: "f", wantCPUs: []int{1, 2, 3, 5},
		},
		{
			name: "single NUMA beats spanning elsewhere", nodes: []scheduler.Node{flat("span", 4, 2), flat("one", 8, 1)},
			excl: 3, wantNode: "one", wantCPUs: []int{0, 1, 2},
		},
		{
			name: "half-held cores are not free", nodes: []scheduler.Node{smt("s", 2, 1)},
			allocs: []scheduler.Allocation{held("s", 0)}, excl: 2, wantNode: "s", wantCPUs: []int{1, 3},
		},
		{
			name: "never split: fails when no whole cores", nodes: []scheduler.Node{smt("s", 2, 1)},
			allocs: []scheduler.Allocation{held("s", 0)}, excl: 3, wantError: "0/1 nodes: 1 too few whole free cores for 3 cpus",
		},
		{
			name: "no topology", nodes: []scheduler.Node{{Name: "bare", Ready: true, Capacity: scheduler.Resources{MilliCPU: 8000, MemoryBytes: schedtest.Gi, Pids: 10}}},
			excl: 1, wantError: "0/1 nodes: 1 no cpu topology",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pl, reason := place(t, tt.nodes, tt.allocs, scheduler.Instance{ID: "pin", ExclusiveCPUs: tt.excl})
			if tt.wantError != "" {
				if reason != tt.wantError {
					t.Fatalf("reason %q, want %q", reason, tt.wantError)
				}
				return
			}
			if reason != "" {
				t.Fatalf("failed: %s", reason)
			}
			if pl.Node != tt.wantNode || !slices.Equal(pl.CPUSet, tt.wantCPUs) || !slices.Equal(pl.Reserved, tt.wantIdle) {
				t.Fatalf("got %s cpus %v idle %v, want %s cpus %v idle %v", pl.Node, pl.CPUSet, pl.Reserved, tt.wantNode, tt.wantCPUs, tt.wantIdle)
			}
		})
	}
}

// TestReasonAtScale checks the aggregated reason on a cluster large enough
// for thousands separators.
func TestReasonAtScale(t *testing.T) {
	var nodes []scheduler.Node
	var allocs []scheduler.Allocation
	for i := range 1500 {
		name := fmt.Sprint("n", i)
		mem := 2 * schedtest.Gi
		if i%3 == 0 {
			mem = 64 * schedtest.Gi
			allocs = append(allocs, scheduler.Allocation{Node: name, Instance: scheduler.Instance{
				ID: fmt.Sprint("edge", i), HostPorts: []scheduler.Port{{Number: 8080}}}})
		}
		nodes = append(nodes, scheduler.Node{Name: name, Ready: i != 7,
			Capacity: scheduler.Resources{MilliCPU: 4000, MemoryBytes: mem, Pids: 100}})
	}
	pl, reason := place(t, nodes, allocs, scheduler.Instance{ID: "web",
		HostPorts: []scheduler.Port{{Number: 8080}}, Resources: scheduler.Resources{MemoryBytes: 8 * schedtest.Gi}})
	if want := "0/1,500 nodes: 999 insufficient memory, 500 port 8080 in use, 1 node not ready"; reason != want {
		t.Fatalf("got %+v %q, want %q", pl, reason, want)
	}
	// UDP 8080 is another port.
	if pl, reason := place(t, nodes, allocs, scheduler.Instance{ID: "dns",
		HostPorts: []scheduler.Port{{Number: 8080, Protocol: "udp"}}, Resources: scheduler.Resources{MemoryBytes: 8 * schedtest.Gi}}); reason != "" {
		t.Fatalf("udp port blocked by tcp: %+v %q", pl, reason)
	}
}

func TestNewStateRejects(t *testing.T) {
	n := schedtest.Node("n", schedtest.NodeShape{Cores: 2, Threads: 2, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil)
	tests := []struct {
		name   string
		nodes  []scheduler.Node
		allocs []scheduler.Allocation
		want   error
	}{
		{"duplicate node", []scheduler.Node{n, n}, nil, scheduler.ErrDuplicateNode},
		{"unknown node", []scheduler.Node{n}, []scheduler.Allocation{{Instance: scheduler.Instance{ID: "a"}, Node: "m"}}, scheduler.ErrUnknownNode},
		{"duplicate instance", []scheduler.Node{n}, []scheduler.Allocation{{Instance: scheduler.Instance{ID: "a"}, Node: "n"}, {Instance: scheduler.Instance{ID: "a"}, Node: "n"}}, scheduler.ErrDuplicateInstance},
		{"cpu sets on one core", []scheduler.Node{n}, []scheduler.Allocation{{Instance: scheduler.Instance{ID: "a"}, Node: "n", CPUSet: []int{0}}, {Instance: scheduler.Instance{ID: "b"}, Node: "n", CPUSet: []int{2}}}, scheduler.ErrDoesNotFit},
		{"cpu not on node", []scheduler.Node{n}, []scheduler.Allocation{{Instance: scheduler.Instance{ID: "a"}, Node: "n", CPUSet: []int{9}}}, scheduler.ErrInvalid},
		{"cpu id out of range", []scheduler.Node{{Name: "t", Topology: scheduler.Topology{Cores: []scheduler.Core{{ID: 0, Threads: []int{-1}}}}}}, nil, scheduler.ErrInvalid},
		{"thread listed twice", []scheduler.Node{{Name: "t", Topology: scheduler.Topology{Cores: []scheduler.Core{{ID: 0, Threads: []int{0}}, {ID: 1, Threads: []int{0}}}}}}, nil, scheduler.ErrInvalid},
	}
	for _, tt := range tests {
		if _, err := scheduler.NewState(tt.nodes, tt.allocs); !errors.Is(err, tt.want) {
			t.Errorf("%s: err %v, want %v", tt.name, err, tt.want)
		}
	}
}

func TestInvalidAndDuplicateInstances(t *testing.T) {
	s, _ := scheduler.NewState([]scheduler.Node{schedtest.Node("n", schedtest.NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil)}, nil)
	p := s.Place([]scheduler.Instance{
		{ID: "ok"}, {ID: "ok"}, {ID: ""}, {ID: "neg", Resources: scheduler.Resources{MilliCPU: -1}},
		{ID: "port", HostPorts: []scheduler.Port{{Number: 70000}}},
	}, scheduler.Options{})
	if len(p.Placements) != 1 || len(p.Failures) != 4 {
		t.Fatalf("plan %s", schedtest.FormatPlan(p))
	}
	p = s.Place([]scheduler.Instance{{ID: "ok"}}, scheduler.Options{})
	if len(p.Failures) != 1 || p.Failures[0].Reason != "already allocated on n" {
		t.Fatalf("plan %s", schedtest.FormatPlan(p))
	}
}

// TestSyntheticClusterAtScale places a mixed workload on a mixed cluster
// and checks that all of it lands, deterministically, within capacity.
func TestSyntheticClusterAtScale(t *testing.T) {
	nodes, insts := 2000, 20000
	if testing.Short() {
		nodes, insts = 500, 5000
	}
	run := func() (*scheduler.State, []*scheduler.Plan) {
		s, err := scheduler.NewState(schedtest.Nodes(nodes, 7), nil)
		if err != nil {
			t.Fatal(err)
		}
		work := schedtest.Workload(insts, 7, "")
		var plans []*scheduler.Plan
		for b := 0; b < len(work); b += 1000 {
			plans = append(plans, s.Place(work[b:min(b+1000, len(work))], scheduler.Options{Seed: uint64(b)}))
		}
		return s, plans
	}
	s1, p1 := run()
	s2, p2 := run()
	if !reflect.DeepEqual(p1, p2) || !reflect.DeepEqual(s1.Allocations(), s2.Allocations()) {
		t.Fatal("same cluster, workload and seeds gave different plans")
	}
	placed := 0
	for _, p := range p1 {
		placed += len(p.Placements)
		for _, f := range p.Failures {
			t.Errorf("failure on a third-full cluster: %s: %s", f.Instance, f.Reason)
		}
	}
	if placed != insts {
		t.Fatalf("placed %d of %d", placed, insts)
	}
	zoneOf := map[string]string{}
	for _, n := range s1.Nodes() {
		if n.Used.MilliCPU > n.Capacity.MilliCPU || n.Used.MemoryBytes > n.Capacity.MemoryBytes || n.Used.Pids > n.Capacity.Pids {
			t.Fatalf("node %s over-committed: %+v of %+v", n.Name, n.Used, n.Capacity)
		}
		zoneOf[n.Name] = n.Labels["zone"]
	}
	// Groups spread over zones, without constraints, on a cluster with
	// room everywhere: zones differ by at most one replica.
	perZone := map[string]map[string]int{}
	for _, a := range s1.Allocations() {
		if len(a.Instance.Spread) == 0 || a.Instance.Spread[0] != "zone" || len(a.Instance.Constraints) > 0 {
			continue
		}
		g := perZone[a.Instance.Group]
		if g == nil {
			g = map[string]int{}
			for _, z := range schedtest.Zones {
				g[z] = 0
			}
			perZone[a.Instance.Group] = g
		}
		g[zoneOf[a.Node]]++
	}
	if len(perZone) == 0 {
		t.Fatal("workload has no zone-spread groups")
	}
	for group, zones := range perZone {
		lo, hi := 1<<30, 0
		for _, c := range zones {
			lo, hi = min(lo, c), max(hi, c)
		}
		if hi-lo > 1 {
			t.Errorf("group %s uneven over zones: %v", group, zones)
		}
	}
}

// TestOptimisticCommit: two schedulers plan from one snapshot; the first
// commits, the second's commit keeps what still fits and reports the rest.
func TestOptimisticCommit(t *testing.T) {
	c, err := schedtest.NewCluster(schedtest.Nodes(50, 3))
	if err != nil {
		t.Fatal(err)
	}
	snapA, _ := c.Snapshot()
	snapB, _ := c.Snapshot()
	// Both fill the same cluster with big instances, so they collide.
	big := func(prefix string) []scheduler.Instance {
		var out []scheduler.Instance
		for i := range 400 {
			out = append(out, scheduler.Instance{ID: fmt.Sprint(prefix, i), Resources: scheduler.Resources{MilliCPU: 4000, MemoryBytes: 8 * schedtest.Gi}})
		}
		return out
	}
	pa := snapA.Place(big("a"), scheduler.Options{Seed: 1})
	pb := snapB.Place(big("b"), scheduler.Options{Seed: 2})
	if cs := c.Commit(pa); len(cs) != 0 {
		t.Fatalf("first commit on an unchanged state conflicts: %v", cs)
	}
	verified := c.State().Verify(pb)
	cs := c.Commit(pb)
	if len(cs) == 0 {
		t.Fatal("second plan on a full cluster committed without conflict")
	}
	if !reflect.DeepEqual(verified, cs) {
		t.Fatal("verify and commit disagree")
	}
	for _, n := range c.State().Nodes() {
		if n.Used.MilliCPU > n.Capacity.MilliCPU || n.Used.MemoryBytes > n.Capacity.MemoryBytes {
			t.Fatalf("node %s over-committed after commit: %+v of %+v", n.Name, n.Used, n.Capacity)
		}
	}
	if got := len(c.State().Allocations()); got != len(pa.Placements)+len(pb.Placements)-len(cs) {
		t.Fatalf("%d allocations, want %d", got, len(pa.Placements)+len(pb.Placements)-len(cs))
	}
}

// TestBinPackingFillsNodes: equal small instances fill whole nodes one
// after another instead of scattering, whatever the seed.
func TestBinPackingFillsNodes(t *testing.T) {
	var nodes []scheduler.Node
	for i := range 100 {
		nodes = append(nodes, schedtest.Node(fmt.Sprint("n", i), schedtest.NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil))
	}
	var batch []scheduler.Instance
	for i := range 40 {
		batch = append(batch, scheduler.Instance{ID: fmt.Sprint("i", i), Resources: scheduler.Resources{MilliCPU: 1000, MemoryBytes: schedtest.Gi / 2}})
	}
	for seed := range uint64(5) {
		s, _ := scheduler.NewState(nodes, nil)
		s.Place(batch, scheduler.Options{Seed: seed})
		used := 0
		for _, n := range s.Nodes() {
			if len(n.Instances) > 0 {
				used++
			}
		}
		if used != 10 {
			t.Errorf("seed %d: 40 one-CPU instances on %d four-CPU nodes, want 10", seed, used)
		}
	}
}

// TestUsedNodeBeatsEmptyNode: a node already in use takes the next small
// instance even when an empty small node would be fuller afterwards, so
// empty nodes stay whole.
func TestUsedNodeBeatsEmptyNode(t *testing.T) {
	nodes := []scheduler.Node{
		schedtest.Node("big", schedtest.NodeShape{Cores: 64, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil),
		schedtest.Node("small", schedtest.NodeShape{Cores: 2, Threads: 1, NUMA: 1, MemoryPerCPU: schedtest.Gi}, nil),
	}
	allocs := []scheduler.Allocation{{Node: "big", Instance: scheduler.Instance{ID: "old", Resources: scheduler.Resources{MilliCPU: 1000}}}}
	pl, reason := place(t, nodes, allocs, scheduler.Instance{ID: "new", Resources: scheduler.Resources{MilliCPU: 1000, MemoryBytes: schedtest.Gi}})
	if pl.Node != "big" {
		t.Fatalf("placed on %q (%s), want big", pl.Node, reason)
	}
}

// A cordoned node takes nothing new and is explained as cordoned, apart
// from nodes that are not ready.
func TestCordonedReason(t *testing.T) {
	nodes := []scheduler.Node{
		{Name: "a", Ready: true, Cordoned: true, Capacity: scheduler.Resources{MilliCPU: 4000, MemoryBytes: schedtest.Gi, Pids: 100}},
		{Name: "b", Ready: false, Capacity: scheduler.Resources{MilliCPU: 4000, MemoryBytes: schedtest.Gi, Pids: 100}},
	}
	pl, reason := place(t, nodes, nil, scheduler.Instance{ID: "web"})
	if want := "0/2 nodes: 1 node cordoned (SchedulingDisabled), 1 node not ready"; reason != want {
		t.Fatalf("got %+v %q, want %q", pl, reason, want)
	}
	nodes[0].Cordoned = false
	if pl, reason := place(t, nodes, nil, scheduler.Instance{ID: "web"}); reason != "" || pl.Node != "a" {
		t.Fatalf("uncordoned: %+v %q", pl, reason)
	}
}
