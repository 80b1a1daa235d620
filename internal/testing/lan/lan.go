// Package lan makes a LAN of network namespaces on one machine, with
// berth servers and agents on it, for tests and benchmarks.
//
// The LAN is a switch (a bridge in a namespace of its own) and one
// network namespace per host, each with one interface on the switch and
// its own address in Subnet. A host's processes run in its namespace
// (nsenter --net=), so traffic between hosts crosses the switch as it
// would between machines. The package only ever uses addresses in
// namespaces it made, and Close removes everything it made: processes,
// containers, mounts and namespaces. It needs root.
//
// The lifecycle is New (no side effects), Start, then Close, which copes
// with a Start that failed half-way. Nothing here fails a test or exits:
// every error is returned, and the caller decides what it means.
package lan

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// Subnet holds the hosts' addresses: the i-th host, counting from 0 with
// the servers first, has prefix.(11+i).
const Subnet = prefix + ".0/24"

const (
	prefix   = "192.168.77"
	apiPort  = "7443" // every server's API, on its LAN address
	peerPort = "7380" // every server's etcd peer port
)

// Config describes a LAN.
type Config struct {
	// Berth is the berth binary every host runs.
	Berth string
	// Dir holds the hosts' data dirs, one per host named after it. The
	// caller makes it, and removes it after Close; each process's
	// output stays there in berth-<n>.log.
	Dir string
	// Name starts the names of the namespaces (Name-sw for the switch,
	// Name-h1, Name-h2... for the hosts); it must be unique on the machine.
	Name string
	// Servers and Agents are how many hosts run `berth server` (s1,
	// s2...) and `berth agent` (n1, n2...).
	Servers, Agents int
	// Verbose runs the servers and agents with -v.
	Verbose bool
	// Before, when set, runs on every server's host before any server
	// starts: the place to build the images the agents pull from it.
	Before func(server *Host) error
	// Context, when set, cuts Start's and WaitHealthy's waits short once
	// it is done (an interrupted benchmark), so that the caller gets to
	// Close sooner. Close itself never depends on it.
	Context context.Context
}

// LAN is a switch and its hosts: servers forming one embedded etcd
// cluster, and agents joined to them with the cluster's join token,
// networking on.
type LAN struct {
	Servers []*Host
	Agents  []*Host

	cfg    Config
	sw     string   // the switch's namespace
	made   []string // the namespaces made so far, for Close
	token  string   // the admin API token
	caFile string
	// agentArgs are an agent's flags after its name and address: the
	// servers, the join token and the CA pin (AddAgent uses them too).
	agentArgs []string
}

// New describes the LAN cfg asks for, without making anything yet.
func New(cfg Config) *LAN {
	l := &LAN{cfg: cfg, sw: cfg.Name + "-sw"}
	for i := range cfg.Servers + cfg.Agents {
		h := &Host{lan: l, ns: fmt.Sprintf("%s-h%d", cfg.Name, i+1), Addr: fmt.Sprintf("%s.%d", prefix, 11+i)}
		if i < cfg.Servers {
			h.Name = fmt.Sprintf("s%d", i+1)
			l.Servers = append(l.Servers, h)
		} else {
			h.Name = fmt.Sprintf("n%d", i-cfg.Servers+1)
			l.Agents = append(l.Agents, h)
		}
		h.Netns = "/run/netns/" + h.ns
		h.DataDir = filepath.Join(cfg.Dir, h.Name)
	}
	return l
}

// hosts is every host, servers first.
func (l *LAN) hosts() []*Host {
	return append(slices.Clone(l.Servers), l.Agents...)
}

// Host is the server or agent named name, or nil.
func (l *LAN) Host(name string) *Host {
	for _, h := range l.hosts() {
		if h.Name == name {
			return h
		}
	}
	return nil
}

// joinHint is what a server prints for agents to join with.
var joinHint = regexp.MustCompile(`berth agent --server (\S+) --token \$\(cat (\S+)\) --ca-pin (sha256:[0-9a-f]+)`)

