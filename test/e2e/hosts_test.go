package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// A LAN of hosts on one machine: a switch (a bridge in a namespace of its
// own) and one network namespace per host, each with one interface on the
// switch and its own address in lanPrefix.0/24. Processes of a host run
// in its namespace (nsenter --net=), so traffic between hosts crosses the
// switch as it would between machines.
const lanPrefix = "192.168.77"

// host is one machine of the LAN: a `berth server` or a `berth agent`.
type host struct {
	t       *testing.T
	name    string // s1..s3, n1..n3: the server's or node's name
	netns   string // path of the host's network namespace
	addr    string // its address on the LAN
	dataDir string
	args    []string // the berth command line of its process (after --data-dir)
	proc    *process
	logs    []*lockedBuffer // the output of every process it ran
}

// lan is the whole test cluster: three servers and three agents.
type lan struct {
	t        *testing.T
	switchNS string
	servers  []*host
	agents   []*host
	token    string // the admin API token
	caFile   string
}

// startLAN builds the switch and six hosts, starts `berth server` on
// the first three (one embedded etcd cluster) and `berth agent` on the
// other three, joined with the servers' join token, networking on; it
// returns once the three nodes are Ready. Everything goes when the test
// ends: processes, containers, mounts and namespaces.
func startLAN(t *testing.T) *lan {
	requireRoot(t)
	l := &lan{t: t, switchNS: makeNetns(t)}
	sw := filepath.Base(l.switchNS)
	l.ip(sw, "link", "add", "lan", "type", "bridge")
	l.ip(sw, "link", "set", "lan", "up")
	for i := range 6 {
		h := &host{t: t, netns: makeNetns(t), addr: fmt.Sprintf("%s.%d", lanPrefix, 11+i), dataDir: t.TempDir()}
		ns := filepath.Base(h.netns)
		port := fmt.Sprintf("lan%d", i+1)
		l.ip(sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns)
		l.ip(sw, "link", "set", port, "master", "lan", "up")
		l.ip(ns, "addr", "add", h.addr+"/24", "dev", "eth0")
		l.ip(ns, "link", "set", "eth0", "up")
		if i < 3 {
			h.name = fmt.Sprintf("s%d", i+1)
			l.servers = append(l.servers, h)
		} else {
			h.name = fmt.Sprintf("n%d", i-2)
			l.agents = append(l.agents, h)
		}
	}
	t.Cleanup(l.cleanup)

	// The image, on every server: an agent pulls from the server it talks to.
	for _, s := range l.servers {
		(&env{t: t, dataDir: s.dataDir}).demoImage()
	}

	var peers, urls []string
	for _, s := range l.servers {
		peers = append(peers, s.name+"=http://"+s.addr+":7380")
		urls = append(urls, "https://"+s.addr+":7443")
	}
	for _, s := range l.servers {
		s.args = []string{"server", "-v", "--name", s.name, "--listen", s.addr + ":7443",
			"--peer-listen", s.addr + ":7380", "--peers", strings.Join(peers, ",")}
		s.start()
	}
	// One server makes the cluster's secrets and prints the join hint;
	// every server writes the token and CA to its data dir.
	hint := regexp.MustCompile(`berth agent --server (\S+) --token (berth_\S+) --ca-pin (sha256:[0-9a-f]+)`)
	var m []string
	eventually(t, 60*time.Second, "a server's join hint", func() bool {
		for _, s := range l.servers {
			if m = hint.FindStringSubmatch(s.proc.out.String()); m != nil {
				return true
			}
		}
		return false
	})
	tls := filepath.Join(l.servers[0].dataDir, "tls")
	eventually(t, 30*time.Second, "the cluster's token on s1", func() bool {
		b, err := os.ReadFile(filepath.Join(tls, "token"))
		l.token = strings.TrimSpace(string(b))
		return err == nil && l.token != ""
	})
	l.caFile = filepath.Join(tls, "ca.crt")
	for _, s := range l.servers {
		eventually(t, 30*time.Second, "the API of "+s.name, func() bool {
			_, _, code := l.via(s, "get", "nodes")
			return code == 0
		})
	}

	for _, a := range l.agents {
		a.args = []string{"agent", "-v", "--name", a.name, "--address", a.addr,
			"--server", strings.Join(urls, ","), "--token", m[2], "--ca-pin", m[3]}
		a.start()
	}
	eventually(t, 60*time.Second, "nodes n1, n2 and n3 Ready", func() bool {
		for _, a := range l.agents {
			if !l.ready(a.name) {
				return false
			}
		}
		return true
	})
	return l
}

func (l *lan) ip(ns string, args ...string) {
	l.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		l.t.Fatalf("ip -n %s %s: %v: %s", ns, strings.Join(args, " "), err, out)
	}
}

// start runs the host's berth process in its namespace, in a session of its own.
func (h *host) start() {
	h.t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.netns, berthBin, "--data-dir", h.dataDir}, h.args...)...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	h.proc = &process{cmd: cmd, out: out, done: done}
	h.logs = append(h.logs, out)
}

// kill stops the host's berth process with SIGKILL, as a crash would.
func (h *host) kill() {
	if h.proc == nil {
		return
	}
	_ = h.proc.cmd.Process.Kill()
	<-h.proc.done
	h.proc = nil
}

// run runs berth with args in the host's namespace on its data dir.
func (h *host) run(args ...string) (string, string, int) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + h.netns, berthBin, "--data-dir", h.dataDir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("berth %s on %s: %v", strings.Join(args, " "), h.name, err)
	}
	return out.String(), errb.String(), 0
}

