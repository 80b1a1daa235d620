package runtimetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
)

// Suite runs the runtime conformance tests against one executor. Every
// executor berth offers must pass it.
func Suite(t *testing.T, executor string) {
	RequireRoot(t)
	rootfs := BusyboxRootfs(t)
	Probe(t, rootfs)
	state := t.TempDir()
	// With userns an OCI runtime reaches the bundles as an unprivileged
	// id: the state directory must let it pass, as berth's own does (0711).
	for _, d := range []string{state, filepath.Dir(state)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	r, err := runtime.New(state)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{r: r, rootfs: rootfs, executor: executor}

	t.Run("Isolation", h.testIsolation)
	t.Run("Privileges", h.testPrivileges)
	t.Run("RawSocketWhenGranted", h.testRawSocketGranted)
	t.Run("ExitCodes", h.testExitCodes)
	t.Run("StartError", h.testStartError)
	t.Run("CgroupError", h.testCgroupError)
	t.Run("Before", h.testBefore)
	t.Run("KeepOpen", h.testKeepOpen)
	t.Run("OnExit", h.testOnExit)
	t.Run("ProcessSettings", h.testProcessSettings)
	t.Run("ReadonlyRootfs", h.testReadonlyRootfs)
	t.Run("MaskedPaths", h.testMaskedPaths)
	t.Run("OOMKill", h.testOOM)
	t.Run("PidsLimit", h.testPidsLimit)
	t.Run("LogsAndExec", h.testLogsAndExec)
	t.Run("ExecTTY", h.testExecTTY)
	t.Run("StopGracePeriod", h.testStopGrace)
	t.Run("StopEscalates", h.testStopEscalates)
	t.Run("StopWithoutHandlerIsImmediate", h.testStopNoHandler)
	t.Run("LogRotation", h.testLogRotation)
	t.Run("ExclusiveCPUs", h.testExclusiveCPUs)
	t.Run("CleanupLeavesNothing", h.testCleanup)
	t.Run("CgroupsJoined", h.testCgroupsJoined)
	t.Run("Escape", h.testEscape)
	t.Run("ExecStdio", h.testExecStdio)
	t.Run("SymlinkedMountTargets", h.testSymlinkTargets)
	t.Run("MountsThroughLinks", h.testMountsThroughLinks)
	t.Run("ForkBomb", h.testForkBomb)
	t.Run("ExeOverwrite", h.testExeOverwrite)
	t.Run("UserNS", h.testUserNS)
	t.Run("UserNSUnreachable", h.testUserNSUnreachable)
	t.Run("ProcessLimits", h.testProcessLimits)
	t.Run("StopSignal", h.testStopSignal)
	t.Run("Init", h.testInit)
}

type harness struct {
	r        *runtime.Runtime
	rootfs   string
	executor string
	n        int
}

func (h *harness) config(t *testing.T, args ...string) runtime.Config {
	h.n++
	id := fmt.Sprintf("%s-%s-%d", h.executor, strings.ToLower(strings.ReplaceAll(t.Name()[strings.LastIndex(t.Name(), "/")+1:], "_", "")), h.n)
	if len(id) > 60 {
		id = id[:60]
	}
	return runtime.Config{ID: id, LowerDirs: []string{h.rootfs}, Args: args, Executor: h.executor}
}

func (h *harness) run(t *testing.T, c runtime.Config) runtime.Status {
	t.Helper()
	st, err := h.r.Run(context.Background(), c)
	if err != nil {
		t.Fatalf("run %s: %v", c.ID, err)
	}
	t.Cleanup(func() {
		if err := h.r.Delete(context.Background(), c.ID, true); err != nil && !errors.Is(err, runtime.ErrNotFound) {
			t.Errorf("delete %s: %v", c.ID, err)
		}
	})
	return st
}

func (h *harness) wait(t *testing.T, id string) runtime.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := h.r.Wait(ctx, id)
	if err != nil {
		t.Fatalf("wait %s: %v", id, err)
	}
	return st
}

// runToEnd runs a container to its exit and returns its status and stdout+stderr.
func (h *harness) runToEnd(t *testing.T, c runtime.Config) (runtime.Status, string) {
	t.Helper()
	h.run(t, c)
	st := h.wait(t, c.ID)
	return st, h.logs(t, c.ID)
}