// Start makes the switch and the hosts, runs Before on the servers,
// starts `berth server` on every server and, once their APIs answer,
// `berth agent` on every agent, and returns once every agent's node is
// Ready. Call Close afterwards even if it fails.
//
// Long because it brings the LAN up in order: switch, hosts, servers, the
// join, then agents, each waited for before the next.
func (l *LAN) Start() error {
	c := l.cfg
	if c.Berth == "" || c.Dir == "" || c.Name == "" || c.Servers < 1 || c.Agents < 0 || c.Servers+c.Agents > 200 {
		return errors.New("lan: the config wants a binary, a dir, a name, and 1 to 200 hosts with a server among them")
	}
	if err := l.wire(); err != nil {
		return err
	}
	if c.Before != nil {
		for _, s := range l.Servers {
			if err := c.Before(s); err != nil {
				return fmt.Errorf("before server %s: %w", s.Name, err)
			}
		}
	}

	// The servers' etcd members meet over TLS with certificates of one
	// CA: one server makes the cluster's secrets, the others get copies.
	if _, err := l.Servers[0].Run("server", "init"); err != nil {
		return err
	}
	for _, s := range l.Servers[1:] {
		if err := ShareSecrets(l.Servers[0].DataDir, s.DataDir); err != nil {
			return err
		}
	}
	var peers, urls []string
	for _, s := range l.Servers {
		peers = append(peers, s.Name+"="+s.Addr+":"+peerPort)
		urls = append(urls, s.url())
	}
	for _, s := range l.Servers {
		s.args = l.command("server", "--name", s.Name, "--listen", s.Addr+":"+apiPort,
			"--peer-listen", s.Addr+":"+peerPort, "--peers", strings.Join(peers, ","))
		if err := s.Start(); err != nil {
			return err
		}
	}
	// One server makes the cluster's secrets and prints the join hint;
	// every server writes the token and CA to its data dir.
	var m []string
	if err := wait(l.ctx(), time.Minute, "a server's join hint", func() (bool, error) {
		for _, s := range l.Servers {
			if m = joinHint.FindStringSubmatch(s.output()); m != nil {
				return true, nil
			}
		}
		return false, nil
	}); err != nil {
		return err
	}
	// The hint names the file that holds the join token, never the token.
	b, err := os.ReadFile(m[2])
	if err != nil {
		return fmt.Errorf("the join token file the server names: %w", err)
	}
	joinToken := strings.TrimSpace(string(b))
	s1 := l.Servers[0]
	tls := filepath.Join(s1.DataDir, "tls")
	if err := wait(l.ctx(), 30*time.Second, "the cluster's token on "+s1.Name, func() (bool, error) {
		b, err := os.ReadFile(filepath.Join(tls, "token"))
		l.token = strings.TrimSpace(string(b))
		return err == nil && l.token != "", nil
	}); err != nil {
		return err
	}
	l.caFile = filepath.Join(tls, "ca.crt")
	for _, s := range l.Servers {
		if err := wait(l.ctx(), 30*time.Second, "the API of "+s.Name, func() (bool, error) {
			_, err := l.via(s, "get", "nodes")
			return err == nil, nil
		}); err != nil {
			return err
		}
	}

	l.agentArgs = []string{"--server", strings.Join(urls, ","), "--token", joinToken, "--ca-pin", m[3]}
	var names []string
	for _, a := range l.Agents {
		a.args = l.command("agent", append([]string{"--name", a.Name, "--address", a.Addr}, l.agentArgs...)...)
		if err := a.Start(); err != nil {
			return err
		}
		names = append(names, a.Name)
	}
	return wait(l.ctx(), time.Minute, "nodes "+strings.Join(names, ", ")+" Ready", func() (bool, error) {
		for _, a := range l.Agents {
			if ok, err := l.Ready(a.Name); !ok || err != nil {
				return false, err
			}
		}
		return true, nil
	})
}

