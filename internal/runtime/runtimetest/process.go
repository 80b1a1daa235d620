package runtimetest

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/runtime"
)

// testProcessLimits: rlimits, namespaced sysctls and extra /etc/hosts
// lines are what the process sees.
func (h *harness) testProcessLimits(t *testing.T) {
	c := h.config(t, "sh", "-c", "grep -E 'Max (open files|processes)' /proc/self/limits; "+
		"echo shmmax=$(cat /proc/sys/kernel/shmmax) somaxconn=$(cat /proc/sys/net/core/somaxconn); cat /etc/hosts")
	c.Rlimits = []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Soft: 321, Hard: 654}, {Type: "RLIMIT_NPROC", Soft: 500, Hard: 600}}
	c.Sysctls = map[string]string{"kernel.shmmax": "123456789", "net.core.somaxconn": "777"}
	c.ExtraHosts = []string{"10.9.8.7 db.example db2"}
	st, out := h.runToEnd(t, c)
	if st.ExitCode != 0 {
		t.Fatalf("exit %d: %s", st.ExitCode, out)
	}
	for _, re := range []string{"Max open files +321 +654", "Max processes +500 +600"} {
		if !regexpMatch(re, out) {
			t.Errorf("limits: want %q in\n%s", re, out)
		}
	}
	if !strings.Contains(out, "shmmax=123456789 somaxconn=777") {
		t.Errorf("sysctls not set:\n%s", out)
	}
	if !strings.Contains(out, "10.9.8.7\tdb.example\tdb2") {
		t.Errorf("/etc/hosts lacks the extra line:\n%s", out)
	}
}

// testStopSignal: Stop sends the config's stop signal, not SIGTERM.
func (h *harness) testStopSignal(t *testing.T) {
	c := h.config(t, "sh", "-c", "trap 'exit 3' TERM; trap 'exit 7' USR1; echo ready; while true; do sleep 0.1; done")
	c.StopSignal = syscall.SIGUSR1
	h.run(t, c)
	eventually(t, 10*time.Second, "the traps to be set", func() bool { return strings.Contains(h.logs(t, c.ID), "ready") })
	st, err := h.r.Stop(context.Background(), c.ID, 20*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 7 {
		t.Errorf("stop with SIGUSR1 as stop signal: exit %d signal %d, want exit 7", st.ExitCode, st.Signal)
	}
}

// testInit: with Init, PID 1 is berth's init, which reaps an orphan the
// workload leaves (without it the orphan stays a zombie), passes SIGTERM
// on to a workload that has no handler, and cannot be opened for writing.
func (h *harness) testInit(t *testing.T) {
	if h.executor != runtime.ExecutorBuiltin {
		c := h.config(t, "true")
		c.Init = true
		if _, err := h.r.Run(context.Background(), c); err == nil || !strings.Contains(err.Error(), "init") {
			t.Fatalf("init with the %s executor: %v, want refused", h.executor, err)
		}
		return
	}
	// The subshell leaves a sleep orphaned; the workload itself never waits.
	script := "(sleep 0.2 &); exec sleep 60"
	// ps prints PID 1's name, then "zombie" for each zombie and "orphan"
	// while the orphaned sleep lives.
	ps := func(id string) string {
		var out bytes.Buffer
		if _, err := h.r.Exec(context.Background(), id, runtime.ExecProcess{
			Args: []string{"sh", "-c", "cat /proc/1/comm; for d in /proc/[0-9]*; do read -r l < $d/stat; case $l in *') Z '*) echo zombie;; esac; " +
				"case $(tr '\\0' ' ' < $d/cmdline) in 'sleep 0.2 ') echo orphan;; esac; done"}, Stdout: &out, Stderr: &out,
		}); err != nil {
			t.Fatalf("exec in %s: %v", id, err)
		}
		return out.String()
	}
	plain := h.config(t, "sh", "-c", script)
	h.run(t, plain)
	eventually(t, 10*time.Second, "the orphan to become a zombie without init", func() bool {
		return strings.Contains(ps(plain.ID), "zombie")
	})

	c := h.config(t, "sh", "-c", script)
	c.Init = true
	h.run(t, c)
	var out string
	eventually(t, 10*time.Second, "the orphan to end and be reaped under init", func() bool {
		out = ps(c.ID)
		return !strings.Contains(out, "orphan") && !strings.Contains(out, "zombie")
	})
	if !strings.HasPrefix(out, "init\n") {
		t.Fatalf("PID 1 is not berth's init:\n%s", out)
	}

	var fds bytes.Buffer
	if _, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{Args: []string{"ls", "/proc/1/fd"}, Stdout: &fds, Stderr: &fds}); err != nil {
		t.Fatalf("exec in %s: %v", c.ID, err)
	}
	if got := strings.Fields(fds.String()); strings.Join(got, " ") != "0 1 2" {
		t.Errorf("berth's init holds descriptors beyond its stdio: %q, want 0 1 2", fds.String())
	}

	var w bytes.Buffer
	code, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{Args: []string{"sh", "-c", "echo x >> /proc/1/exe"}, Stdout: &w, Stderr: &w})
	if err != nil || code == 0 || !regexpMatch("Read-only file system|Text file busy", w.String()) {
		t.Errorf("writing PID 1's binary from inside: exit %d %v %q, want refused", code, err, w.String())
	}

	start := time.Now()
	st, err := h.r.Stop(context.Background(), c.ID, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st.ExitCode != 128+int(syscall.SIGTERM) || time.Since(start) > 5*time.Second {
		t.Errorf("stop under init: exit %d signal %d after %v, want 143 (SIGTERM passed to sleep) at once", st.ExitCode, st.Signal, time.Since(start))
	}

	h.initNamedFirst(t)

	bad := h.config(t, "/no/such/program")
	bad.Init = true
	if _, err := h.r.Run(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "/no/such/program") {
		t.Errorf("a workload that cannot exec under init: %v, want its start error", err)
	}
	_ = h.r.Delete(context.Background(), bad.ID, true)
}

// initNamedFirst: a workload that reads PID 1's name first thing finds
// init already named, however soon after the fork it runs.
func (h *harness) initNamedFirst(t *testing.T) {
	for i := range 5 {
		c := h.config(t, "cat", "/proc/1/comm")
		c.Init = true
		if st, out := h.runToEnd(t, c); st.ExitCode != 0 || out != "init\n" {
			t.Fatalf("run %d: the workload's first look at PID 1's name: exit %d %q, want init", i, st.ExitCode, out)
		}
	}
}

func regexpMatch(re, s string) bool { return regexp.MustCompile(re).MatchString(s) }
