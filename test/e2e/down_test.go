package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// berth down stops berth up cleanly and leaves its containers running;
// berth down --purge also leaves no bridge, nft table, mount or cgroup of
// berth's. berth up runs in the test's own network namespace with a bridge
// of its own name.
func TestDown(t *testing.T) {
	bridge := fmt.Sprintf("bdn%d", os.Getpid()%1000000)
	c := startCluster(t, "--bridge", bridge)
	if _, errOut, code := c.applyYAML(strings.Replace(webYAML, "replicas: 3", "replicas: 2", 1)); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("web", 2)
	if out, err := c.inNetns("ip", "link", "show", bridge).CombinedOutput(); err != nil {
		t.Fatalf("bridge %s before down: %v %s", bridge, err, out)
	}
	before := c.containers("web")

	// down: berth up exits in time, and the containers keep running.
	down := func(args ...string) string {
		t.Helper()
		start := time.Now()
		out, err := c.inNetns(berthBin, append([]string{"--data-dir", c.dataDir, "down"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("berth down %v: %v\n%s", args, err, out)
		}
		t.Logf("berth down %v took %v", args, time.Since(start).Round(time.Millisecond))
		return string(out)
	}
	pid := c.up.Process.Pid
	if out := down(); !strings.Contains(out, fmt.Sprintf("berth (pid %d) stopped", pid)) {
		t.Errorf("berth down printed %q", out)
	}
	exited := make(chan error, 1)
	go func() { exited <- c.up.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("berth up ended with %v after berth down, want a clean exit", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("berth up still runs after berth down returned")
	}
	c.up = nil
	if after := c.containers("web"); len(after) != len(before) {
		t.Errorf("containers after down: %v, want the %d that ran before", after, len(before))
	}
	if out := down(); !strings.Contains(out, "not running") {
		t.Errorf("berth down with nothing running: %q", out)
	}

	// down --purge, after berth up is back.
	c.start()
	c.waitRunning("web", 2)
	rt, err := runtime.New(filepath.Join(c.dataDir, "containers"))
	if err != nil {
		t.Fatal(err)
	}
	parent := filepath.Dir(rt.CgroupPath("x"))
	cgroups := func() []string {
		var left []string
		for _, h := range []string{"", "memory", "pids", "cpu", "cpuset", "unified"} {
			if _, err := os.Stat(filepath.Join("/sys/fs/cgroup", h, parent)); err == nil {
				left = append(left, filepath.Join("/sys/fs/cgroup", h, parent))
			}
		}
		return left
	}
	if len(cgroups()) == 0 {
		t.Fatalf("no cgroup %s before down --purge: the check below would prove nothing", parent)
	}
	if out, err := c.inNetns("nft", "list", "tables").CombinedOutput(); err != nil || !strings.Contains(string(out), "berth-node") {
		t.Fatalf("nft tables before down --purge: %v\n%s", err, out)
	}
	// From another network namespace (the test's own) a purge is refused
	// before it touches anything: there it would remove that namespace's
	// bridge and tables, not berth up's.
	if out, err := exec.Command(berthBin, "--data-dir", c.dataDir, "down", "--purge").CombinedOutput(); err == nil ||
		!strings.Contains(string(out), "network namespace") {
		t.Fatalf("down --purge from another network namespace: %v\n%s, want refused naming the namespace", err, out)
	}
	if c.up.ProcessState != nil {
		t.Fatal("berth up stopped by a refused purge")
	}
	if out, err := c.inNetns("ip", "link", "show", bridge).CombinedOutput(); err != nil {
		t.Fatalf("bridge %s gone after a refused purge: %v %s", bridge, err, out)
	}
	down("--purge")
	if c.up != nil {
		_ = c.up.Wait()
		c.up = nil
	}
	if out, err := c.inNetns("ip", "link", "show", bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s left after down --purge:\n%s", bridge, out)
	}
	if out, err := c.inNetns("nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), "berth") {
		t.Errorf("nft tables after down --purge: %v\n%s", err, out)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for line := range strings.Lines(string(mounts)) {
		if strings.Contains(line, c.dataDir+"/") {
			t.Errorf("mount left after down --purge: %s", line)
		}
	}
	if out := strings.TrimSpace(c.ok("container", "ps", "-a", "-o", "json")); out != "null" && out != "[]" {
		t.Errorf("containers left after down --purge: %s", out)
	}
	if left := cgroups(); len(left) > 0 {
		t.Errorf("cgroups left after down --purge: %v", left)
	}
}