// AddAgent adds a host to the started LAN and starts `berth agent` on it,
// named after the agents before it (n4 after n1 to n3), joined as they
// were; it returns once the agent runs, without waiting for its node to
// be Ready, so that a caller can time what follows the join.
func (l *LAN) AddAgent() (*Host, error) {
	if l.agentArgs == nil {
		return nil, errors.New("lan: add an agent: the LAN is not started")
	}
	i := len(l.Servers) + len(l.Agents)
	if i >= 200 {
		return nil, errors.New("lan: add an agent: 200 hosts already")
	}
	h := &Host{lan: l, ns: fmt.Sprintf("%s-h%d", l.cfg.Name, i+1), Addr: fmt.Sprintf("%s.%d", prefix, 11+i),
		Name: fmt.Sprintf("n%d", len(l.Agents)+1)}
	h.Netns = "/run/netns/" + h.ns
	h.DataDir = filepath.Join(l.cfg.Dir, h.Name)
	l.Agents = append(l.Agents, h)
	if err := l.wireHost(i, h); err != nil {
		return h, err
	}
	h.args = l.command("agent", append([]string{"--name", h.Name, "--address", h.Addr}, l.agentArgs...)...)
	return h, h.Start()
}

// ShareSecrets copies the cluster's secrets that "berth server init" made
// in one server's data dir to another's, as an operator would: the seal
// key and the CA.
func ShareSecrets(from, to string) error {
	for _, f := range []string{"seal.key", "tls/ca.crt", "tls/ca.key"} {
		b, err := os.ReadFile(filepath.Join(from, f))
		if err != nil {
			return fmt.Errorf("cluster secrets: %w", err)
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(to, f)), 0o700); err != nil {
			return fmt.Errorf("cluster secrets: %w", err)
		}
		if err := os.WriteFile(filepath.Join(to, f), b, 0o600); err != nil {
			return fmt.Errorf("cluster secrets: %w", err)
		}
	}
	return nil
}

// command is a server's or agent's berth command line, after --data-dir.
func (l *LAN) command(sub string, flags ...string) []string {
	if l.cfg.Verbose {
		return append([]string{sub, "-v"}, flags...)
	}
	return append([]string{sub}, flags...)
}

// wire makes the switch, then each host's data dir and namespace with
// one end of a veth pair (eth0) on the switch's bridge.
func (l *LAN) wire() error {
	if err := l.netns(l.sw); err != nil {
		return err
	}
	if err := ip(l.sw, "link", "add", "lan", "type", "bridge"); err != nil {
		return err
	}
	if err := ip(l.sw, "link", "set", "lan", "up"); err != nil {
		return err
	}
	for i, h := range l.hosts() {
		if err := l.wireHost(i, h); err != nil {
			return err
		}
	}
	return nil
}

// wireHost makes the i-th host's data dir and namespace, with one end of
// a veth pair (eth0) on the switch's bridge.
func (l *LAN) wireHost(i int, h *Host) error {
	if err := os.MkdirAll(h.DataDir, 0o755); err != nil {
		return err
	}
	if err := l.netns(h.ns); err != nil {
		return err
	}
	port := fmt.Sprintf("lan%d", i+1)
	for _, args := range [][]string{
		{l.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
		{l.sw, "link", "set", port, "master", "lan", "up"},
		{h.ns, "addr", "add", h.Addr + "/24", "dev", "eth0"},
		{h.ns, "link", "set", "eth0", "up"},
	} {
		if err := ip(args[0], args[1:]...); err != nil {
			return err
		}
	}
	return nil
}

// netns makes the network namespace name with its loopback up.
func (l *LAN) netns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	l.made = append(l.made, name)
	return ip(name, "link", "set", "lo", "up")
}

func ip(ns string, args ...string) error {
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s %s: %w: %s", ns, strings.Join(args, " "), err, out)
	}
	return nil
}

// via runs berth as the cluster's admin against server s's API, from s's namespace.
func (l *LAN) via(s *Host, args ...string) (string, error) {
	return s.run([]string{"--server", s.url(), "--token", l.token, "--ca-file", l.caFile}, args)
}

// AdminCommand is berth with args as the cluster's admin, run in the
// first server's namespace against its API over TLS with the admin
// token, as a client on another machine would; the caller starts it
// (and may stream its output, as of logs -f).
func (l *LAN) AdminCommand(ctx context.Context, args ...string) *exec.Cmd {
	return l.AdminCommandVia(ctx, l.Servers[0], args...)
}

