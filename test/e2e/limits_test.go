package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// A request over a limit is refused at the API, naming the field and the cap.
func TestLimitsRefusedAtAPI(t *testing.T) {
	c := startCluster(t, "--no-network")
	c.ok("run", "--no-wait", "--name", "web", "demo/busybox:1", "sleep", "1d")
	_, errOut, code := c.run("scale", "web=1000000")
	if code == 0 || !strings.Contains(errOut, "replicas") || !strings.Contains(errOut, strconv.Itoa(api.MaxReplicas)) {
		t.Fatalf("scale to 1000000: exit %d, stderr %q", code, errOut)
	}
	var svc api.Service
	if err := jsonOut(c.ok("get", "service", "web", "-o", "json"), &svc); err != nil || svc.Spec.Replicas != 1 {
		t.Fatalf("replicas after a refused scale: %d (%v)", svc.Spec.Replicas, err)
	}
	// The launch plan's limits, at apply rather than when a node starts it.
	args := strings.Repeat(`"x", `, api.LaunchMaxArgs)
	_, errOut, code = c.applyYAML(fmt.Sprintf("kind: Service\nname: long\ntemplate:\n  image: demo/busybox:1\n  command: [\"echo\", %s]\n", args))
	if code == 0 || !strings.Contains(errOut, "template.command") || !strings.Contains(errOut, strconv.Itoa(api.MaxArgs)) {
		t.Fatalf("apply with %d args: exit %d, stderr %q", api.LaunchMaxArgs+1, code, errOut)
	}
	var env strings.Builder
	for i := range api.MaxEnv + 1 {
		fmt.Fprintf(&env, "    V%d: x\n", i)
	}
	_, errOut, code = c.applyYAML("kind: Job\nname: envs\ncompletions: 1\ntemplate:\n  image: demo/busybox:1\n  env:\n" + env.String())
	if code == 0 || !strings.Contains(errOut, "template.env") || !strings.Contains(errOut, strconv.Itoa(api.MaxEnv)) {
		t.Fatalf("apply with %d env: exit %d, stderr %q", api.MaxEnv+1, code, errOut)
	}
	_, errOut, code = c.applyYAML("kind: Job\nname: wide\ncompletions: 1000000\ntemplate:\n  image: demo/busybox:1\n")
	if code == 0 || !strings.Contains(errOut, "completions") || !strings.Contains(errOut, strconv.Itoa(api.MaxCompletions)) {
		t.Fatalf("apply with 1000000 completions: exit %d, stderr %q", code, errOut)
	}
}

// A service at the replica cap is stored whole with no write etcd refuses,
// and berth up's memory stays bounded meanwhile. Its instances match no
// node, so they are made (Pending) but not started: what is measured is
// the control plane's share, which the cap is about.
func TestScaleToCap(t *testing.T) {
	c := startCluster(t, "--no-network")
	spec := fmt.Sprintf(`kind: Service
name: many
replicas: %d
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
placement:
  constraints: [{key: node.name, op: "==", values: [nowhere]}]
`, api.MaxReplicas)
	t0 := time.Now()
	if _, errOut, code := c.applyYAML(spec); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	// The controller decides and writes the count after storing them all.
	eventually(t, 45*time.Second, "every instance to be stored", func() bool {
		var svc api.Service
		return jsonOut(c.ok("get", "service", "many", "-o", "json"), &svc) == nil && svc.Status.Replicas == api.MaxReplicas
	})
	t.Logf("%d instances stored in %v", api.MaxReplicas, time.Since(t0))
	if n := len(c.ownedBy("many")); n != api.MaxReplicas {
		t.Fatalf("%d instances stored, want %d", n, api.MaxReplicas)
	}
	log, err := os.ReadFile(filepath.Join(c.dataDir, "up.log"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(log), "etcdserver") || strings.Contains(string(log), "too many operations") {
		t.Errorf("berth up logged an etcd refusal:\n%s", log)
	}
	// Peak resident memory of berth up's process so far.
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.up.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var hwmKB int
	for line := range strings.SplitSeq(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			hwmKB, _ = strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	t.Logf("berth up peak RSS with %d instances: %d MiB", api.MaxReplicas, hwmKB>>10)
	if hwmKB == 0 || hwmKB > 300<<10 {
		t.Errorf("berth up peak RSS %d KiB, want under 300 MiB", hwmKB)
	}
	t0 = time.Now()
	seen := c.watchInstances("many")
	c.ok("scale", "many=0")
	// Counted through a watch: listing 10,000 instances is no cheap poll.
	eventually(t, 45*time.Second, "every instance to be removed", func() bool { return seen.deletions() == api.MaxReplicas })
	if n := len(c.ownedBy("many")); n != 0 {
		t.Fatalf("%d instances left", n)
	}
	t.Logf("and removed in %v", time.Since(t0))
}
