package schedtest

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/berth-dev/berth/internal/scheduler"
)

// Runner runs the scheduler's data-driven scripts. Commands:
//
//	add-nodes            input: one line per node or range of nodes,
//	                     "n[1-3] cores=4 smt=2 numa=1 mem=8Gi pids=1000 zone=a";
//	                     unknown keys become labels; ready=false adds it NotReady
//	submit               input: one line per instance or range,
//	                     "web-[1-3] group=web cpu=500m mem=256Mi pids=10 prio=0
//	                     excl=2 ports=8080,53/udp spread=zone,node anti
//	                     where=\"zone in (a,b)\""; queues them
//	place [seed=N] [candidates=K] [no-preempt]
//	                     places the queue on the live state and prints the plan
//	plan [seed=N] ...    plans the queue on a snapshot and keeps the plan
//	verify               checks the kept plan against the live state
//	commit               applies the kept plan to the live state
//	fail-node N...       marks nodes NotReady; recover-node marks them Ready
//	remove-node N...     deletes nodes and their instances
//	remove-instance I... deletes allocations
//	label-node N k=v...  replaces a node's labels
//	allocate             input: "ID node=N ... cpus=0,4" plus submit keys;
//	                     records allocations made elsewhere
//	nodes                prints every node's usage
//	spread group=G key=K prints replicas per domain
type Runner struct {
	Cluster *Cluster
	pending []scheduler.Instance
	kept    *scheduler.Plan
}

// NewRunner starts a runner on an empty cluster.
func NewRunner() *Runner {
	c, _ := NewCluster(nil)
	return &Runner{Cluster: c}
}

// Handle runs one command and returns its output.
func (r *Runner) Handle(t *testing.T, d *datadriven.TestData) string {
	out, err := r.handle(d)
	if err != nil {
		return "error: " + err.Error() + "\n"
	}
	return out
}