func (h *harness) logs(t *testing.T, id string) string {
	t.Helper()
	var out bytes.Buffer
	if err := h.r.Logs(context.Background(), id, runtime.LogOptions{}, &out, &out); err != nil {
		t.Fatalf("logs %s: %v", id, err)
	}
	return out.String()
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) testIsolation(t *testing.T) {
	c := h.config(t, "sh", "-c", `echo pid=$$; echo host=$(hostname); echo procs=$(ls /proc | grep -c '^[0-9]*$'); cat /proc/1/cmdline | tr '\0' ' '; echo`)
	st, out := h.runToEnd(t, c)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d: %s", st.ExitCode, out)
	}
	for _, want := range []string{"pid=1\n", "host=" + c.ID + "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// sh, ls and grep at most: no host process is visible.
	var procs int
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "procs="); ok {
			procs, _ = strconv.Atoi(v)
		}
	}
	if procs < 1 || procs > 4 {
		t.Errorf("container sees %d processes, want only its own:\n%s", procs, out)
	}
}

// ProbeResults parses the probe's "name=value" lines.
func ProbeResults(out string) map[string]string {
	m := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func (h *harness) testPrivileges(t *testing.T) {
	st, out := h.runToEnd(t, h.config(t, "sh", "-c", "probe; grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr ':' '='"))
	if st.ExitCode != 0 {
		t.Fatalf("exit %d: %s", st.ExitCode, out)
	}
	res := ProbeResults(out)
	want := map[string]string{
		"unshare":     "EPERM", // blocked by seccomp even with flags 0, which needs no privilege
		"keyctl":      "EPERM", // allowed to any process without seccomp
		"rawsocket":   "EPERM",
		"mount":       "EPERM",
		"init_module": "EPERM",
		"NoNewPrivs":  "1",
		"Seccomp":     "2",
	}
	for k, v := range want {
		if res[k] != v {
			t.Errorf("%s = %q, want %q\n%s", k, res[k], v, out)
		}
	}
	capEff, _ := strconv.ParseUint(res["CapEff"], 16, 64)
	for _, bit := range []uint{12 /* NET_ADMIN */, 13 /* NET_RAW */, 16 /* SYS_MODULE */, 21 /* SYS_ADMIN */} {
		if capEff&(1<<bit) != 0 {
			t.Errorf("capability %d is effective (CapEff %s)", bit, res["CapEff"])
		}
	}

	// Without the seccomp profile the same calls succeed: the filter, not chance, blocked them.
	c := h.config(t, "probe")
	c.NoSeccomp = true
	_, out = h.runToEnd(t, c)
	res = ProbeResults(out)
	if res["unshare"] != "OK" || res["keyctl"] != "OK" {
		t.Errorf("without seccomp: unshare=%s keyctl=%s, want OK for both\n%s", res["unshare"], res["keyctl"], out)
	}
}

func (h *harness) testRawSocketGranted(t *testing.T) {
	c := h.config(t, "probe")
	c.CapAdd = []string{"NET_RAW"}
	_, out := h.runToEnd(t, c)
	if res := ProbeResults(out); res["rawsocket"] != "OK" {
		t.Errorf("with NET_RAW granted: rawsocket=%s, want OK\n%s", res["rawsocket"], out)
	}
}

func (h *harness) testExitCodes(t *testing.T) {
	for _, code := range []int{0, 1, 42, 255} {
		st, out := h.runToEnd(t, h.config(t, "sh", "-c", fmt.Sprintf("exit %d", code)))
		if st.State != runtime.Exited || st.ExitCode != code {
			t.Errorf("exit %d: got state %s code %d (%s)", code, st.State, st.ExitCode, out)
		}
	}
	// The kernel protects a namespace's PID 1 from signals sent inside it,
	// SIGKILL included: the shell lives on and exits by itself.
	st, out := h.runToEnd(t, h.config(t, "sh", "-c", "kill -KILL $$; echo survived; exit 4"))
	if st.ExitCode != 4 || st.Signal != 0 || !strings.Contains(out, "survived") {
		t.Errorf("PID 1 killing itself: exit %d signal %d output %q, want it to survive and exit 4", st.ExitCode, st.Signal, out)
	}
	// Killed from outside, the status says so.
	c := h.config(t, "sleep", "60")
	h.run(t, c)
	if err := h.r.Kill(context.Background(), c.ID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if st := h.wait(t, c.ID); st.Signal != int(syscall.SIGKILL) && st.ExitCode != 137 {
		t.Errorf("killed from outside: signal %d exit %d, want SIGKILL/137", st.Signal, st.ExitCode)
	}
}

func (h *harness) testStartError(t *testing.T) {
	c := h.config(t, "no-such-command")
	_, err := h.r.Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "no-such-command") {
		t.Fatalf("run of a missing command: err = %v, want one naming the command", err)
	}
	if _, err := h.r.State(context.Background(), c.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("a failed start left the container behind: %v", err)
	}
}

func (h *harness) testProcessSettings(t *testing.T) {
	c := h.config(t, "sh", "-c", "echo uid=$(id -u) gid=$(id -g) cwd=$(pwd) greeting=$GREETING host=$(hostname)")
	c.User = "65534:65534"
	c.Cwd = "/tmp"
	c.Env = []string{"GREETING=hello"}
	c.Hostname = "custom-host"
	st, out := h.runToEnd(t, c)
	want := "uid=65534 gid=65534 cwd=/tmp greeting=hello host=custom-host"
	if st.ExitCode != 0 || !strings.Contains(out, want) {
		t.Errorf("exit %d, output %q, want %q", st.ExitCode, out, want)
	}
}

func (h *harness) testReadonlyRootfs(t *testing.T) {
	c := h.config(t, "sh", "-c", "touch /newfile && echo wrote; echo data > /dev/shm/x && echo shm-ok")
	c.ReadonlyRootfs = true
	_, out := h.runToEnd(t, c)
	if strings.Contains(out, "wrote") || !strings.Contains(out, "Read-only file system") {
		t.Errorf("a read-only rootfs was written to:\n%s", out)
	}
	if !strings.Contains(out, "shm-ok") {
		t.Errorf("/dev/shm should stay writable:\n%s", out)
	}
}

func (h *harness) testMaskedPaths(t *testing.T) {
	_, out := h.runToEnd(t, h.config(t, "sh", "-c",
		"echo keys=$(wc -c < /proc/keys); echo timers=$(wc -c < /proc/timer_list); echo 1 > /proc/sys/kernel/domainname && echo sys-written; echo fw=$(ls /sys/firmware | wc -l)"))
	if !strings.Contains(out, "keys=0\n") || !strings.Contains(out, "timers=0\n") {
		t.Errorf("/proc/keys or /proc/timer_list is not masked:\n%s", out)
	}
	if strings.Contains(out, "sys-written") {
		t.Errorf("/proc/sys is writable:\n%s", out)
	}
	if !strings.Contains(out, "fw=0") {
		t.Errorf("/sys/firmware is not masked:\n%s", out)
	}
}

func (h *harness) testOOM(t *testing.T) {
	c := h.config(t, "sh", "-c", "exec tail /dev/zero")
	c.Resources.MemoryBytes = 16 << 20
	st, out := h.runToEnd(t, c)
	if !st.OOMKilled || st.Reason != "OOMKilled" || st.ExitCode != 137 {
		t.Errorf("memory hog: oomKilled=%v reason=%q exit=%d, want OOMKilled with 137\n%s", st.OOMKilled, st.Reason, st.ExitCode, out)
	}
	// A container that exits on its own is not reported as OOM-killed.
	st, _ = h.runToEnd(t, h.config(t, "true"))
	if st.OOMKilled {
		t.Error("a clean exit was reported as OOM-killed")
	}
}

func (h *harness) testPidsLimit(t *testing.T) {
	c := h.config(t, "sh", "-c", `i=0; while [ $i -lt 100 ]; do sleep 30 & i=$((i+1)); done; echo forked; kill $(jobs -p) 2>/dev/null; echo done`)
	c.Resources.Pids = 20
	st, out := h.runToEnd(t, c)
	if !strings.Contains(out, "can't fork") && !strings.Contains(out, "Resource temporarily unavailable") {
		t.Errorf("100 forks under a limit of 20 all succeeded (exit %d):\n%s", st.ExitCode, out)
	}
}

func (h *harness) testLogsAndExec(t *testing.T) {
	c := h.config(t, "sh", "-c", "echo to-stdout; echo to-stderr >&2; while true; do sleep 0.1; done")
	h.run(t, c)
	var stdout, stderr bytes.Buffer
	eventually(t, 10*time.Second, "both lines in the logs", func() bool {
		stdout.Reset()
		stderr.Reset()
		_ = h.r.Logs(context.Background(), c.ID, runtime.LogOptions{}, &stdout, &stderr)
		return strings.Contains(stdout.String(), "to-stdout") && strings.Contains(stderr.String(), "to-stderr")
	})
	if strings.Contains(stdout.String(), "to-stderr") || strings.Contains(stderr.String(), "to-stdout") {
		t.Errorf("streams mixed: stdout %q stderr %q", stdout.String(), stderr.String())
	}

	var out bytes.Buffer
	code, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{
		Args: []string{"sh", "-c", "cat /etc/hostname; echo pid=$$; ls /proc | grep -c '^[0-9]*$'; exit 7"}, Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatalf("exec: %v", err)
	}
	if code != 7 {
		t.Errorf("exec exit code %d, want 7 (%s)", code, out.String())
	}
	if !strings.Contains(out.String(), c.ID) {
		t.Errorf("exec did not run inside the container: %s", out.String())
	}
	if strings.Contains(out.String(), "pid=1\n") {
		t.Errorf("exec'd process should not be PID 1: %s", out.String())
	}

	// Follow picks up lines written after it started and ends when the container does.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	var followed syncBuffer
	go func() {
		done <- h.r.Logs(ctx, c.ID, runtime.LogOptions{Follow: true}, &followed, &followed)
	}()
	if _, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{Args: []string{"sh", "-c", "echo late-line > /proc/1/fd/1"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a followed line", func() bool { return strings.Contains(followed.String(), "late-line") })
	if _, err := h.r.Stop(context.Background(), c.ID, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("follow: %v", err)
		}
	case <-ctx.Done():
		t.Error("follow did not end when the container exited")
	}
}

func (h *harness) testExecTTY(t *testing.T) {
	c := h.config(t, "sleep", "60")
	h.run(t, c)
	var out syncBuffer
	code, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{
		Args: []string{"sh", "-c", "test -t 0 && test -t 1 && echo is-a-tty; tty"}, Tty: true, Stdout: &out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec with tty: code %d err %v: %s", code, err, out.String())
	}
	// A terminal's line discipline turns "\n" into "\r\n" (once per pty it passes): proof of a pty.
	if !strings.Contains(out.String(), "is-a-tty\r") {
		t.Errorf("exec with tty got no terminal: %q", out.String())
	}
	// The built-in executor takes the terminal from the container's own devpts, so it has a name there.
	if h.executor == runtime.ExecutorBuiltin && !strings.Contains(out.String(), "/dev/pts/0") {
		t.Errorf("the terminal is not one of the container's own: %q", out.String())
	}
}

func (h *harness) testStopGrace(t *testing.T) {
	c := h.config(t, "sh", "-c", "trap 'echo got-term; exit 5' TERM; echo ready; while true; do sleep 0.1; done")
	h.run(t, c)
	eventually(t, 10*time.Second, "the trap to be set", func() bool { return strings.Contains(h.logs(t, c.ID), "ready") })
	start := time.Now()
	st, err := h.r.Stop(context.Background(), c.ID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 5 || st.Signal != 0 {
		t.Errorf("stop of a TERM-handling container: exit %d signal %d, want exit 5", st.ExitCode, st.Signal)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("stop took %v though the container handled SIGTERM at once", el)
	}
}

func (h *harness) testStopEscalates(t *testing.T) {
	// The handler catches SIGTERM and carries on: only SIGKILL ends it.
	c := h.config(t, "sh", "-c", "trap 'echo got-term' TERM; echo ready; while true; do sleep 0.1; done")
	h.run(t, c)
	eventually(t, 10*time.Second, "the trap to be set", func() bool { return strings.Contains(h.logs(t, c.ID), "ready") })
	grace := 700 * time.Millisecond
	start := time.Now()
	st, err := h.r.Stop(context.Background(), c.ID, grace)
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if el < grace {
		t.Errorf("SIGKILL came after %v, before the %v grace period", el, grace)
	}
	if st.Signal != int(syscall.SIGKILL) && st.ExitCode != 137 {
		t.Errorf("container ignoring SIGTERM: signal %d exit %d, want SIGKILL", st.Signal, st.ExitCode)
	}
}

// A PID 1 with no SIGTERM handler never sees SIGTERM (the kernel drops it),
// so stopping it does not wait out the grace period for nothing.
func (h *harness) testStopNoHandler(t *testing.T) {
	c := h.config(t, "sleep", "60")
	st0 := h.run(t, c)
	// An external runtime's start returns before its init has exec'd the workload.
	eventually(t, 10*time.Second, "sleep to be exec'd", func() bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st0.Pid))
		return strings.HasPrefix(string(b), "sleep")
	})
	start := time.Now()
	st, err := h.r.Stop(context.Background(), c.ID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Errorf("stop of a process without a SIGTERM handler took %v", el)
	}
	if st.State != runtime.Exited || st.Signal != int(syscall.SIGKILL) && st.ExitCode != 137 {
		t.Errorf("status %+v, want killed", st)
	}
}

