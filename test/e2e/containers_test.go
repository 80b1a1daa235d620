package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// An instance of three containers: an init container writes a token into
// the instance's volume; the main one serves it over HTTP on port 8080;
// a sidecar fetches it from localhost and prints it. The sidecar has a
// memory limit of its own, and a health check that passes once
// /shared/ready exists.
const podYAML = `kind: Service
name: pod
replicas: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "mkdir -p /www && cp /shared/token /www/index.html && exec httpd -f -p 8080 -h /www"]
  volumes: [{name: shared, path: /shared}]
  health: {http: {port: 8080, path: /}, interval: 300ms, timeout: 500ms, failures: 1}
  containers:
  - name: setup
    init: true
    command: ["sh", "-c", "echo token-$(hostname)-$$ > /shared/token && echo setup done"]
  - name: poller
    sidecar: true
    command: ["sh", "-c", "while [ ! -e /tmp/stop ]; do timeout 2 wget -qO- http://127.0.0.1:8080/; sleep 0.3; done; exit 1"]
    resources: {memory: 16Mi}
    health: {exec: {command: ["test", "-e", "/shared/ready"]}, interval: 300ms, timeout: 1s, failures: 1}
`

// Init and sidecar containers from the user's seat: the init container
// runs first and its file reaches the main container; the sidecar reaches
// the main container on localhost (one network namespace); logs and exec
// reach each container with -c; the instance is healthy only once its
// sidecar is too; the status and describe show each container.
func TestMultiContainerInstance(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(podYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	// Main container up and passing its check, the sidecar not yet: the
	// instance is not healthy (not serving).
	var name string
	eventually(t, 60*time.Second, "the main container healthy beside an unhealthy sidecar", func() bool {
		for _, in := range c.ownedBy("pod") {
			var mainOK, pollerUp bool
			for _, cs := range in.Status.Containers {
				mainOK = mainOK || (cs.Name == "main" && cs.State == api.ContainerRunning && cs.Healthy)
				pollerUp = pollerUp || (cs.Name == "poller" && cs.State == api.ContainerRunning && !cs.Healthy)
			}
			if mainOK && pollerUp {
				if in.Status.Healthy {
					t.Fatalf("instance healthy while its sidecar is not: %+v", in.Status)
				}
				name = in.Metadata.Name
				return true
			}
		}
		return false
	})
	c.ok("exec", name, "touch", "/shared/ready")
	in := c.healthy("pod", 1)[0]

	var states map[string]api.ContainerStatus
	eventually(t, 30*time.Second, "every container's state in the status", func() bool {
		states = map[string]api.ContainerStatus{}
		for _, in := range c.ownedBy("pod") {
			for _, cs := range in.Status.Containers {
				states[cs.Name] = cs
			}
		}
		return states["setup"].State == api.ContainerTerminated && states["poller"].State == api.ContainerRunning &&
			states["main"].State == api.ContainerRunning
	})
	if s := states["setup"]; !s.Init || s.ExitCode != 0 {
		t.Errorf("setup: %+v, want an init container that exited 0", s)
	}
	if !states["poller"].Sidecar || !states["poller"].Healthy {
		t.Errorf("poller: %+v, want a running sidecar", states["poller"])
	}

	// The token the init container wrote, as the main container serves it.
	token := strings.TrimSpace(c.ok("exec", name, "cat", "/www/index.html"))
	if !strings.HasPrefix(token, "token-"+name+"-") {
		t.Fatalf("main container serves %q, want the init container's token", token)
	}
	if out := c.ok("logs", "-c", "setup", name); !strings.Contains(out, "setup done") {
		t.Errorf("logs -c setup:\n%s", out)
	}
	// The sidecar got it over localhost.
	eventually(t, 15*time.Second, "the sidecar to print the token", func() bool {
		return strings.Contains(c.ok("logs", "-c", "poller", name), token)
	})
	if out := c.ok("logs", name); strings.Contains(out, token) || strings.Contains(out, "setup done") {
		t.Errorf("logs of the main container show the others' output:\n%s", out)
	}

	// exec -c runs in that container: its own filesystem, the shared network.
	if out := c.ok("exec", "-c", "poller", name, "wget", "-qO-", "http://127.0.0.1:8080/"); strings.TrimSpace(out) != token {
		t.Errorf("exec -c poller wget localhost: %q, want %q", out, token)
	}
	if out := c.ok("exec", "-c", "poller", name, "cat", "/proc/1/cmdline"); !strings.Contains(out, "wget") {
		t.Errorf("exec -c poller: its PID 1 is %q, not the sidecar's", out)
	}
	if out := c.ok("exec", "-c", "main", name, "cat", "/proc/1/cmdline"); !strings.Contains(out, "httpd") {
		t.Errorf("exec -c main: its PID 1 is %q, not the main container's", out)
	}
	if _, errOut, code := c.run("exec", "-c", "nope", name, "true"); code == 0 || !strings.Contains(errOut, `no container "nope"`) ||
		!strings.Contains(errOut, "setup, poller, main") {
		t.Errorf("exec -c nope: exit %d, %s", code, errOut)
	}
	if _, errOut, code := c.run("logs", "-c", "nope", name); code == 0 || !strings.Contains(errOut, `no container "nope"`) {
		t.Errorf("logs -c nope: exit %d, %s", code, errOut)
	}

	if _, errOut, code := c.run("checkpoint", name, "--output", filepath.Join(t.TempDir(), "ck.tar.gz")); code == 0 ||
		!strings.Contains(errOut, "sidecar containers") {
		t.Errorf("checkpoint of an instance of several containers: exit %d, %s", code, errOut)
	}
	// Nor is it migrated: the refusal says why, and a template that asks
	// for live migration beside its sidecars is refused at apply.
	if _, errOut, code := c.run("migrate", name); code == 0 || !strings.Contains(errOut, "init or sidecar containers") ||
		!strings.Contains(errOut, "a checkpoint holds one container") {
		t.Errorf("migrate of an instance of several containers: exit %d, %s", code, errOut)
	}
	live := strings.Replace(strings.Replace(podYAML, "name: pod\n", "name: pod-live\n", 1), "template:\n", "template:\n  runtime: runc\n  migration: live\n", 1)
	if _, errOut, code := c.applyYAML(live); code == 0 || !strings.Contains(errOut, "template.migration: live") ||
		!strings.Contains(errOut, "init or sidecar containers") {
		t.Errorf("apply of migration: live with sidecars: exit %d, %s", code, errOut)
	}
	// stats -c: the sidecar's own cgroup, with its own limit.
	if out := c.ok("stats", "-c", "poller", name); !strings.Contains(out, "16.0 MiB") {
		t.Errorf("stats -c poller shows no 16 MiB limit:\n%s", out)
	}
	if out := c.ok("stats", name); strings.Contains(out, "16.0 MiB") {
		t.Errorf("stats of the main container shows the sidecar's limit:\n%s", out)
	}

	out := c.ok("describe", name)
	for _, want := range []string{"Containers:", "setup", "init", "Terminated", "poller", "sidecar", "Running"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe lacks %q:\n%s", want, out)
		}
	}

	// A sidecar that fails restarts on its own; the main container stays.
	mainPid := in.Status.Pid
	before := 0
	for _, cs := range in.Status.Containers {
		if cs.Name == "poller" {
			before = cs.Restarts
		}
	}
	c.ok("exec", "-c", "poller", name, "touch", "/tmp/stop")
	eventually(t, 30*time.Second, "the sidecar restarted", func() bool {
		for _, in := range c.ownedBy("pod") {
			for _, cs := range in.Status.Containers {
				if cs.Name == "poller" && cs.Restarts > before && cs.State == api.ContainerRunning {
					return in.Status.Pid == mainPid
				}
			}
		}
		return false
	})
}

