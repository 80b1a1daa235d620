//go:build guest

// These tests need a host with systemd as PID 1 and pure cgroup v2. The
// guest that test/guest boots is one: it builds this package's test binary
// with -tags guest and runs the TestGuest tests inside (make test-guest).

package runtime_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func requireGuest(t *testing.T) {
	t.Helper()
	runtimetest.RequireRoot(t)
	if runtime.DetectCgroupDriver() != runtime.CgroupDriverSystemd {
		t.Fatal("not a systemd host with pure cgroup v2: these tests run in test/guest's guest")
	}
}

func cgroupOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func procs(dir string) []int {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// state is the container's status as its shim recorded it, with both pids.
func state(t *testing.T, r *runtime.Runtime, id string) runtime.Status {
	t.Helper()
	st, err := r.State(context.Background(), id)
	if err != nil || st.State != runtime.Running || st.Pid <= 0 || st.ShimPid <= 0 {
		t.Fatalf("container %s: %+v, %v; want it running, with its pid and its shim's", id, st, err)
	}
	return st
}

func readTrim(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Containers started at once under the systemd driver all get their
// scopes. They share one connection to systemd, made by the first start:
// it must outlive that start, or the others never hear that their scopes
// are made (their starts failed after 30 s, and berth run removed the
// service). This test runs first in the binary, so it makes the connection.
func TestGuestConcurrentStartsShareSystemd(t *testing.T) {
	requireGuest(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir(), runtime.WithCgroupDriver(runtime.CgroupDriverSystemd))
	if err != nil {
		t.Fatal(err)
	}
	const n = 4
	errs := make(chan error, n)
	t0 := time.Now()
	for i := range n {
		go func() {
			_, err := r.Run(context.Background(), runtime.Config{
				ID: fmt.Sprintf("together-%d", i), LowerDirs: []string{rootfs}, Args: []string{"sleep", "100"},
				Resources: runtime.Resources{MemoryBytes: 32 << 20},
			})
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("%d containers started at once in %s", n, time.Since(t0).Round(time.Millisecond))
	for i := range n {
		id := fmt.Sprintf("together-%d", i)
		if st, err := r.State(context.Background(), id); err == nil && st.State == runtime.Running {
			if got, want := cgroupOf(t, st.Pid), "0::"+r.CgroupPath(id); got != want {
				t.Errorf("%s: pid %d in %q, want %q", id, st.Pid, got, want)
			}
		}
		if err := r.Delete(context.Background(), id, true); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("delete %s: %v", id, err)
		}
	}
}

// Under the systemd driver, every executor's shim is in its container's
// scope before it forks anything: an OCI runtime started sooner would run,
// and make the container's cgroup, outside the scope systemd is making.
// The container's Before holds the shim at its gate: there it sees the
// scope holding the shim alone, with no child yet.
func TestGuestShimInScopeBeforeItForks(t *testing.T) {
	requireGuest(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir(), runtime.WithCgroupDriver(runtime.CgroupDriverSystemd))
	if err != nil {
		t.Fatal(err)
	}
	for _, ex := range []string{runtime.ExecutorBuiltin, "runc", "crun"} {
		t.Run(ex, func(t *testing.T) {
			if ex != runtime.ExecutorBuiltin {
				if _, err := exec.LookPath(ex); err != nil {
					t.Fatalf("%s is not installed in the guest: %v", ex, err)
				}
			}
			id := "scope-" + ex
			dir := filepath.Join("/sys/fs/cgroup", r.CgroupPath(id))
			var atGate []int
			var children string
			c := runtime.Config{
				ID: id, LowerDirs: []string{rootfs}, Args: []string{"sleep", "100"}, Executor: ex,
				Resources: runtime.Resources{MemoryBytes: 32 << 20, Pids: 16, CPUs: 0.5},
				// Before runs alongside the start, and the shim waits at its
				// gate until it returns: once the scope holds a process, it
				// is the shim, and it must have forked nothing yet.
				Before: func() error {
					deadline := time.Now().Add(60 * time.Second)
					for len(atGate) == 0 && time.Now().Before(deadline) {
						time.Sleep(10 * time.Millisecond)
						atGate = procs(dir)
					}
					if len(atGate) == 1 {
						b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", atGate[0], atGate[0]))
						children = strings.TrimSpace(string(b))
					}
					return nil
				},
			}
			if _, err := r.Run(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			st := state(t, r, id)
			defer func() {
				if err := r.Delete(context.Background(), id, true); err != nil {
					t.Errorf("delete: %v", err)
				}
				if _, err := os.Stat(dir); !os.IsNotExist(err) {
					t.Errorf("scope cgroup %s left after delete: %v", dir, err)
				}
			}()
			if len(atGate) != 1 || children != "" {
				t.Errorf("when the container was about to start, its scope %s held %v (children %q); want the shim alone, with no child",
					dir, atGate, children)
			}
			want := "0::" + r.CgroupPath(id)
			if got := cgroupOf(t, st.Pid); got != want {
				t.Errorf("container pid %d in %q, want %q", st.Pid, got, want)
			}
			if got := cgroupOf(t, st.ShimPid); got != want {
				t.Errorf("shim pid %d in %q, want %q", st.ShimPid, got, want)
			}
			if got := readTrim(t, filepath.Join(dir, "memory.max")); got != strconv.Itoa(32<<20) {
				t.Errorf("memory.max %s, want %d", got, 32<<20)
			}
			if got := readTrim(t, filepath.Join(dir, "cpu.max")); got != "50000 100000" {
				t.Errorf("cpu.max %q, want 50000 100000", got)
			}
			t.Logf("%s: container %d and shim %d in %s", ex, st.Pid, st.ShimPid, want)
		})
	}
}

// The cgroupfs driver keeps working on a pure cgroup v2 host: berth's own
// tree under /sys/fs/cgroup holds the container with its limits, a new
// Runtime on the same state adopts it (same pid), and once its shim is
// killed ReapLost leaves nothing of it running.
func TestGuestCgroupfsDriverOnPureV2(t *testing.T) {
	requireGuest(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	stateDir := t.TempDir()
	r, err := runtime.New(stateDir, runtime.WithCgroupDriver(runtime.CgroupDriverCgroupfs))
	if err != nil {
		t.Fatal(err)
	}
	const id = "cgroupfs-v2"
	if _, err := r.Run(context.Background(), runtime.Config{
		ID: id, LowerDirs: []string{rootfs}, Args: []string{"sh", "-c", "sleep 100 & sleep 100"},
		Resources: runtime.Resources{MemoryBytes: 32 << 20, Pids: 16, CPUs: 0.5},
	}); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = r.Delete(context.Background(), id, true) }()
	st := state(t, r, id)
	path := r.CgroupPath(id)
	if strings.HasSuffix(path, ".scope") || !strings.HasPrefix(path, "/berth") {
		t.Fatalf("cgroupfs driver gave the cgroup %s, want berth's own tree", path)
	}
	dir := filepath.Join("/sys/fs/cgroup", path)
	if got, want := cgroupOf(t, st.Pid), "0::"+path; got != want {
		t.Errorf("container pid %d in %q, want %q", st.Pid, got, want)
	}
	for file, want := range map[string]string{"memory.max": strconv.Itoa(32 << 20), "pids.max": "16", "cpu.max": "50000 100000"} {
		if got := readTrim(t, filepath.Join(dir, file)); got != want {
			t.Errorf("%s %q, want %q", file, got, want)
		}
	}

	r2, err := runtime.New(stateDir, runtime.WithCgroupDriver(runtime.CgroupDriverCgroupfs))
	if err != nil {
		t.Fatal(err)
	}
	adopted, err := r2.State(context.Background(), id)
	if err != nil || adopted.State != runtime.Running || adopted.Pid != st.Pid {
		t.Fatalf("a new Runtime sees %+v, %v; want it running with pid %d", adopted, err, st.Pid)
	}

	// Both of the container's processes run (the shell forks one) before its shim is killed.
	deadline := time.Now().Add(20 * time.Second)
	for len(procs(dir)) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %v, want the container's 2 processes", dir, procs(dir))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := syscall.Kill(st.ShimPid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(20 * time.Second)
	for {
		s, err := r2.State(context.Background(), id)
		if err == nil && s.State == runtime.Unknown {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shim killed, the container is %+v, %v; want unknown", s, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(procs(dir)); n < 2 {
		t.Fatalf("%d processes left in %s after the shim was killed, want the container's 2", n, dir)
	}
	rp, err := r2.ReapLost(context.Background(), id)
	if err != nil || rp.Killed < 2 || rp.How != "cgroup.kill" {
		t.Fatalf("ReapLost: %+v, %v; want 2 or more killed by cgroup.kill", rp, err)
	}
	if left := procs(dir); len(left) != 0 {
		t.Errorf("processes %v still in %s after ReapLost", left, dir)
	}
	t.Logf("cgroupfs on pure v2: container in %s, adopted, %d processes reaped by %s", path, rp.Killed, rp.How)
}

// A container's OnExit command runs out of its systemd scope (which its
// shim shares): the container's task limit, which the command's threads
// alone would exceed, does not stop it.
func TestGuestOnExitLeavesTheScope(t *testing.T) {
	requireGuest(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir(), runtime.WithCgroupDriver(runtime.CgroupDriverSystemd))
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "onexit")
	c := runtime.Config{ID: "guest-onexit", LowerDirs: []string{rootfs}, Args: []string{"sh", "-c", "sleep 1"},
		Resources: runtime.Resources{Pids: 2}}
	c.OnExit = runtimetest.OnExitArgs(out, r.Root(), c.ID)
	st, err := r.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(context.Background(), c.ID, true) })
	scope := cgroupOf(t, st.Pid)
	deadline := time.Now().Add(20 * time.Second)
	var b []byte
	for b, err = os.ReadFile(out); err != nil || len(b) == 0; b, err = os.ReadFile(out) {
		if time.Now().After(deadline) {
			t.Fatalf("the OnExit command did not run: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	seen, cg, _ := strings.Cut(string(b), "\n")
	if seen != "exited 0 <nil>" || cg == scope {
		t.Errorf("the OnExit command saw %q from cgroup %q; the container's scope is %q", seen, cg, scope)
	}
}