func (h *harness) testLogRotation(t *testing.T) {
	c := h.config(t, "sh", "-c", "i=0; while [ $i -lt 2000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done")
	c.LogMaxSize = 16 << 10
	c.LogMaxFiles = 2
	h.runToEnd(t, c)
	dir := filepath.Join(h.stateDir(), c.ID)
	live, err := os.Stat(filepath.Join(dir, "container.log"))
	if err != nil {
		t.Fatal(err)
	}
	if live.Size() > 16<<10 {
		t.Errorf("live log is %d bytes, over the 16 KiB bound", live.Size())
	}
	if _, err := os.Stat(filepath.Join(dir, "container.log.1")); err != nil {
		t.Errorf("no rotated file: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "container.log.2")); err == nil {
		t.Error("more rotated files kept than LogMaxFiles allows")
	}
	if out := h.logs(t, c.ID); !strings.Contains(out, "line-1999-") {
		t.Errorf("the last line is missing from the logs")
	}
}

func (h *harness) stateDir() string {
	return h.r.Root()
}

func (h *harness) testExclusiveCPUs(t *testing.T) {
	c := h.config(t, "sh", "-c", "cat /proc/self/status | grep Cpus_allowed_list; sleep 60")
	c.Resources.CPUSet = "0"
	c.Resources.CPUs = 1
	h.run(t, c)
	eventually(t, 10*time.Second, "the cpuset to show", func() bool {
		return strings.Contains(h.logs(t, c.ID), "Cpus_allowed_list:")
	})
	if out := h.logs(t, c.ID); !strings.Contains(out, "Cpus_allowed_list:\t0\n") {
		t.Errorf("container not pinned to CPU 0: %q", out)
	}
	quota, ok := cgroupCPUQuota(h.r.CgroupPath(c.ID))
	if ok && quota != "-1" && quota != "max" {
		t.Errorf("a pinned container has a CFS quota %q; pinned CPUs must not be throttled", quota)
	}
}

func cgroupCPUQuota(path string) (string, bool) {
	for _, f := range []string{"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_quota_us", "/sys/fs/cgroup" + path + "/cpu.max"} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.Fields(string(b))[0], true
		}
	}
	return "", false
}

