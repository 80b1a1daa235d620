package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// cluster is a running `berth up` with its own data dir and, unless it
// runs with --no-network, its own network namespace: its bridge, tables
// and DNS server stay off the host's network.
type cluster struct {
	*env
	up    *exec.Cmd
	args  []string // extra `berth up` flags
	netns string   // path of the namespace berth up runs in; "" for the host's
}

var netnsSeq atomic.Int64

func startCluster(t *testing.T, upArgs ...string) *cluster {
	return startClusterIn(t, newEnv(t), upArgs...)
}

// startClusterIn is startCluster on a data dir the test prepared.
func startClusterIn(t *testing.T, e *env, upArgs ...string) *cluster {
	e.demoImage()
	c := &cluster{env: e, args: upArgs}
	if !slices.Contains(upArgs, "--no-network") {
		c.netns = makeNetns(t)
	}
	c.start()
	t.Cleanup(func() {
		c.kill()
		// Leave no containers behind: they outlive berth up by design.
		removeContainers(e)
		// The containers' pinned namespaces are mounts in the data dir.
		pins, _ := filepath.Glob(filepath.Join(e.dataDir, "net", "netns", "*"))
		spares, _ := filepath.Glob(filepath.Join(e.dataDir, "net", "netns", ".spare", "*"))
		// Without a network, an instance of several containers pins its own.
		pods, _ := filepath.Glob(filepath.Join(e.dataDir, "containers", ".pods", "*"))
		// Its tmpfs volumes are mounts there too.
		tmpfs, _ := filepath.Glob(filepath.Join(e.dataDir, "containers", ".pod-volumes", "*", "*"))
		pods = append(pods, tmpfs...)
		for _, p := range append(append(pins, spares...), pods...) {
			_ = syscall.Unmount(p, syscall.MNT_DETACH)
		}
	})
	return c
}

// makeNetns makes a network namespace with loopback up, removed when the test ends.
func makeNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("berth-e2e-%d-%d", os.Getpid(), netnsSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("loopback up in %s: %v: %s", name, err, out)
	}
	return "/run/netns/" + name
}

// inNetns runs a command in the cluster's network namespace (only that:
// the mount namespace stays the host's, so paths mean the same).
func (c *cluster) inNetns(name string, args ...string) *exec.Cmd {
	if c.netns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=" + c.netns, name}, args...)...)
}