func (h *host) ok(args ...string) string {
	h.t.Helper()
	out, errOut, code := h.run(args...)
	if code != 0 {
		h.t.Fatalf("berth %s on %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), h.name, code, out, errOut)
	}
	return out
}

// hostContainer is a container of an agent's runtime, as `container ps -o json` shows it.
type hostContainer struct {
	ID      string            `json:"id"`
	State   string            `json:"state"`
	Pid     int               `json:"pid"`
	ShimPid int               `json:"shimPid"`
	Labels  map[string]string `json:"labels"`
}

// containers lists the agent's containers, exited ones too.
func (h *host) containers() []hostContainer {
	h.t.Helper()
	var list []hostContainer
	if err := json.Unmarshal([]byte(h.ok("container", "ps", "-a", "-o", "json")), &list); err != nil {
		h.t.Fatalf("container ps on %s: %v", h.name, err)
	}
	return list
}

// runningOf counts the agent's running containers of owner's instances.
func (h *host) runningOf(owner string) int {
	n := 0
	for _, c := range h.containers() {
		if c.State == "running" && strings.HasPrefix(c.Labels["berth.instance"], "default/"+owner+"-") {
			n++
		}
	}
	return n
}

// crash kills everything of the host at once with SIGKILL: its berth
// process, every process in its network namespace (the containers'
// shims among them) and every process in its runtime's cgroups (the
// containers), until none is left.
func (h *host) crash() {
	h.t.Helper()
	list := h.containers()
	rt, err := runtime.New(filepath.Join(h.dataDir, "containers"))
	if err != nil {
		h.t.Fatal(err)
	}
	parent := filepath.Dir(rt.CgroupPath("x"))
	pids := func() []int {
		var out []int
		if b, err := exec.Command("ip", "netns", "pids", filepath.Base(h.netns)).Output(); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if p, err := strconv.Atoi(f); err == nil {
					out = append(out, p)
				}
			}
		}
		for _, hier := range []string{"pids", "memory", "cpu", "unified", ""} {
			procs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", hier, parent, "*", "cgroup.procs"))
			for _, f := range procs {
				b, _ := os.ReadFile(f)
				for _, s := range strings.Fields(string(b)) {
					if p, err := strconv.Atoi(s); err == nil {
						out = append(out, p)
					}
				}
			}
		}
		return out
	}
	if h.proc != nil {
		_ = h.proc.cmd.Process.Kill()
	}
	for _, c := range list {
		for _, p := range []int{c.Pid, c.ShimPid} {
			if p > 0 {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	eventually(h.t, 10*time.Second, "every process of "+h.name+" to die", func() bool {
		left := pids()
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return len(left) == 0
	})
	if h.proc != nil {
		<-h.proc.done
		h.proc = nil
	}
}

// via runs berth as the cluster's admin against server s's API, from s's namespace.
func (l *lan) via(s *host, args ...string) (string, string, int) {
	l.t.Helper()
	return s.run(append([]string{"--server", "https://" + s.addr + ":7443", "--token", l.token, "--ca-file", l.caFile}, args...)...)
}

// admin runs berth as the cluster's admin through s1 and fails the test unless it exits 0.
func (l *lan) admin(args ...string) string {
	l.t.Helper()
	out, errOut, code := l.via(l.servers[0], args...)
	if code != 0 {
		l.t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

func (l *lan) applyYAML(yaml string) {
	l.t.Helper()
	f := filepath.Join(l.t.TempDir(), "spec.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		l.t.Fatal(err)
	}
	l.admin("apply", "-f", f)
}

func (l *lan) instances() []api.Instance {
	l.t.Helper()
	var list []api.Instance
	if err := json.Unmarshal([]byte(l.admin("get", "instances", "-o", "json")), &list); err != nil {
		l.t.Fatal(err)
	}
	return list
}

func (l *lan) nodes() []api.Node {
	l.t.Helper()
	var list []api.Node
	if err := json.Unmarshal([]byte(l.admin("get", "nodes", "-o", "json")), &list); err != nil {
		l.t.Fatal(err)
	}
	return list
}

func (l *lan) ready(node string) bool {
	for _, n := range l.nodes() {
		if n.Metadata.Name == node {
			return n.Status.Condition == api.NodeReady
		}
	}
	return false
}

// healthyOf lists owner's running, healthy instances with an address,
// and how many instances owner has in all.
func (l *lan) healthyOf(owner string) (healthy []api.Instance, all int) {
	for _, in := range l.instances() {
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

func (l *lan) agent(name string) *host {
	for _, a := range l.agents {
		if a.name == name {
			return a
		}
	}
	l.t.Fatalf("no agent %q", name)
	return nil
}

// perNode counts instances by node.
func perNode(insts []api.Instance) map[string]int {
	out := map[string]int{}
	for _, in := range insts {
		out[in.Spec.Node]++
	}
	return out
}

// cleanup kills every process, removes every agent's containers and
// their namespace pins; the namespaces themselves go in makeNetns's cleanup.
func (l *lan) cleanup() {
	for _, h := range append(append([]*host{}, l.agents...), l.servers...) {
		h.kill()
	}
	for _, a := range l.agents {
		var list []hostContainer
		if out, _, code := a.run("container", "ps", "-a", "-o", "json"); code == 0 {
			_ = json.Unmarshal([]byte(out), &list)
		}
		for _, c := range list {
			a.run("container", "rm", "--force", c.ID)
		}
		pins, _ := filepath.Glob(filepath.Join(a.dataDir, "net", "netns", "*"))
		spares, _ := filepath.Glob(filepath.Join(a.dataDir, "net", "netns", ".spare", "*"))
		for _, p := range append(pins, spares...) {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
	if l.t.Failed() {
		for _, h := range append(append([]*host{}, l.servers...), l.agents...) {
			for i, out := range h.logs {
				l.t.Logf("%s's output (process %d):\n%s", h.name, i+1, out)
			}
		}
	}
}