// A cgroup the host refuses (CPUs it does not have) fails the start with
// the reason, and leaves no container, state or cgroup behind.
func (h *harness) testCgroupError(t *testing.T) {
	c := h.config(t, "true")
	c.Resources.CPUSet = "1000-1001"
	_, err := h.r.Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "cpuset") {
		t.Fatalf("run with a cpuset of CPUs the host lacks: err = %v, want one naming the cpuset", err)
	}
	if _, err := h.r.State(context.Background(), c.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("a failed start left the container behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.stateDir(), c.ID)); !os.IsNotExist(err) {
		t.Errorf("a failed start left its state dir behind")
	}
	for _, cg := range []string{"memory", "pids", "cpu", "cpuset", ""} {
		p := filepath.Join("/sys/fs/cgroup", cg, h.r.CgroupPath(c.ID))
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left behind", p)
		}
	}
}

// The container's process starts only after Before returned: what Before
// puts in place (here a file on a bind-mounted directory, written after a
// pause) is there when it runs. Before's error fails the start and leaves
// nothing behind.
func (h *harness) testBefore(t *testing.T) {
	dir := t.TempDir()
	c := h.config(t, "cat", "/mnt/flag")
	c.Mounts = []specs.Mount{{Destination: "/mnt", Source: dir, Type: "bind", Options: []string{"rbind", "ro"}}}
	c.Before = func() error {
		time.Sleep(100 * time.Millisecond) // longer than the rest of a start takes
		return os.WriteFile(filepath.Join(dir, "flag"), []byte("ready\n"), 0o644)
	}
	st, out := h.runToEnd(t, c)
	if st.ExitCode != 0 || strings.TrimSpace(out) != "ready" {
		t.Errorf("container after Before: exit %d, output %q; want 0 and \"ready\"", st.ExitCode, out)
	}

	c = h.config(t, "true")
	c.Before = func() error { return errors.New("no network for you") }
	_, err := h.r.Run(context.Background(), c)
	if err == nil || !strings.Contains(err.Error(), "no network for you") {
		t.Fatalf("run with a failing Before: err = %v, want its error", err)
	}
	if _, err := h.r.State(context.Background(), c.ID); !errors.Is(err, runtime.ErrNotFound) {
		t.Errorf("a failed start left the container behind: %v", err)
	}
}