func (c *cluster) start() {
	c.t.Helper()
	c.up = c.inNetns(berthBin, append([]string{"--data-dir", c.dataDir, "up"}, c.args...)...)
	log, err := os.OpenFile(filepath.Join(c.dataDir, "up.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	c.up.Stdout, c.up.Stderr = log, log
	c.up.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.up.Start(); err != nil {
		c.t.Fatal(err)
	}
	// The API answers before the node's agent has joined; tests start
	// from a cluster whose node is there, as a user sees it after up.
	eventually(c.t, 60*time.Second, "berth up to answer with its node", func() bool {
		out, _, code := c.run("get", "nodes", "-o", "json")
		var nodes []api.Node
		return code == 0 && jsonOut(out, &nodes) == nil && len(nodes) > 0
	})
}

// kill stops berth up with SIGKILL, as a crash would.
func (c *cluster) kill() {
	if c.up == nil || c.up.Process == nil {
		return
	}
	_ = c.up.Process.Kill()
	_ = c.up.Wait()
	c.up = nil
}

func (c *cluster) instances() []api.Instance {
	c.t.Helper()
	var list []api.Instance
	if err := json.Unmarshal([]byte(c.ok("get", "instances", "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	return list
}

func (c *cluster) running(owner string) []api.Instance {
	var out []api.Instance
	for _, in := range c.instances() {
		if in.Spec.Owner.Name == owner && in.Status.Phase == api.PhaseRunning {
			out = append(out, in)
		}
	}
	return out
}

func (c *cluster) waitRunning(owner string, n int) []api.Instance {
	c.t.Helper()
	var got []api.Instance
	eventually(c.t, 60*time.Second, strconv.Itoa(n)+" running instances of "+owner, func() bool {
		got = c.running(owner)
		return len(got) == n && len(c.ownedBy(owner)) == n
	})
	return got
}

func (c *cluster) ownedBy(owner string) []api.Instance {
	var out []api.Instance
	for _, in := range c.instances() {
		if in.Spec.Owner.Name == owner {
			out = append(out, in)
		}
	}
	return out
}

// containers lists the runtime's running containers of an instance owner.
func (c *cluster) containers(owner string) map[string]int {
	c.t.Helper()
	var list []struct {
		ID     string            `json:"id"`
		State  string            `json:"state"`
		Pid    int               `json:"pid"`
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.ok("container", "ps", "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	out := map[string]int{}
	for _, ct := range list {
		if strings.HasPrefix(ct.Labels["berth.instance"], "default/"+owner+"-") {
			out[ct.ID] = ct.Pid
		}
	}
	return out
}

func (c *cluster) applyYAML(yaml string) (string, string, int) {
	c.t.Helper()
	f := filepath.Join(c.t.TempDir(), "spec.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		c.t.Fatal(err)
	}
	return c.run("apply", "-f", f)
}

const webYAML = `kind: Service
name: web
replicas: 3
template:
  image: demo/busybox:1
  command: ["httpd", "-f", "-p", "80", "-h", "/www"]
  resources: {cpu: 0.1, memory: 32Mi}
`

func TestServiceScaleHealAndRemove(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(webYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("web", 3)
	c.ok("scale", "web=5")
	c.waitRunning("web", 5)
	c.ok("scale", "web=1")
	c.waitRunning("web", 1)
	eventually(t, 30*time.Second, "the scaled-down containers to be stopped and removed", func() bool {
		return len(c.containers("web")) == 1
	})

	// kill -9 the container's main process: it runs again.
	var pid int
	for _, p := range c.containers("web") {
		pid = p
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "a restarted container", func() bool {
		in := c.running("web")
		return len(in) == 1 && in[0].Status.Restarts >= 1
	})

	// restart of one instance: a new container, the same instance.
	before := c.running("web")[0]
	c.ok("restart", before.Metadata.Name)
	eventually(t, 30*time.Second, "the restarted instance to run again", func() bool {
		in := c.running("web")
		return len(in) == 1 && in[0].Metadata.Name == before.Metadata.Name && in[0].Status.Restarts > before.Status.Restarts
	})

	// rm: nothing left, not a container, mount or cgroup.
	c.ok("rm", "web")
	eventually(t, 30*time.Second, "every container of web to go", func() bool {
		out, _, _ := c.run("container", "ps", "-a", "-o", "json")
		return strings.TrimSpace(out) == "null" || strings.TrimSpace(out) == "[]"
	})
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), c.dataDir+"/containers/") {
		t.Error("a container mount is left after rm")
	}
	if len(c.instances()) != 0 {
		t.Errorf("instances left after rm: %v", c.instances())
	}
	rt, err := runtime.New(filepath.Join(c.dataDir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(rt.CgroupPath("x"))
	for _, h := range []string{"memory", "pids", "cpu", ""} {
		ents, _ := os.ReadDir(filepath.Join("/sys/fs/cgroup", h, parent))
		for _, e := range ents {
			if e.IsDir() {
				t.Errorf("cgroup %s left after rm", filepath.Join(h, parent, e.Name()))
			}
		}
	}
}

func TestRestartedBerthAdoptsContainers(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(webYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("web", 3)
	before := c.containers("web")
	c.kill()
	c.start()
	// Give the restarted agent time to act on what it found: it must start nothing.
	time.Sleep(time.Second)
	c.waitRunning("web", 3)
	after := c.containers("web")
	if len(after) != 3 {
		t.Fatalf("%d containers after restart, want the same 3: %v", len(after), after)
	}
	for id, pid := range before {
		if after[id] != pid {
			t.Errorf("container %s: pid %d before, %d after; want it adopted as it was", id, pid, after[id])
		}
	}
	c.ok("scale", "web=4")
	c.waitRunning("web", 4)
}

func TestJobShardsAndBackoff(t *testing.T) {
	c := startCluster(t)
	_, errOut, code := c.applyYAML(`kind: Job
name: tests
completions: 8
parallelism: 4
backoffLimit: 2
template:
  image: demo/busybox:1
  command: ["sh", "-c", "echo shard $BERTH_JOB_INDEX of $BERTH_JOB_COMPLETIONS; sleep 0.3"]
---
kind: Job
name: broken
completions: 5
parallelism: 5
backoffLimit: 2
template:
  image: demo/busybox:1
  command: ["sh", "-c", "[ $BERTH_JOB_INDEX != 3 ]"]
`)
	if code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	job := func(name string) api.Job {
		var j api.Job
		if err := json.Unmarshal([]byte(c.ok("get", "job", name, "-o", "json")), &j); err != nil {
			t.Fatal(err)
		}
		return j
	}
	eventually(t, 90*time.Second, "both jobs to finish", func() bool {
		return job("tests").Status.Phase == api.JobSucceeded && job("broken").Status.Phase == api.JobFailed
	})
	tests := job("tests")
	if tests.Status.Succeeded != 8 {
		t.Errorf("tests: %d of 8 succeeded", tests.Status.Succeeded)
	}
	// Never more than 4 shards at once, by the containers' own start and end times.
	type span struct{ start, end time.Time }
	var spans []span
	for _, in := range c.ownedBy("tests") {
		spans = append(spans, span{in.Status.StartedAt, in.Status.FinishedAt})
		out := c.ok("logs", in.Metadata.Name)
		if want := "shard " + strconv.Itoa(in.Spec.Index) + " of 8"; !strings.Contains(out, want) {
			t.Errorf("%s printed %q, want %q", in.Metadata.Name, out, want)
		}
	}
	sort.Slice(spans, func(i, j int) bool { return spans[i].start.Before(spans[j].start) })
	for _, s := range spans {
		overlap := 0
		for _, o := range spans {
			if !o.start.After(s.start) && o.end.After(s.start) {
				overlap++
			}
		}
		if overlap > 4 {
			t.Errorf("%d shards ran at once at %v, parallelism is 4", overlap, s.start)
		}
	}
	broken := job("broken")
	if broken.Status.Failed != 3 || !broken.Status.Indexes[3].Failed {
		t.Errorf("broken: status %+v, want index 3 failed 3 times", broken.Status)
	}
	out := c.ok("get", "job", "broken")
	if !strings.Contains(out, "Failed") || !strings.Contains(out, "failed") {
		t.Errorf("get job broken does not show the failure:\n%s", out)
	}
}

func TestInvalidSpecsAreRefusedWhole(t *testing.T) {
	c := startCluster(t)
	for _, tc := range []struct {
		name, yaml, field string
	}{
		{"unknown field", "kind: Service\nname: a\nreplicas: 1\ntemplate: {image: demo/busybox:1, colour: red}\n", "colour"},
		{"negative replicas", "kind: Service\nname: a\nreplicas: -2\ntemplate: {image: demo/busybox:1}\n", "replicas"},
		{"bad image", "kind: Service\nname: a\nreplicas: 1\ntemplate: {image: 'Not An Image!'}\n", "image"},
		{"bad memory", "kind: Service\nname: a\nreplicas: 1\ntemplate: {image: demo/busybox:1, resources: {memory: 64MB}}\n", "memory"},
		{"good then bad", "kind: Service\nname: good\nreplicas: 1\ntemplate: {image: demo/busybox:1}\n---\nkind: Job\nname: b\ncompletions: 0\ntemplate: {image: demo/busybox:1}\n", "completions"},
	} {
		_, errOut, code := c.applyYAML(tc.yaml)
		if code == 0 || !strings.Contains(errOut, tc.field) {
			t.Errorf("%s: exit %d, stderr %q; want an error naming %q", tc.name, code, errOut, tc.field)
		}
	}
	if out := c.ok("get", "services", "-o", "json"); strings.TrimSpace(out) != "[]" && strings.TrimSpace(out) != "null" {
		t.Errorf("something was stored: %s", out)
	}
}

func TestHealthCheckFailureRestarts(t *testing.T) {
	c := startCluster(t)
	_, errOut, code := c.applyYAML(`kind: Service
name: flaky
replicas: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "touch /tmp/ok; sleep 1; rm /tmp/ok; sleep 600"]
  health: {exec: {command: ["test", "-f", "/tmp/ok"]}, interval: 200ms, timeout: 1s, failures: 2}
`)
	if code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	eventually(t, 60*time.Second, "a restart after the health check fails", func() bool {
		in := c.running("flaky")
		return len(in) == 1 && in[0].Status.Restarts >= 1
	})
}

func TestTCPListenerNeedsTokenAndTLS(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	// On the host's loopback, where the test dials: no container network needed.
	c := startCluster(t, "--listen", addr, "--no-network")
	tls := filepath.Join(c.dataDir, "tls")
	token, err := os.ReadFile(filepath.Join(tls, "token"))
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(tls, "token")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("token file mode %v, want 0600", fi.Mode())
	}
	remote := []string{"--server", "https://" + addr, "--ca-file", filepath.Join(tls, "ca.crt")}
	// berth up answers before its node has registered: wait for the node.
	eventually(t, 30*time.Second, "the node Ready over TCP", func() bool {
		return strings.Contains(c.ok(append(remote, "--token", strings.TrimSpace(string(token)), "get", "nodes")...), "Ready")
	})
	for _, tc := range [][]string{
		append(remote, "--token", "0123456789abcdef0123", "get", "nodes"),
		append(remote, "get", "nodes"),
	} {
		if _, errOut, code := c.run(tc...); code == 0 || !strings.Contains(strings.ToLower(errOut), "token") {
			t.Errorf("berth %v: exit %d, stderr %q; want refused for its token", tc, code, errOut)
		}
	}
	// Plain HTTP on the TLS port gets nowhere.
	resp, err := http.Get("http://" + addr + "/v1/nodes")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("plain HTTP was answered with 200")
		}
	}
}
