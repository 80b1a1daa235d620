package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// The everyday loop of a user, on one shared `berth up`: names, the
// round trip of get and apply, diff and dry runs, labels and selectors,
// watch, describe, ps -o wide's PID, completion and warnings.
func TestEverydayLoop(t *testing.T) {
	c := startCluster(t)
	_, errOut, code := c.applyYAML(`kind: Service
name: web
labels: {tier: front}
replicas: 1
template:
  image: demo/busybox:1
  command: ["httpd", "-f", "-p", "80", "-h", "/www"]
  ports: [{container: 80}]
---
kind: Job
name: web
completions: 1
template:
  image: demo/busybox:1
  command: ["true"]
`)
	if code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	if strings.Contains(errOut, "warning") {
		t.Errorf("apply of a service with ports warned: %s", errOut)
	}
	c.ok("run", "-n", "prod", "--name", "api", "--label", "tier=back", "--port", "80", "demo/busybox:1", "httpd", "-f", "-p", "80", "-h", "/www")
	waitService(c, "web", 1)

	revision := func(ref string) int64 {
		t.Helper()
		var o struct {
			Metadata api.Metadata `json:"metadata"`
		}
		if err := json.Unmarshal([]byte(c.ok("get", ref, "-o", "json")), &o); err != nil {
			t.Fatal(err)
		}
		return o.Metadata.Revision
	}
	write := func(name, data string) string {
		f := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}

	t.Run("names", func(t *testing.T) {
		for _, args := range [][]string{{"rm", "web"}, {"logs", "web"}, {"describe", "web"}} {
			_, errOut, code := c.run(args...)
			if code == 0 || !strings.Contains(errOut, "ambiguous") || !strings.Contains(errOut, "service/web") || !strings.Contains(errOut, "job/web") {
				t.Errorf("berth %v: exit %d, stderr %q; want an error naming service/web and job/web", args, code, errOut)
			}
		}
		if out := c.ok("get", "job/web"); !strings.Contains(out, "web") {
			t.Errorf("get job/web: %q", out)
		}
		if _, errOut, code := c.run("get", "service/web", "job/web", "-o", "json"); code == 0 || !strings.Contains(errOut, "one kind") {
			t.Errorf("get of two kinds at once: exit %d, %q", code, errOut)
		}
		// scale takes only services: web is not ambiguous there.
		if out := c.ok("scale", "web=1"); !strings.Contains(out, "service/web scaled to 1") {
			t.Errorf("scale web=1: %q", out)
		}
		// Lists show -n's namespace, "default" unless given; -A all.
		def, prod, all := c.ok("get", "services"), c.ok("get", "services", "-n", "prod"), c.ok("get", "services", "-A")
		if !strings.Contains(def, "web") || strings.Contains(def, "api") {
			t.Errorf("get services (default namespace):\n%s", def)
		}
		if strings.Contains(prod, "web") || !strings.Contains(prod, "api") {
			t.Errorf("get services -n prod:\n%s", prod)
		}
		if !strings.Contains(all, "web") || !strings.Contains(all, "api") {
			t.Errorf("get services -A:\n%s", all)
		}
		if _, errOut, code := c.run("get", "service", "api"); code == 0 || !strings.Contains(errOut, "not found") {
			t.Errorf("get service api in default: exit %d, %q; want not found", code, errOut)
		}
		for _, args := range [][]string{{"get", "service", "api", "-n", "prod"}, {"get", "service/prod/api"}, {"describe", "-n", "prod", "api"}} {
			if out := c.ok(args...); !strings.Contains(out, "api") {
				t.Errorf("berth %v: %q", args, out)
			}
		}
		if _, errOut, code := c.run("get", "service/default/api", "-n", "prod"); code == 0 || !strings.Contains(errOut, "--namespace") {
			t.Errorf("a namespace given twice, differently: exit %d, %q", code, errOut)
		}
		// exec and logs find a service's instances in -n's namespace.
		if out := c.ok("exec", "-n", "prod", "service/api", "cat", "/etc/hostname"); !strings.HasPrefix(strings.TrimSpace(out), "api-") {
			t.Errorf("exec -n prod service/api: hostname %q", out)
		}
		if _, errOut, code := c.run("exec", "api", "true"); code == 0 || !strings.Contains(errOut, `namespace "default"`) {
			t.Errorf("exec api without -n: exit %d, %q; want not found in default", code, errOut)
		}
		c.ok("logs", "job/web")

		// apply -n puts documents that name no namespace in it, and
		// refuses one that names another.
		zero := write("zero.yaml", "kind: Service\nname: zero\nreplicas: 0\ntemplate: {image: demo/busybox:1, ports: [{container: 80}]}\n")
		if out := c.ok("apply", "-n", "prod", "-f", zero); strings.TrimSpace(out) != "service/zero created" {
			t.Errorf("apply -n prod: %q", out)
		}
		c.ok("get", "service/prod/zero")
		other := write("other.yaml", "kind: Service\nname: zero\nnamespace: default\nreplicas: 0\ntemplate: {image: demo/busybox:1}\n")
		if _, errOut, code := c.run("apply", "-n", "prod", "-f", other); code == 0 || !strings.Contains(errOut, `namespace "default"`) {
			t.Errorf("apply -n prod of a document in default: exit %d, %q", code, errOut)
		}
		c.ok("rm", "-n", "prod", "zero")
	})

	t.Run("get -o yaml and -o json apply back unchanged", func(t *testing.T) {
		for _, ref := range []string{"service/web", "job/web"} {
			before := revision(ref)
			y := c.ok("get", ref, "-o", "yaml")
			if !strings.HasPrefix(y, "kind: ") {
				t.Errorf("get %s -o yaml does not start with its kind:\n%s", ref, y)
			}
			// The stored spec shows the defaults its file left out.
			if want := map[string]string{"service/web": "restart: always", "job/web": "restart: on-failure"}[ref]; !strings.Contains(y, want) {
				t.Errorf("get %s -o yaml does not show the default %q:\n%s", ref, want, y)
			}
			out := c.ok("apply", "-f", write("obj.yaml", y))
			if want := ref + " unchanged"; strings.TrimSpace(out) != want {
				t.Errorf("apply of get %s -o yaml: %q, want %q", ref, out, want)
			}
			if after := revision(ref); after != before {
				t.Errorf("%s: revision %d after re-applying, was %d", ref, after, before)
			}
			out = c.ok("apply", "-f", write("obj.json", c.ok("get", ref, "-o", "json")))
			if want := ref + " unchanged"; strings.TrimSpace(out) != want {
				t.Errorf("apply of get %s -o json: %q, want %q", ref, out, want)
			}
		}
		// A list, in each format, applies back as a whole.
		for _, format := range []string{"json", "yaml"} {
			out := c.ok("apply", "-f", write("list."+format, c.ok("get", "services", "-A", "-o", format)))
			if !strings.Contains(out, "service/web unchanged") || !strings.Contains(out, "service/api unchanged") {
				t.Errorf("apply of get services -A -o %s: %q", format, out)
			}
		}
		// A change through the same shape is applied.
		y := strings.Replace(c.ok("get", "service/web", "-o", "yaml"), "replicas: 1\n", "replicas: 2\n", 1)
		if out := c.ok("apply", "-f", write("obj.yaml", y)); strings.TrimSpace(out) != "service/web configured" {
			t.Errorf("apply of an edited get -o yaml: %q", out)
		}
		waitService(c, "web", 2)
	})

	t.Run("diff and apply --dry-run", func(t *testing.T) {
		spec := func(replicas int, image string) string {
			return "kind: Service\nname: web\nlabels: {tier: front}\nreplicas: " + strconv.Itoa(replicas) +
				"\ntemplate:\n  image: " + image + "\n  command: [httpd, -f, -p, '80', -h, /www]\n  ports: [{container: 80}]\n"
		}
		before := revision("service/web")
		same := write("same.yaml", spec(2, "demo/busybox:1"))
		if out, errOut, code := c.run("diff", "-f", same); code != 0 || out != "" {
			t.Errorf("diff of the stored spec: exit %d, stdout %q, stderr %q; want 0 and nothing", code, out, errOut)
		}
		changed := write("changed.yaml", spec(4, "demo/busybox:1"))
		out, errOut, code := c.run("diff", "-f", changed)
		if code != 1 || !strings.Contains(out, "-replicas: 2") || !strings.Contains(out, "+replicas: 4") || !strings.Contains(out, "--- service/web (stored)") {
			t.Errorf("diff of a change: exit %d, stdout %q, stderr %q; want 1 and a unified diff of replicas", code, out, errOut)
		}
		out = c.ok("apply", "--dry-run", "-f", changed)
		if !strings.Contains(out, "+replicas: 4") || !strings.Contains(out, "service/web configured (dry run)") {
			t.Errorf("apply --dry-run: %q", out)
		}
		if after := revision("service/web"); after != before {
			t.Errorf("diff and a dry run changed the service: revision %d, was %d", after, before)
		}
		// A new object diffs from nothing, and a dry run stores nothing.
		fresh := write("fresh.yaml", strings.Replace(spec(1, "demo/busybox:1"), "name: web", "name: fresh", 1))
		if out := c.ok("apply", "--dry-run", "-f", fresh); !strings.Contains(out, "+name: fresh") || !strings.Contains(out, "service/fresh created (dry run)") {
			t.Errorf("apply --dry-run of a new service: %q", out)
		}
		if _, _, code := c.run("get", "service", "fresh"); code == 0 {
			t.Error("a dry run stored service fresh")
		}
		// A dry run is checked as an apply is.
		bad := write("bad.yaml", spec(1, "Not An Image!"))
		if _, errOut, code := c.run("apply", "--dry-run", "-f", bad); code == 0 || !strings.Contains(errOut, "image") {
			t.Errorf("dry run of an invalid spec: exit %d, %q", code, errOut)
		}
		if _, errOut, code := c.run("diff", "-f", filepath.Join(t.TempDir(), "missing.yaml")); code != 2 || !strings.Contains(errOut, "missing.yaml") {
			t.Errorf("diff of a missing file: exit %d, %q; want 2", code, errOut)
		}
	})

	t.Run("labels and selectors", func(t *testing.T) {
		if out := c.ok("get", "services", "-A", "-l", "tier=front"); !strings.Contains(out, "web") || strings.Contains(out, "api") {
			t.Errorf("-l tier=front:\n%s", out)
		}
		if out := c.ok("get", "services", "-A", "-l", "tier!=front"); strings.Contains(out, "web") || !strings.Contains(out, "api") {
			t.Errorf("-l tier!=front:\n%s", out)
		}
		if out := c.ok("get", "services", "-A", "-l", "tier=front,tier=back"); strings.Contains(out, "web") || strings.Contains(out, "api") {
			t.Errorf("-l tier=front,tier=back matches nothing, got:\n%s", out)
		}
		// Instances carry their owner's name as a label.
		if out := c.ok("ps", "-A", "-l", "berth.owner=api"); !strings.Contains(out, "api-") || strings.Contains(out, "web-") {
			t.Errorf("ps -l berth.owner=api:\n%s", out)
		}
		if out := c.ok("get", "jobs", "-l", "tier!=front"); !strings.Contains(out, "web") {
			t.Errorf("a job without the label meets tier!=front:\n%s", out)
		}
		if out := c.ok("get", "services", "-A", "--show-labels"); !regexp.MustCompile(`(?m)LABELS$`).MatchString(strings.SplitN(out, "\n", 2)[0]) || !strings.Contains(out, "tier=front") || !strings.Contains(out, "tier=back") {
			t.Errorf("--show-labels:\n%s", out)
		}
		for _, tc := range []struct{ args []string }{
			{[]string{"run", "--name", "badlabel", "--no-wait", "--label", "bad key=x", "demo/busybox:1"}},
			{[]string{"run", "--name", "badlabel", "--no-wait", "--label", "k=" + strings.Repeat("v", 64), "demo/busybox:1"}},
			{[]string{"get", "services", "-l", "tier"}},
		} {
			if _, errOut, code := c.run(tc.args...); code == 0 || !strings.Contains(errOut, "label") && !strings.Contains(errOut, "selector") {
				t.Errorf("berth %v: exit %d, %q; want refused for the label", tc.args, code, errOut)
			}
		}
		if _, _, code := c.run("get", "service", "badlabel"); code == 0 {
			t.Error("a service with an invalid label was stored")
		}
		_, errOut, code := c.applyYAML("kind: Service\nname: x\nlabels: {\"a/b/c\": v}\nreplicas: 0\ntemplate: {image: demo/busybox:1}\n")
		if code == 0 || !strings.Contains(errOut, "labels") {
			t.Errorf("spec file with a bad label key: exit %d, %q", code, errOut)
		}
	})

	t.Run("get -w", func(t *testing.T) {
		w := c.watch(t, "get", "service", "web", "-w")
		w.waitFor(t, "web", 1)
		c.ok("scale", "web=3")
		// The list line, then lines as the service changes: replicas 3 wanted.
		w.waitFor(t, "/3", 1)
		waitService(c, "web", 3)
		c.ok("scale", "web=1")
		waitService(c, "web", 1)
	})

	t.Run("describe and ps -o wide PID", func(t *testing.T) {
		insts := runningService(c, "web")
		out := c.ok("describe", "service/web")
		for _, want := range []string{"Kind:", "Service", "Labels:", "tier=front", "Instances:", insts[0].Metadata.Name, "Events:", "PID"} {
			if !strings.Contains(out, want) {
				t.Errorf("describe service/web lacks %q:\n%s", want, out)
			}
		}
		if out := c.ok("describe", "job/web"); !regexp.MustCompile(`Kind:\s+Job`).MatchString(out) || !strings.Contains(out, "Completions:") || !strings.Contains(out, "Instances:") {
			t.Errorf("describe job/web:\n%s", out)
		}
		node := insts[0].Spec.Node
		if out := c.ok("describe", "node/"+node); !strings.Contains(out, "Status:") || !strings.Contains(out, "Ready") || !strings.Contains(out, insts[0].Metadata.Name) {
			t.Errorf("describe node/%s lacks its status or its instance %s:\n%s", node, insts[0].Metadata.Name, out)
		}
		// An instance no node can take says why.
		c.ok("run", "--name", "huge", "--no-wait", "--cpus", "512", "--port", "80", "demo/busybox:1", "sleep", "1000")
		eventually(t, 20*time.Second, "describe to say why huge is pending", func() bool {
			out := c.ok("describe", "huge")
			return strings.Contains(out, "Not ready:") && strings.Contains(out, "unschedulable")
		})
		// Events, like lists, are -n's namespace's, or every one's with -A.
		if out := c.ok("events", "-n", "prod"); strings.Contains(out, "huge") {
			t.Errorf("events -n prod shows default's:\n%s", out)
		}
		for _, args := range [][]string{{"events"}, {"events", "-A"}, {"get", "events", "-A"}} {
			eventually(t, 10*time.Second, fmt.Sprintf("berth %v to show the Unschedulable event of huge", args), func() bool {
				return strings.Contains(c.ok(args...), "instance/huge-")
			})
		}
		c.ok("rm", "huge")
		// The PID ps -o wide shows is the container's: killing it heals.
		var pid int
		for _, line := range strings.Split(c.ok("ps", "-o", "wide"), "\n") {
			f := strings.Fields(line)
			if len(f) > 10 && f[1] == insts[0].Metadata.Name {
				pid, _ = strconv.Atoi(f[10])
			}
		}
		if pid == 0 {
			t.Fatalf("no PID for %s in ps -o wide:\n%s", insts[0].Metadata.Name, c.ok("ps", "-o", "wide"))
		}
		if d := c.ok("describe", "instance/"+insts[0].Metadata.Name); !regexp.MustCompile(`PID:\s+` + strconv.Itoa(pid)).MatchString(d) {
			t.Errorf("describe instance does not show PID %d:\n%s", pid, d)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		eventually(t, 30*time.Second, "the killed instance to run again", func() bool {
			in := runningService(c, "web")
			return len(in) == 1 && in[0].Status.Restarts > insts[0].Status.Restarts && in[0].Status.Pid != pid
		})
	})

	t.Run("completion", func(t *testing.T) {
		node := strings.TrimSpace(c.ok("get", "nodes", "-o", "json"))
		var nodes []api.Node
		if err := json.Unmarshal([]byte(node), &nodes); err != nil || len(nodes) != 1 {
			t.Fatalf("nodes: %v %s", err, node)
		}
		inst := runningService(c, "web")[0].Metadata.Name
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"rm", ""}, []string{"web"}},
			{[]string{"-n", "prod", "rm", ""}, []string{"api"}},
			{[]string{"describe", "node/"}, []string{"node/" + nodes[0].Metadata.Name}},
			{[]string{"logs", ""}, []string{inst, "web"}},
			{[]string{"get", "services", ""}, []string{"web"}},
			{[]string{"scale", ""}, []string{"web="}},
			{[]string{"node", "cordon", ""}, []string{nodes[0].Metadata.Name}},
		} {
			out := c.ok(append([]string{"__complete"}, tc.args...)...)
			for _, w := range tc.want {
				if !regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(w) + `$`).MatchString(out) {
					t.Errorf("completion of %v lacks %q:\n%s", tc.args, w, out)
				}
			}
		}
	})

	t.Run("a service without ports warns", func(t *testing.T) {
		_, errOut, code := c.run("run", "--name", "noports", "--no-wait", "demo/busybox:1", "sleep", "1000")
		want := "warning: service noports has no ports: its virtual IP and DNS name noports.default.berth will not answer"
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("run without ports: exit %d, stderr %q; want %q", code, errOut, want)
		}
		_, errOut, code = c.applyYAML("kind: Service\nname: noports\nreplicas: 0\ntemplate: {image: demo/busybox:1}\n")
		if code != 0 || !strings.Contains(errOut, want) {
			t.Errorf("apply without ports: exit %d, stderr %q; want %q", code, errOut, want)
		}
		c.ok("rm", "noports")
	})

	t.Run("restart by kind", func(t *testing.T) {
		inst := runningService(c, "web")[0]
		if out := c.ok("restart", "instance/"+inst.Metadata.Name); strings.TrimSpace(out) != "instance/"+inst.Metadata.Name+" restarting" {
			t.Errorf("restart instance/%s: %q", inst.Metadata.Name, out)
		}
		if _, errOut, code := c.run("restart", "job/web"); code == 0 || !strings.Contains(errOut, "service or instance") {
			t.Errorf("restart job/web: exit %d, %q; want refused: restart takes a service or instance", code, errOut)
		}
		if out := c.ok("restart", "-n", "prod", "api"); strings.TrimSpace(out) != "service/api restarting" {
			t.Errorf("restart -n prod api: %q", out)
		}
	})

	t.Run("rm by kind", func(t *testing.T) {
		if out := c.ok("rm", "job/web"); strings.TrimSpace(out) != "job/web removed" {
			t.Errorf("rm job/web: %q", out)
		}
		// Now the name is the service's alone.
		if out := c.ok("rm", "web", "-n", "default"); strings.TrimSpace(out) != "service/web removed" {
			t.Errorf("rm web: %q", out)
		}
		if out := c.ok("rm", "-n", "prod", "api"); strings.TrimSpace(out) != "service/api removed" {
			t.Errorf("rm -n prod api: %q", out)
		}
	})
}