// Without a network (berth up --no-network) an instance's containers
// still share one network namespace: the sidecar reaches the main
// container on localhost; with the built-in executor and with runc.
func TestMultiContainerWithoutNetwork(t *testing.T) {
	c := startCluster(t, "--no-network")
	pins := filepath.Join(c.dataDir, "containers", ".pods")
	for _, executor := range []string{"", "runc"} {
		yaml := strings.Replace(podYAML, "  health: {http: {port: 8080, path: /}, interval: 300ms, timeout: 500ms, failures: 1}\n", "", 1)
		if executor != "" {
			yaml = strings.Replace(yaml, "template:\n", "template:\n  runtime: "+executor+"\n", 1)
		}
		if _, errOut, code := c.applyYAML(yaml); code != 0 {
			t.Fatalf("apply (executor %q): %s", executor, errOut)
		}
		name := c.waitRunning("pod", 1)[0].Metadata.Name
		eventually(t, 30*time.Second, "the sidecar to print the token (executor "+executor+")", func() bool {
			out, _, _ := c.run("logs", "-c", "poller", name)
			return strings.Contains(out, "token-"+name+"-")
		})
		if ents, _ := os.ReadDir(pins); len(ents) != 1 {
			t.Fatalf("%d pinned instance namespaces, want 1", len(ents))
		}
		// Once the instance goes, so does its namespace.
		c.ok("rm", "pod")
		eventually(t, 30*time.Second, "the instance's namespace removed", func() bool {
			ents, _ := os.ReadDir(pins)
			return len(ents) == 0 && len(c.ownedBy("pod")) == 0
		})
	}
}

const initFailYAML = `kind: Job
name: blocked
completions: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "echo main ran"]
  restart: never
  containers:
  - name: migrate
    init: true
    command: ["sh", "-c", "echo cannot migrate; exit 3"]
`