// AdminCommandVia is AdminCommand through server s's API, from s's namespace.
func (l *LAN) AdminCommandVia(ctx context.Context, s *Host, args ...string) *exec.Cmd {
	return s.berth(ctx, append([]string{"--server", s.url(), "--token", l.token, "--ca-file", l.caFile}, args...)...)
}

// AdminCredentials are the first server's API URL, the admin token and
// the cluster CA's file, for clients of the API (which must dial from a
// namespace on the LAN).
func (l *LAN) AdminCredentials() (url, token, caFile string) {
	return l.Servers[0].url(), l.token, l.caFile
}

// Admin runs berth with args as the cluster's admin through the first
// server, and returns its stdout.
func (l *LAN) Admin(args ...string) (string, error) {
	return l.via(l.Servers[0], args...)
}

// Apply applies a spec in YAML through Admin.
func (l *LAN) Apply(yaml string) error {
	f, err := os.CreateTemp(l.cfg.Dir, "spec-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.WriteString(yaml)
	if err = errors.Join(err, f.Close()); err != nil {
		return err
	}
	_, err = l.Admin("apply", "-f", f.Name())
	return err
}

// Instances lists every instance of the cluster.
func (l *LAN) Instances() ([]api.Instance, error) {
	return adminJSON[api.Instance](l, "instances")
}

// Nodes lists every node of the cluster.
func (l *LAN) Nodes() ([]api.Node, error) {
	return adminJSON[api.Node](l, "nodes")
}

func adminJSON[T any](l *LAN, kind string) ([]T, error) {
	return adminJSONVia[T](l, l.Servers[0], kind)
}

func adminJSONVia[T any](l *LAN, s *Host, kind string) ([]T, error) {
	out, err := l.via(s, "get", kind, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list []T
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		return nil, fmt.Errorf("get %s: %w", kind, err)
	}
	return list, nil
}

// Ready reports whether node is Ready.
func (l *LAN) Ready(node string) (bool, error) {
	nodes, err := l.Nodes()
	for _, n := range nodes {
		if n.Metadata.Name == node {
			return n.Status.Condition == api.NodeReady, nil
		}
	}
	return false, err
}

// Healthy lists owner's running, healthy instances with an address, and
// counts owner's instances in all.
func (l *LAN) Healthy(owner string) (healthy []api.Instance, all int, err error) {
	list, err := l.Instances()
	healthy, all = healthyOf(list, owner)
	return healthy, all, err
}

// healthyOf picks owner's running, healthy instances with an address out
// of list, and counts owner's instances in it.
func healthyOf(list []api.Instance, owner string) (healthy []api.Instance, all int) {
	for _, in := range list {
		if in.Spec.Owner.Name != owner {
			continue
		}
		all++
		if in.Status.Phase == api.PhaseRunning && in.Status.Healthy && in.Status.IP != "" {
			healthy = append(healthy, in)
		}
	}
	return healthy, all
}

// WaitHealthy waits until owner has n instances as Healthy counts them
// on nodes other than those in avoid, and returns them. When it times
// out, its error says what its last look saw and how the nodes stood
// then (see describe): a wait that fails once in many runs has to say why.
func (l *LAN) WaitHealthy(owner string, n int, timeout time.Duration, avoid ...string) ([]api.Instance, error) {
	var got, last []api.Instance
	looked := false
	err := wait(l.ctx(), timeout, fmt.Sprintf("%d healthy instances of %s off %v", n, owner, avoid), func() (bool, error) {
		list, err := l.Instances()
		if err != nil {
			return false, err
		}
		healthy, _ := healthyOf(list, owner)
		got = got[:0]
		for _, in := range healthy {
			if !slices.Contains(avoid, in.Spec.Node) {
				got = append(got, in)
			}
		}
		last, looked = list, true
		return len(got) == n, nil
	})
	if !errors.Is(err, errTimedOut) {
		return got, err
	}
	nodes, nerr := l.nodesSeen()
	report := describe(owner, n, avoid, last, looked, nodes, nerr, time.Now())
	return got, fmt.Errorf("%w\n%s", err, report)
}

// nodesSeen lists the nodes through every server that answers, each node
// with the latest heartbeat any of them took: a server shows the time of
// the beats it took itself, or else of the node's last status write.
func (l *LAN) nodesSeen() ([]api.Node, error) {
	var nodes []api.Node
	var errs []error
	for _, s := range l.Servers {
		list, err := adminJSONVia[api.Node](l, s, "nodes")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if nodes == nil {
			nodes = list
			continue
		}
		for _, n := range list {
			for i := range nodes {
				if nodes[i].Metadata.Name == n.Metadata.Name && n.Status.LastHeartbeat.After(nodes[i].Status.LastHeartbeat) {
					nodes[i].Status.LastHeartbeat = n.Status.LastHeartbeat
				}
			}
		}
	}
	if nodes == nil {
		return nil, errors.Join(errs...)
	}
	return nodes, nil
}

// Bounds on what describe prints, so that a cluster of many nodes and
// instances fails with a message of a few lines still.
const (
	describeNodes  = 12  // nodes listed, and nodes whose instances are
	describeStates = 5   // distinct states of instances shown per node
	describeNames  = 3   // instances named per state
	describeText   = 120 // bytes of a message
)

// describe says what a wait for n healthy instances of owner off avoid
// saw at its last look (list, when looked): the healthy ones per node;
// the nodes (as listed after it, or why they could not be), each with
// its condition and the age of its last heartbeat;
// and every instance of owner by node, grouped by phase, health, reason
// and message, a few of each named. Its size is bounded whatever the
// cluster's.
func describe(owner string, n int, avoid []string, list []api.Instance, looked bool, nodes []api.Node, nodesErr error, now time.Time) string {
	var b strings.Builder
	if looked {
		healthy, all := healthyOf(list, owner)
		off := map[string]int{}
		count := 0
		for _, in := range healthy {
			if !slices.Contains(avoid, in.Spec.Node) {
				off[in.Spec.Node]++
				count++
			}
		}
		fmt.Fprintf(&b, "last look: %d of the %d wanted healthy off %v (per node %v); %s has %d instances, %d of them healthy\n",
			count, n, avoid, off, owner, all, len(healthy))
	} else {
		b.WriteString("last look: no list of the instances succeeded\n")
	}
	describeNodeList(&b, nodes, nodesErr, now)
	if looked {
		describeInstances(&b, owner, list)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// describeNodeList writes a line of the nodes for describe.
func describeNodeList(b *strings.Builder, nodes []api.Node, err error, now time.Time) {
	if err != nil {
		fmt.Fprintf(b, "nodes: %v\n", err)
		return
	}
	b.WriteString("nodes:")
	for i, nd := range nodes {
		if i == describeNodes {
			fmt.Fprintf(b, " and %d more", len(nodes)-i)
			break
		}
		fmt.Fprintf(b, " %s %s", nd.Metadata.Name, nd.Status.Condition)
		if at := nd.Status.LastHeartbeat; !at.IsZero() {
			fmt.Fprintf(b, " (beat %v ago)", now.Sub(at).Round(100*time.Millisecond))
		}
		if nd.Spec.Unschedulable {
			b.WriteString(" cordoned")
		}
		if nd.Spec.Draining {
			b.WriteString(" draining")
		}
		if m := nd.Status.Message; m != "" {
			fmt.Fprintf(b, " %q", clip(m))
		}
		b.WriteString(";")
	}
	b.WriteString("\n")
}

// describeInstances writes, for describe, owner's instances in list by
// node ("-" for those bound to none), grouped by state, the largest
// groups first.
func describeInstances(b *strings.Builder, owner string, list []api.Instance) {
	type state struct{ phase, health, reason, msg string }
	type group struct {
		state
		names []string
		n     int
	}
	byNode := map[string][]*group{}
	for _, in := range list {
		if in.Spec.Owner.Name != owner {
			continue
		}
		node := cmp.Or(in.Spec.Node, "-")
		health := "unhealthy"
		switch {
		case in.Status.Healthy && in.Status.IP == "":
			health = "healthy without an IP"
		case in.Status.Healthy:
			health = "healthy"
		}
		st := state{string(cmp.Or(in.Status.Phase, "-")), health, in.Status.Reason, clip(in.Status.Message)}
		i := slices.IndexFunc(byNode[node], func(g *group) bool { return g.state == st })
		if i < 0 {
			byNode[node] = append(byNode[node], &group{state: st})
			i = len(byNode[node]) - 1
		}
		g := byNode[node][i]
		g.n++
		if len(g.names) < describeNames {
			g.names = append(g.names, in.Metadata.Name)
		}
	}
	fmt.Fprintf(b, "instances of %s by node:", owner)
	if len(byNode) == 0 {
		b.WriteString(" none")
	}
	for i, node := range slices.Sorted(maps.Keys(byNode)) {
		if i == describeNodes {
			fmt.Fprintf(b, "\n  and %d more nodes", len(byNode)-i)
			break
		}
		groups := byNode[node]
		slices.SortStableFunc(groups, func(x, y *group) int { return y.n - x.n })
		fmt.Fprintf(b, "\n  %s:", node)
		for j, g := range groups {
			if j == describeStates {
				rest := 0
				for _, g := range groups[j:] {
					rest += g.n
				}
				fmt.Fprintf(b, " and %d more in %d other states;", rest, len(groups)-j)
				break
			}
			fmt.Fprintf(b, " %d %s %s", g.n, g.phase, g.health)
			if g.reason != "" {
				fmt.Fprintf(b, " (%s)", g.reason)
			}
			if g.msg != "" {
				fmt.Fprintf(b, " %q", g.msg)
			}
			fmt.Fprintf(b, " [%s", strings.Join(g.names, " "))
			if g.n > len(g.names) {
				b.WriteString(" ...")
			}
			b.WriteString("];")
		}
	}
	b.WriteString("\n")
}

// clip cuts s to about describeText bytes, at a rune's start.
func clip(s string) string {
	if len(s) <= describeText {
		return s
	}
	return strings.ToValidUTF8(s[:describeText], "") + "..."
}

// PerNode counts instances by node.
func PerNode(insts []api.Instance) map[string]int {
	out := map[string]int{}
	for _, in := range insts {
		out[in.Spec.Node]++
	}
	return out
}

// Logs calls logf with the output of every process each host ran,
// servers first.
func (l *LAN) Logs(logf func(format string, args ...any)) {
	for _, h := range l.hosts() {
		for i, f := range h.logs {
			b, _ := os.ReadFile(f)
			logf("%s's output (process %d):\n%s", h.Name, i+1, b)
		}
	}
}

// Close kills every host's berth process, removes the agents'
// containers, their namespaces' pins and their data tmpfs (mounts in the data
// dirs), and deletes the namespaces Start made. The data dirs stay, for the caller.
func (l *LAN) Close() {
	for _, h := range append(slices.Clone(l.Agents), l.Servers...) {
		h.Kill()
	}
	for _, a := range l.Agents {
		list, _ := a.Containers()
		for _, c := range list {
			_, _ = a.Run("container", "rm", "--force", c.ID)
		}
		// Whatever is still mounted in its data dir, deepest first: pinned
		// network namespaces, the tmpfs volumes an instance's containers
		// share, the tmpfs of its configs and secrets, and what a restore
		// cut short by a crash left in its work directory.
		mounts, _ := runtime.MountsUnder(a.DataDir)
		for _, p := range mounts {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
	for _, ns := range slices.Backward(l.made) {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	l.made = nil
}

// ctx is the LAN's Config.Context, or one never done.
func (l *LAN) ctx() context.Context {
	if l.cfg.Context != nil {
		return l.cfg.Context
	}
	return context.Background()
}

// errTimedOut is what wait's error wraps when the time ran out.
var errTimedOut = errors.New("timed out")

// wait polls cond until it holds, returns an error, or timeout passes or
// ctx ends.
func wait(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v waiting for %s", errTimedOut, timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