// watcher is a berth command left running, its output gathered.
type watcher struct {
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *cluster) watch(t *testing.T, args ...string) *watcher {
	t.Helper()
	cmd := exec.Command(berthBin, append([]string{"--data-dir", c.dataDir}, args...)...)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w := &watcher{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			w.mu.Lock()
			w.out.WriteString(sc.Text() + "\n")
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		_ = cmd.Wait()
	})
	return w
}

// waitFor waits until s has appeared at least n times.
func (w *watcher) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	eventually(t, 30*time.Second, "watch output with "+s, func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return strings.Count(w.out.String(), s) >= n
	})
}

// runningService lists the running instances of service name (in default),
// leaving out a job's of the same name.
func runningService(c *cluster, name string) []api.Instance {
	var out []api.Instance
	for _, in := range c.instances() {
		if in.Spec.Owner.Kind == api.KindService && in.Spec.Owner.Name == name && in.Status.Phase == api.PhaseRunning {
			out = append(out, in)
		}
	}
	return out
}

// waitService waits until service name has n instances, all running.
func waitService(c *cluster, name string, n int) {
	c.t.Helper()
	eventually(c.t, 60*time.Second, strconv.Itoa(n)+" running instances of service "+name, func() bool {
		all := 0
		for _, in := range c.instances() {
			if in.Spec.Owner.Kind == api.KindService && in.Spec.Owner.Name == name && in.Metadata.Namespace == api.DefaultNamespace {
				all++
			}
		}
		return all == n && len(runningService(c, name)) == n
	})
}
