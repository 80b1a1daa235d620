package e2e

import (
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A container whose shim is killed keeps running (it is reparented, not
// killed). Before its replacement starts, berth kills what is left of it
// in its cgroup, so the service never runs twice, and an event says so.
// --cgroup-driver cgroupfs (what this host detects anyway) puts the
// container in berth's own cgroup tree.
func TestLostShimLeavesNoDuplicate(t *testing.T) {
	c := startCluster(t, "--cgroup-driver", "cgroupfs")
	c.ok("run", "--name", "solo", "--port", "80", "demo/busybox:1", "httpd", "-f", "-p", "80", "-h", "/www")
	waitService(c, "solo", 1)
	before := runningService(c, "solo")[0]
	pid := before.Status.Pid
	cg, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	// berth's own tree: /berth for the default data dir, /berth-<hash> for others.
	inTree := regexp.MustCompile(`:/berth(-[0-9a-f]{8})?/` + regexp.QuoteMeta(before.Status.ContainerID) + `\n`)
	if err != nil || !inTree.Match(cg) {
		t.Errorf("container %s (pid %d) is not in berth's cgroup tree: %v\n%s", before.Status.ContainerID, pid, err, cg)
	}
	shim := parentPid(t, pid)
	if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", shim)); !strings.HasSuffix(exe, "/berth") {
		t.Fatalf("the parent %d of container pid %d is %q, not berth's shim", shim, pid, exe)
	}
	if err := syscall.Kill(shim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var after int
	eventually(t, 30*time.Second, "solo to run again in a new container", func() bool {
		in := runningService(c, "solo")
		if len(in) == 1 && in[0].Status.Restarts > before.Status.Restarts && in[0].Status.Pid != pid {
			after = in[0].Status.Pid
			return true
		}
		return false
	})
	if alive(pid) {
		t.Errorf("the old container's process %d still runs beside its replacement %d", pid, after)
	}
	eventually(t, 10*time.Second, "the ShimLostKilled event", func() bool {
		out := c.ok("events")
		return strings.Contains(out, "ShimLostKilled") &&
			(strings.Contains(out, "killed (freeze+kill)") || strings.Contains(out, "killed (cgroup.kill)"))
	})
}

// parentPid reads pid's parent from /proc.
func parentPid(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	return ppid
}

// alive reports whether pid runs (a zombie does not count).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}

// --cgroup-driver takes cgroupfs or systemd, and systemd only where
// systemd is PID 1 with pure cgroup v2.
func TestCgroupDriverFlag(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct{ cmd, driver, want string }{
		{"up", "foo", `--cgroup-driver: cgroup driver "foo": unknown; use cgroupfs or systemd`},
		{"agent", "foo", `--cgroup-driver: cgroup driver "foo": unknown`},
	} {
		_, errOut, code := e.run(tc.cmd, "--cgroup-driver", tc.driver)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("berth %s --cgroup-driver %s: exit %d, stderr %q; want an error with %q", tc.cmd, tc.driver, code, errOut, tc.want)
		}
	}
	if _, err := os.Stat("/run/systemd/system"); err != nil {
		_, errOut, code := e.run("up", "--cgroup-driver", "systemd")
		if code == 0 || !strings.Contains(errOut, "PID 1 is not systemd") {
			t.Errorf("berth up --cgroup-driver systemd without systemd: exit %d, stderr %q", code, errOut)
		}
	}
}
