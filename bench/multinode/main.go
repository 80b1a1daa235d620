// Command multinode measures berth across machines made on one host: a
// switch and six network namespaces, each with its own address on a
// LAN, three running `berth server` and three `berth agent`. It times
// `berth scale` of a service to -replicas Running over the three agents,
// and the loss of a whole node (its agent and containers killed) until
// its replicas run elsewhere. It prints figures and asserts nothing.
// Run it as root.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

const lanPrefix = "192.168.77"

type host struct {
	name, ns, addr, dir string
	cmd                 *exec.Cmd
}

func (h *host) netns() string { return "/run/netns/" + h.ns }

type cluster struct {
	bin, work, sw   string
	servers, agents []*host
	token, caFile   string
	made            []string // namespaces to delete
}

func main() {
	bin := flag.String("berth", "bin/berth", "the berth binary to measure")
	replicas := flag.Int("replicas", 30, "replicas to scale the service to")
	flag.Parse()
	c := &cluster{}
	err := c.bench(*bin, *replicas)
	c.cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func (c *cluster) bench(bin string, replicas int) error {
	var err error
	if c.bin, err = filepath.Abs(bin); err != nil {
		return err
	}
	if c.work, err = os.MkdirTemp("", "berth-bench-multinode-"); err != nil {
		return err
	}
	t0 := time.Now()
	if err := c.up(); err != nil {
		return err
	}
	fmt.Printf("cluster of 3 servers and 3 agents, each in its own namespace on %s.0/24: up in %v\n",
		lanPrefix, time.Since(t0).Round(time.Millisecond))

	spec := filepath.Join(c.work, "web.yaml")
	if err := os.WriteFile(spec, []byte(`kind: Service
name: web
replicas: 3
placement: {spread: [node]}
template:
  image: bench/busybox:1
  command: ["sh", "-c", "hostname > /www/index.html; echo ok > /www/health; exec httpd -f -p 80 -h /www"]
  ports: [{name: http, container: 80}]
  health: {http: {port: 80, path: /health}, interval: 300ms, timeout: 500ms, failures: 1}
  resources: {cpu: 0.05, memory: 16Mi}
`), 0o644); err != nil {
		return err
	}
	t0 = time.Now()
	if _, err := c.admin("apply", "-f", spec); err != nil {
		return err
	}
	if _, err := c.waitHealthy(3, "", time.Minute); err != nil {
		return err
	}
	fmt.Printf("apply web (3 replicas, image pulled from the servers): 3 Running and healthy in %v\n", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if _, err := c.admin("scale", fmt.Sprintf("web=%d", replicas)); err != nil {
		return err
	}
	web, err := c.waitHealthy(replicas, "", 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("berth scale web=%d: %d Running and healthy over 3 agents in %v (per node %v)\n",
		replicas, replicas, time.Since(t0).Round(time.Millisecond), perNode(web))

	victim := c.agents[2]
	lost := perNode(web)[victim.name]
	if err := c.crash(victim); err != nil {
		return err
	}
	t0 = time.Now()
	var down time.Duration
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("node " + victim.name + " never went NotReady")
		}
		if !c.ready(victim.name) {
			down = time.Since(t0)
			break
		}
	}
	web, err = c.waitHealthy(replicas, victim.name, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("node %s killed with %d replicas: NotReady after %v; %d Running and healthy on the others after %v (per node %v)\n",
		victim.name, lost, down.Round(time.Millisecond), replicas, time.Since(t0).Round(time.Millisecond), perNode(web))
	return nil
}

// up makes the LAN, builds the image on every server, starts the servers
// and the agents, and waits for the three nodes to be Ready.
func (c *cluster) up() error {
	c.sw = fmt.Sprintf("berth-bench-%d-sw", os.Getpid())
	if err := c.netns(c.sw); err != nil {
		return err
	}
	if err := ip(c.sw, "link", "add", "lan", "type", "bridge"); err != nil {
		return err
	}
	if err := ip(c.sw, "link", "set", "lan", "up"); err != nil {
		return err
	}
	for i := range 6 {
		h := &host{ns: fmt.Sprintf("berth-bench-%d-h%d", os.Getpid(), i+1), addr: fmt.Sprintf("%s.%d", lanPrefix, 11+i),
			dir: filepath.Join(c.work, fmt.Sprintf("h%d", i+1))}
		if err := c.netns(h.ns); err != nil {
			return err
		}
		port := fmt.Sprintf("lan%d", i+1)
		for _, args := range [][]string{
			{c.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
			{c.sw, "link", "set", port, "master", "lan", "up"},
			{h.ns, "addr", "add", h.addr + "/24", "dev", "eth0"},
			{h.ns, "link", "set", "eth0", "up"},
		} {
			if err := ip(args[0], args[1:]...); err != nil {
				return err
			}
		}
		if i < 3 {
			h.name = fmt.Sprintf("s%d", i+1)
			c.servers = append(c.servers, h)
		} else {
			h.name = fmt.Sprintf("n%d", i-2)
			c.agents = append(c.agents, h)
		}
	}

	rootfs := filepath.Join(c.work, "rootfs")
	if err := runtimetest.WriteBusyboxRootfs(rootfs); err != nil {
		return err
	}
	var peers, urls []string
	for _, s := range c.servers {
		if _, err := c.run(s, "image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
			return err
		}
		peers = append(peers, s.name+"=http://"+s.addr+":7380")
		urls = append(urls, "https://"+s.addr+":7443")
	}
	for _, s := range c.servers {
		if err := c.start(s, "server", "--name", s.name, "--listen", s.addr+":7443",
			"--peer-listen", s.addr+":7380", "--peers", strings.Join(peers, ",")); err != nil {
			return err
		}
	}
	hint := regexp.MustCompile(`berth agent --server (\S+) --token (berth_\S+) --ca-pin (sha256:[0-9a-f]+)`)
	var m []string
	if err := wait(time.Minute, "a server's join hint", func() bool {
		for _, s := range c.servers {
			b, _ := os.ReadFile(filepath.Join(s.dir, "berth.log"))
			if m = hint.FindStringSubmatch(string(b)); m != nil {
				return true
			}
		}
		return false
	}); err != nil {
		return err
	}
	tls := filepath.Join(c.servers[0].dir, "tls")
	if err := wait(30*time.Second, "the cluster's token", func() bool {
		b, err := os.ReadFile(filepath.Join(tls, "token"))
		c.token = strings.TrimSpace(string(b))
		return err == nil && c.token != ""
	}); err != nil {
		return err
	}
	c.caFile = filepath.Join(tls, "ca.crt")
	if err := wait(30*time.Second, "s1's API", func() bool {
		_, err := c.admin("get", "nodes")
		return err == nil
	}); err != nil {
		return err
	}
	for _, a := range c.agents {
		if err := c.start(a, "agent", "--name", a.name, "--address", a.addr,
			"--server", strings.Join(urls, ","), "--token", m[2], "--ca-pin", m[3]); err != nil {
			return err
		}
	}
	return wait(time.Minute, "three nodes Ready", func() bool {
		for _, a := range c.agents {
			if !c.ready(a.name) {
				return false
			}
		}
		return true
	})
}

func (c *cluster) netns(name string) error {
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	c.made = append(c.made, name)
	return ip(name, "link", "set", "lo", "up")
}

func ip(ns string, args ...string) error {
	if out, err := exec.Command("ip", append([]string{"-n", ns}, args...)...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip -n %s %s: %w: %s", ns, strings.Join(args, " "), err, out)
	}
	return nil
}

// start runs berth in h's namespace, in a session of its own, its output to <dir>/berth.log.
func (c *cluster) start(h *host, args ...string) error {
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return err
	}
	log, err := os.Create(filepath.Join(h.dir, "berth.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	h.cmd = exec.Command("nsenter", append([]string{"--net=" + h.netns(), c.bin, "--data-dir", h.dir}, args...)...)
	h.cmd.Stdout, h.cmd.Stderr = log, log
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	return h.cmd.Start()
}

// run runs berth in h's namespace on its data dir.
func (c *cluster) run(h *host, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.netns(), c.bin, "--data-dir", h.dir}, args...)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("berth %s on %s: %w: %s", strings.Join(args, " "), h.name, err, errb.String())
	}
	return out.String(), nil
}

// admin runs berth as the cluster's admin through s1.
func (c *cluster) admin(args ...string) (string, error) {
	s := c.servers[0]
	return c.run(s, append([]string{"--server", "https://" + s.addr + ":7443", "--token", c.token, "--ca-file", c.caFile}, args...)...)
}

func (c *cluster) ready(node string) bool {
	out, err := c.admin("get", "nodes", "-o", "json")
	if err != nil {
		return false
	}
	var list []api.Node
	_ = json.Unmarshal([]byte(out), &list)
	for _, n := range list {
		if n.Metadata.Name == node {
			return n.Status.Condition == api.NodeReady
		}
	}
	return false
}

// waitHealthy waits for want running, healthy instances of web on nodes
// other than avoid.
func (c *cluster) waitHealthy(want int, avoid string, timeout time.Duration) ([]api.Instance, error) {
	var got []api.Instance
	err := wait(timeout, fmt.Sprintf("%d healthy replicas of web", want), func() bool {
		out, err := c.admin("get", "instances", "-o", "json")
		if err != nil {
			return false
		}
		var list []api.Instance
		if json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		got = got[:0]
		for _, in := range list {
			if in.Spec.Owner.Name == "web" && in.Spec.Node != avoid && in.Status.Phase == api.PhaseRunning && in.Status.Healthy {
				got = append(got, in)
			}
		}
		return len(got) == want
	})
	return got, err
}

type container struct {
	ID      string `json:"id"`
	Pid     int    `json:"pid"`
	ShimPid int    `json:"shimPid"`
}

func (c *cluster) containers(h *host) []container {
	var list []container
	if out, err := c.run(h, "container", "ps", "-a", "-o", "json"); err == nil {
		_ = json.Unmarshal([]byte(out), &list)
	}
	return list
}

// crash kills everything of h with SIGKILL: its berth process, every
// process in its namespace (the shims) and in its runtime's cgroups.
func (c *cluster) crash(h *host) error {
	list := c.containers(h)
	rt, err := runtime.New(filepath.Join(h.dir, "containers"))
	if err != nil {
		return err
	}
	parent := filepath.Dir(rt.CgroupPath("x"))
	if h.cmd != nil {
		_ = h.cmd.Process.Kill()
	}
	for _, ct := range list {
		for _, p := range []int{ct.Pid, ct.ShimPid} {
			if p > 0 {
				_ = syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}
	err = wait(10*time.Second, "every process of "+h.name+" to die", func() bool {
		var left []int
		if b, err := exec.Command("ip", "netns", "pids", h.ns).Output(); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if p, err := strconv.Atoi(f); err == nil {
					left = append(left, p)
				}
			}
		}
		for _, hier := range []string{"pids", "memory", "cpu", "unified", ""} {
			procs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", hier, parent, "*", "cgroup.procs"))
			for _, f := range procs {
				b, _ := os.ReadFile(f)
				for _, s := range strings.Fields(string(b)) {
					if p, err := strconv.Atoi(s); err == nil {
						left = append(left, p)
					}
				}
			}
		}
		for _, p := range left {
			_ = syscall.Kill(p, syscall.SIGKILL)
		}
		return len(left) == 0
	})
	if h.cmd != nil {
		_ = h.cmd.Wait()
		h.cmd = nil
	}
	return err
}

// cleanup kills every process, removes the agents' containers and
// namespace pins, deletes the namespaces and the work dir.
func (c *cluster) cleanup() {
	for _, h := range append(append([]*host{}, c.agents...), c.servers...) {
		if h.cmd != nil {
			_ = h.cmd.Process.Kill()
			_ = h.cmd.Wait()
		}
	}
	for _, a := range c.agents {
		for _, ct := range c.containers(a) {
			_, _ = c.run(a, "container", "rm", "--force", ct.ID)
		}
		pins, _ := filepath.Glob(filepath.Join(a.dir, "net", "netns", "*"))
		spares, _ := filepath.Glob(filepath.Join(a.dir, "net", "netns", ".spare", "*"))
		for _, p := range append(pins, spares...) {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	}
	for _, ns := range c.made {
		_ = exec.Command("ip", "netns", "del", ns).Run()
	}
	if c.work != "" {
		_ = os.RemoveAll(c.work)
	}
}

func perNode(insts []api.Instance) map[string]int {
	out := map[string]int{}
	for _, in := range insts {
		out[in.Spec.Node]++
	}
	return out
}

func wait(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}