// A failing init container keeps the main one from running, and the
// instance says why.
func TestInitContainerFailure(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(initFailYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	var in api.Instance
	eventually(t, 30*time.Second, "the instance to fail", func() bool {
		for _, x := range c.ownedBy("blocked") {
			if x.Status.Phase == api.PhaseFailed {
				in = x
				return true
			}
		}
		return false
	})
	if in.Status.Reason != "InitFailed" || !strings.Contains(in.Status.Message, "init container migrate (1 of 1) exited with code 3") ||
		in.Status.ExitCode != 3 {
		t.Errorf("status: reason %q, message %q, exit %d", in.Status.Reason, in.Status.Message, in.Status.ExitCode)
	}
	i := slices.IndexFunc(in.Status.Containers, func(cs api.ContainerStatus) bool { return cs.Name == "main" })
	if i < 0 || in.Status.Containers[i].State != api.ContainerWaiting || in.Status.Containers[i].ContainerID != "" {
		t.Errorf("main container: %+v, want never started", in.Status.Containers)
	}
	if out := c.ok("logs", "-c", "migrate", in.Metadata.Name); !strings.Contains(out, "cannot migrate") {
		t.Errorf("logs -c migrate:\n%s", out)
	}
	if _, _, code := c.run("logs", in.Metadata.Name); code == 0 {
		t.Error("logs of a main container that never ran succeeded")
	}
	// Failed for good: its network namespace goes, though the instance stays.
	eventually(t, 15*time.Second, "the failed instance's namespace removed", func() bool {
		ents, _ := os.ReadDir(filepath.Join(c.dataDir, "containers", ".pods"))
		return len(ents) == 0
	})
	out := c.ok("get", "instances")
	if !strings.Contains(out, "Failed (InitFailed)") {
		t.Errorf("get instances:\n%s", out)
	}
	eventually(t, 30*time.Second, "the job to fail", func() bool {
		var j api.Job
		if err := json.Unmarshal([]byte(c.ok("get", "job", "blocked", "-o", "json")), &j); err != nil {
			t.Fatal(err)
		}
		return j.Status.Phase == api.JobFailed
	})
}

// An instance whose tmpfs volume its init and sidecar containers write
// and its main container reads.
const sharedTmpfsYAML = `kind: Service
name: scratch
replicas: 1
template:
  image: demo/busybox:1
  command: ["sh", "-c", "until [ -e /scratch/sidecar ]; do sleep 0.1; done; cat /scratch/init /scratch/sidecar; exec sleep 1d"]
  volumes: [{tmpfs: {size: 1Mi}, path: /scratch}]
  containers:
  - name: setup
    init: true
    command: ["sh", "-c", "echo init-wrote-$$ > /scratch/init"]
  - name: writer
    sidecar: true
    command: ["sh", "-c", "echo sidecar-wrote-$$ > /scratch/sidecar; exec sleep 1d"]
`

// The containers of an instance share its tmpfs volumes as they share
// its named ones: what the init container and the sidecar write there,
// the main container reads. It is one tmpfs of the size asked, on the
// node while the instance lasts, and gone with it.
func TestMultiContainerSharesTmpfs(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(sharedTmpfsYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	name := c.waitRunning("scratch", 1)[0].Metadata.Name
	var out string
	eventually(t, 30*time.Second, "the main container to print what the others wrote", func() bool {
		out, _, _ = c.run("logs", name)
		return strings.Contains(out, "init-wrote-") && strings.Contains(out, "sidecar-wrote-")
	})
	// One mount, bounded as asked, seen alike from main and sidecar.
	for _, cn := range []string{"main", "writer"} {
		df := c.ok("exec", "-c", cn, name, "df", "-k", "/scratch")
		if !strings.Contains(df, "tmpfs") || !strings.Contains(df, " 1024 ") {
			t.Errorf("df /scratch in %s: want a tmpfs of 1024 KiB:\n%s", cn, df)
		}
	}
	c.ok("exec", name, "touch", "/scratch/from-main")
	if out := c.ok("exec", "-c", "writer", name, "ls", "/scratch"); !strings.Contains(out, "from-main") {
		t.Errorf("the sidecar does not see the main container's file:\n%s", out)
	}
	vols := filepath.Join(c.dataDir, "containers", ".pod-volumes")
	if ents, _ := os.ReadDir(vols); len(ents) != 1 {
		t.Errorf("%d instances' tmpfs volumes on the node, want 1", len(ents))
	}
	c.ok("rm", "scratch")
	eventually(t, 30*time.Second, "the instance's tmpfs gone with it", func() bool {
		ents, _ := os.ReadDir(vols)
		return len(ents) == 0 && len(c.ownedBy("scratch")) == 0
	})
}