// testKeepOpen: descriptors given in KeepOpen stay open, in the shim, for
// as long as the container runs, though the caller closed its copies;
// the container never has them; they close when it ends.
func (h *harness) testKeepOpen(t *testing.T) {
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(wr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	c := h.config(t, "sh", "-c", "ls -l /proc/self/fd /proc/1/fd; echo listed; sleep 60")
	c.KeepOpen = []*os.File{wr}
	// berth's init, PID 1 there, is the shim's clone and never execs.
	c.Init = h.executor == runtime.ExecutorBuiltin
	h.run(t, c)
	wr.Close()
	eventually(t, 10*time.Second, "the container to list its descriptors", func() bool {
		return strings.Contains(h.logs(t, c.ID), "listed")
	})
	if out := h.logs(t, c.ID); strings.Contains(out, fmt.Sprintf("pipe:[%d]", st.Ino)) {
		t.Errorf("the container has a descriptor kept for the caller:\n%s", out)
	}
	buf := make([]byte, 1)
	_ = rd.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := rd.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the kept descriptor closed while the container runs: %v", err)
	}
	if _, err := h.r.Stop(context.Background(), c.ID, time.Second); err != nil {
		t.Fatal(err)
	}
	_ = rd.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := rd.Read(buf); !errors.Is(err, io.EOF) {
		t.Errorf("the kept descriptor is still open after the container ended: %v", err)
	}
}

func (h *harness) testCleanup(t *testing.T) {
	c := h.config(t, "sleep", "60")
	h.run(t, c)
	if err := h.r.Delete(context.Background(), c.ID, false); !errors.Is(err, runtime.ErrRunning) {
		t.Fatalf("delete of a running container without force: %v, want ErrRunning", err)
	}
	if err := h.r.Delete(context.Background(), c.ID, true); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.stateDir(), c.ID)
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("state dir %s left behind", dir)
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if bytes.Contains(mounts, []byte(dir)) {
		t.Errorf("a mount under %s is left behind", dir)
	}
	for _, cg := range []string{"memory", "pids", "cpu", ""} {
		p := filepath.Join("/sys/fs/cgroup", cg, h.r.CgroupPath(c.ID))
		if _, err := os.Stat(p); err == nil {
			t.Errorf("cgroup %s left behind", p)
		}
	}
}