// handle runs one script command.
// Long because it is the scripts' command table: one short case per command.
func (r *Runner) handle(d *datadriven.TestData) (string, error) {
	switch d.Cmd {
	case "add-nodes":
		return r.addNodes(d.Input)
	case "submit":
		var n int
		for _, line := range lines(d.Input) {
			insts, err := parseInstances(line)
			if err != nil {
				return "", err
			}
			r.pending = append(r.pending, insts...)
			n += len(insts)
		}
		return fmt.Sprintf("queued %d, %d pending\n", n, len(r.pending)), nil
	case "place", "plan":
		opts, err := options(d)
		if err != nil {
			return "", err
		}
		batch := r.pending
		r.pending = nil
		if d.Cmd == "place" {
			return FormatPlan(r.Cluster.Place(batch, opts)), nil
		}
		snap, _ := r.Cluster.Snapshot()
		r.kept = snap.Place(batch, opts)
		return FormatPlan(r.kept), nil
	case "verify", "commit":
		if r.kept == nil {
			return "", fmt.Errorf("%s: no kept plan", d.Cmd)
		}
		var cs []scheduler.Conflict
		if d.Cmd == "verify" {
			cs = r.Cluster.State().Verify(r.kept)
		} else {
			cs = r.Cluster.Commit(r.kept)
			r.kept = nil
		}
		return formatConflicts(cs), nil
	case "fail-node", "recover-node":
		for _, a := range d.CmdArgs {
			if err := r.Cluster.SetReady(a.Key, d.Cmd == "recover-node"); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	case "remove-node":
		var b strings.Builder
		for _, a := range d.CmdArgs {
			ids, err := r.Cluster.RemoveNode(a.Key)
			if err != nil {
				return "", err
			}
			fmt.Fprintf(&b, "removed %s with %d instances %v\n", a.Key, len(ids), ids)
		}
		return b.String(), nil
	case "remove-instance":
		for _, a := range d.CmdArgs {
			if err := r.Cluster.RemoveInstance(a.Key); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	case "label-node":
		if len(d.CmdArgs) == 0 {
			return "", fmt.Errorf("label-node: no node")
		}
		labels := map[string]string{}
		for _, a := range d.CmdArgs[1:] {
			labels[a.Key] = strings.Join(a.Vals, ",")
		}
		return "ok\n", r.Cluster.SetLabels(d.CmdArgs[0].Key, labels)
	case "allocate":
		for _, line := range lines(d.Input) {
			if err := r.allocate(line); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	case "nodes":
		return FormatNodes(r.Cluster.State()), nil
	case "spread":
		var group, key string
		for _, a := range d.CmdArgs {
			switch a.Key {
			case "group":
				group = strings.Join(a.Vals, "")
			case "key":
				key = strings.Join(a.Vals, "")
			}
		}
		return formatSpread(r.Cluster.State(), group, key), nil
	}
	return "", fmt.Errorf("unknown command %q", d.Cmd)
}

func options(d *datadriven.TestData) (scheduler.Options, error) {
	var o scheduler.Options
	for _, a := range d.CmdArgs {
		v := strings.Join(a.Vals, "")
		var err error
		switch a.Key {
		case "seed":
			o.Seed, err = strconv.ParseUint(v, 10, 64)
		case "candidates":
			o.Candidates, err = strconv.Atoi(v)
		case "no-preempt":
			o.NoPreemption = true
		default:
			err = fmt.Errorf("unknown option")
		}
		if err != nil {
			return o, fmt.Errorf("%s %s: %w", d.Cmd, a.Key, err)
		}
	}
	return o, nil
}

func lines(input string) []string {
	var out []string
	for l := range strings.SplitSeq(input, "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// fields splits a line on spaces, keeping double-quoted parts together.
func fields(line string) []string {
	var out []string
	var cur strings.Builder
	quoted, has := false, false
	for _, c := range line {
		switch {
		case c == '"':
			quoted, has = !quoted, true
		case c == ' ' && !quoted:
			if has {
				out = append(out, cur.String())
			}
			cur.Reset()
			has = false
		default:
			cur.WriteRune(c)
			has = true
		}
	}
	if has {
		out = append(out, cur.String())
	}
	return out
}

// expand turns "web-[1-3]" into web-1, web-2, web-3.
func expand(spec string) ([]string, error) {
	open := strings.IndexByte(spec, '[')
	if open < 0 || !strings.HasSuffix(spec, "]") {
		return []string{spec}, nil
	}
	lo, hi, ok := strings.Cut(spec[open+1:len(spec)-1], "-")
	a, err1 := strconv.Atoi(lo)
	b, err2 := strconv.Atoi(hi)
	if !ok || err1 != nil || err2 != nil || b < a {
		return nil, fmt.Errorf("name range %q: want prefix[lo-hi]", spec)
	}
	var out []string
	for i := a; i <= b; i++ {
		out = append(out, spec[:open]+strconv.Itoa(i))
	}
	return out, nil
}

// ParseMilliCPU reads "500m", "2" or "1.5" as millicores.
func ParseMilliCPU(s string) (int64, error) {
	if m, ok := strings.CutSuffix(s, "m"); ok {
		return strconv.ParseInt(m, 10, 64)
	}
	f, err := strconv.ParseFloat(s, 64)
	return int64(f * 1000), err
}

// ParseBytes reads "256Mi", "8Gi", "1G", "512Ki" or a plain byte count.
func ParseBytes(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40}, {"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}}
	for _, u := range units {
		if n, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(n, 64)
			return int64(f * float64(u.mult)), err
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

func (r *Runner) addNodes(input string) (string, error) {
	added := 0
	for _, line := range lines(input) {
		f := fields(line)
		names, err := expand(f[0])
		if err != nil {
			return "", err
		}
		sh := NodeShape{Cores: 4, Threads: 1, NUMA: 1, MemoryPerCPU: 2 * Gi}
		var mem, pids, milli int64 = -1, -1, -1
		ready := true
		labels := map[string]string{}
		for _, kv := range f[1:] {
			k, v, _ := strings.Cut(kv, "=")
			var err error
			switch k {
			case "cores":
				sh.Cores, err = strconv.Atoi(v)
			case "smt":
				sh.Threads, err = strconv.Atoi(v)
			case "numa":
				sh.NUMA, err = strconv.Atoi(v)
			case "mem":
				mem, err = ParseBytes(v)
			case "pids":
				pids, err = strconv.ParseInt(v, 10, 64)
			case "cpu":
				milli, err = ParseMilliCPU(v)
			case "ready":
				ready, err = strconv.ParseBool(v)
			default:
				labels[k] = v
			}
			if err != nil {
				return "", fmt.Errorf("add-nodes %s: %s: %w", f[0], kv, err)
			}
		}
		for _, name := range names {
			n := Node(name, sh, maps.Clone(labels))
			if sh.Cores == 0 {
				n.Topology = scheduler.Topology{}
			}
			n.Ready = ready
			if mem >= 0 {
				n.Capacity.MemoryBytes = mem
			}
			if pids >= 0 {
				n.Capacity.Pids = pids
			}
			if milli >= 0 {
				n.Capacity.MilliCPU = milli
			}
			if err := r.Cluster.AddNode(n); err != nil {
				return "", err
			}
			added++
		}
	}
	return fmt.Sprintf("added %d, %d nodes\n", added, r.Cluster.State().NodeCount()), nil
}

// parseInstances reads one submit line.
func parseInstances(line string) ([]scheduler.Instance, error) {
	f := fields(line)
	ids, err := expand(f[0])
	if err != nil {
		return nil, err
	}
	var t scheduler.Instance
	for _, kv := range f[1:] {
		if err := setInstanceField(&t, kv); err != nil {
			return nil, fmt.Errorf("instance %s: %s: %w", f[0], kv, err)
		}
	}
	out := make([]scheduler.Instance, len(ids))
	for i, id := range ids {
		out[i] = t
		out[i].ID = id
	}
	return out, nil
}

func setInstanceField(t *scheduler.Instance, kv string) error {
	k, v, _ := strings.Cut(kv, "=")
	var err error
	switch k {
	case "group":
		t.Group = v
	case "cpu":
		t.Resources.MilliCPU, err = ParseMilliCPU(v)
	case "mem":
		t.Resources.MemoryBytes, err = ParseBytes(v)
	case "pids":
		t.Resources.Pids, err = strconv.ParseInt(v, 10, 64)
	case "prio":
		t.Priority, err = strconv.Atoi(v)
	case "excl":
		t.ExclusiveCPUs, err = strconv.Atoi(v)
	case "ports":
		for p := range strings.SplitSeq(v, ",") {
			num, proto, _ := strings.Cut(p, "/")
			n, err := strconv.Atoi(num)
			if err != nil {
				return err
			}
			t.HostPorts = append(t.HostPorts, scheduler.Port{Number: n, Protocol: proto})
		}
	case "spread":
		t.Spread = strings.Split(v, ",")
	case "anti":
		t.AntiAffinity = true
	case "where":
		var c scheduler.Constraint
		if c, err = scheduler.ParseConstraint(v); err == nil {
			t.Constraints = append(t.Constraints, c)
		}
	default:
		return fmt.Errorf("unknown key")
	}
	return err
}

func (r *Runner) allocate(line string) error {
	f := fields(line)
	a := scheduler.Allocation{Instance: scheduler.Instance{ID: f[0]}}
	for _, kv := range f[1:] {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "node":
			a.Node = v
		case "cpus":
			for c := range strings.SplitSeq(v, ",") {
				n, err := strconv.Atoi(c)
				if err != nil {
					return fmt.Errorf("allocate %s: cpus: %w", f[0], err)
				}
				a.CPUSet = append(a.CPUSet, n)
			}
			a.Instance.ExclusiveCPUs = len(a.CPUSet)
		default:
			if err := setInstanceField(&a.Instance, kv); err != nil {
				return fmt.Errorf("allocate %s: %s: %w", f[0], kv, err)
			}
		}
	}
	return r.Cluster.AddAllocation(a)
}

// FormatPlan prints a plan: evictions, placements in the order they were
// made, then failures.
func FormatPlan(p *scheduler.Plan) string {
	var b strings.Builder
	for _, e := range p.Preemptions {
		fmt.Fprintf(&b, "evict %s (priority %d) on %s for %s\n", e.Instance, e.Priority, e.Node, e.For)
	}
	for _, pl := range p.Placements {
		fmt.Fprintf(&b, "%s -> %s", pl.Instance.ID, pl.Node)
		if len(pl.CPUSet) > 0 {
			fmt.Fprintf(&b, " cpus %s", ints(pl.CPUSet))
		}
		if len(pl.Reserved) > 0 {
			fmt.Fprintf(&b, " idle %s", ints(pl.Reserved))
		}
		b.WriteByte('\n')
	}
	for _, f := range p.Failures {
		fmt.Fprintf(&b, "fail %s: %s\n", f.Instance, f.Reason)
	}
	if b.Len() == 0 {
		return "empty plan\n"
	}
	return b.String()
}

func formatConflicts(cs []scheduler.Conflict) string {
	if len(cs) == 0 {
		return "ok\n"
	}
	var b strings.Builder
	for _, c := range cs {
		fmt.Fprintf(&b, "conflict %s on %s: %s\n", c.Instance, c.Node, c.Reason)
	}
	return b.String()
}

// FormatNodes prints each node's use of its capacity.
func FormatNodes(s *scheduler.State) string {
	var b strings.Builder
	for _, n := range s.Nodes() {
		state := "ready"
		if !n.Ready {
			state = "not-ready"
		}
		fmt.Fprintf(&b, "%s %s cpu %s/%s mem %s/%s pids %d/%d", n.Name, state,
			milli(n.Used.MilliCPU), milli(n.Capacity.MilliCPU),
			bytes(n.Used.MemoryBytes), bytes(n.Capacity.MemoryBytes),
			n.Used.Pids, n.Capacity.Pids)
		if len(n.HeldCPUs) > 0 {
			fmt.Fprintf(&b, " held %s", ints(n.HeldCPUs))
		}
		if len(n.Instances) > 0 {
			fmt.Fprintf(&b, ": %s", strings.Join(n.Instances, " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func formatSpread(s *scheduler.State, group, key string) string {
	counts := map[string]int{}
	for _, n := range s.Nodes() {
		dom := n.Name
		if key != scheduler.SpreadNode {
			dom = n.Labels[key]
		}
		if _, ok := counts[dom]; !ok {
			counts[dom] = 0
		}
		for _, id := range n.Instances {
			if a, ok := s.Allocation(id); ok && a.Instance.Group == group {
				counts[dom]++
			}
		}
	}
	var b strings.Builder
	for _, dom := range slices.Sorted(maps.Keys(counts)) {
		fmt.Fprintf(&b, "%s=%d ", dom, counts[dom])
	}
	return strings.TrimSpace(b.String()) + "\n"
}

func ints(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

func milli(m int64) string {
	if m%1000 == 0 {
		return strconv.FormatInt(m/1000, 10)
	}
	return strconv.FormatInt(m, 10) + "m"
}

func bytes(n int64) string {
	switch {
	case n >= Gi && n%Gi == 0:
		return fmt.Sprintf("%dGi", n/Gi)
	case n >= Mi && n%Mi == 0:
		return fmt.Sprintf("%dMi", n/Mi)
	}
	return strconv.FormatInt(n, 10)
}
