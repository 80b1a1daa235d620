package runtimetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime"
)

// The escape suite: what a container must not reach, checked against
// every executor, so the built-in one is never weaker than its peers.
// Each case asserts the specific refusal, so each can fail.

// expect checks probe results against wanted values; a value of the form
// "A|B" accepts either.
func expect(t *testing.T, res map[string]string, want map[string]string, out string) {
	t.Helper()
	for k, v := range want {
		ok := false
		for _, alt := range strings.Split(v, "|") {
			ok = ok || res[k] == alt
		}
		if !ok {
			t.Errorf("%s = %q, want %s\n%s", k, res[k], v, out)
		}
	}
}

func (h *harness) testEscape(t *testing.T) {
	// The probe runs as the container's main process and as an exec'd one:
	// both must be held the same.
	c := h.config(t, "sh", "-c", fmt.Sprintf("probe escape %d; sleep 60", os.Getpid()))
	h.run(t, c)
	eventually(t, 10*time.Second, "the probe to finish", func() bool { return strings.Contains(h.logs(t, c.ID), "fds=") })
	main := h.logs(t, c.ID)
	var execOut bytes.Buffer
	if _, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{
		Args: []string{"probe", "escape", strconv.Itoa(os.Getpid())}, Stdout: &execOut, Stderr: &execOut,
	}); err != nil {
		t.Fatal(err)
	}
	want := h.escapeWant()
	t.Run("Init", func(t *testing.T) { expect(t, ProbeResults(main), want, main) })
	t.Run("Exec", func(t *testing.T) { expect(t, ProbeResults(execOut.String()), want, execOut.String()) })
}

// escapeWant is what the escape probe must find in a container of this executor.
func (h *harness) escapeWant() map[string]string {
	want := map[string]string{
		"mount": "EPERM",
		// Docker's capability set keeps CAP_MKNOD: the node may be made,
		// but neither the device cgroup nor the nodev mounts let it open.
		"mknod":          "OK|EPERM",
		"mknod_open":     "EPERM|EACCES",
		"mknod_mem":      "OK|EPERM",
		"mknod_mem_open": "EPERM|EACCES",
		"rawsocket":      "EPERM",
		"packetsocket":   "EPERM",
		"keyctl":         "EPERM",
		"bpf":            "EPERM",
		"unshare_user":   "EPERM",
		"unshare_mnt":    "EPERM",
		// The host's pids do not exist in the container's PID namespace.
		"ptrace_host":    "ESRCH|EPERM",
		"kill_host":      "ESRCH",
		"proc_sys_write": "EROFS",
		"sysrq_write":    "EROFS|ENOENT", // absent without CONFIG_MAGIC_SYSRQ
		"sys_write":      "EROFS",
		// The cgroup tree is read-only (or not there at all).
		"cgroup_procs_v2":      "EROFS|ENOENT",
		"cgroup_procs_v1":      "EROFS|ENOENT",
		"cgroup_procs_unified": "EROFS|ENOENT",
		"cgroup_mkdir":         "EROFS|ENOENT",
		"cgroup_release_agent": "EROFS|ENOENT",
		"open_by_handle":       "EPERM",
		// No descriptor but stdio reaches the container.
		"fds": "0,1,2",
	}
	if h.executor != "crun" {
		// A /dev/core link to /proc/kcore (absent on most kernels, masked
		// where present) only dangles: the built-in executor makes none, nor
		// does runc. crun 1.8 makes one, which berth cannot stop.
		want["dev_core"] = "ENOENT"
	}
	return want
}

// testExecStdio: an exec'd process gets pipes (never the caller's file or
// terminal), has no controlling terminal, cannot read back what the
// caller's output file held, and writes nothing to it after Exec returned.
func (h *harness) testExecStdio(t *testing.T) {
	t.Run("Default", func(t *testing.T) { h.execStdio(t, false) })
	t.Run("UserNS", func(t *testing.T) { h.execStdio(t, true) })
}

func (h *harness) execStdio(t *testing.T, userns bool) {
	c := h.config(t, "sleep", "60")
	c.UserNS = userns
	h.run(t, c)
	const secret = "HOST-SECRET-4f1c"
	host, out := CallerFile(t, secret)
	// The caller's terminal as stdin, as an operator's shell would give it.
	_, pts := OpenPty(t)
	code, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{
		Args: []string{"probe", "stdio"}, Stdin: pts, Stdout: out, Stderr: out,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: code %d err %v", code, err)
	}
	fi, err := os.Stat(host)
	if err != nil {
		t.Fatal(err)
	}
	atReturn := fi.Size()
	b, _ := os.ReadFile(host)
	res := ProbeResults(string(b))
	ExpectCallerKept(t, res, string(b), secret, pts)
	for _, fd := range []string{"fd0", "fd1", "fd2"} {
		if !strings.HasPrefix(res[fd], "pipe:") {
			t.Errorf("%s is %q, want a pipe berth relays", fd, res[fd])
		}
	}
	if strings.Contains(res["parent_reopen1"], "OK") {
		t.Errorf("the container reopened the caller's output file: %q", res["parent_reopen1"])
	}
	// The child the exec left keeps writing: after Exec returned, nothing
	// may arrive. (runc relays until every holder of the pipes is gone: its
	// exec returns only once the writer has made its last try.)
	ExpectNoLateWrites(t, filepath.Join(h.stateDir(), c.ID, "upper", "tmp", "late"), host, atReturn, 10*time.Second)
}

// testSymlinkTargets: an image whose /etc/hosts, /dev or /proc are links
// to host paths must not make the runtime mount or write there. The
// container may refuse to start; the host paths stay untouched.
func (h *harness) testSymlinkTargets(t *testing.T) {
	hostDir := t.TempDir()
	hostFile := filepath.Join(hostDir, "host-file")
	if err := os.WriteFile(hostFile, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A volume's destination too: a tmpfs or a bind mount of a directory
	// of the node at /data, which the image makes a link to the host's
	// directory, must land in the container's own tree.
	volumeSrc := t.TempDir()
	mounts := map[string][]specs.Mount{
		"tmpfs": {{Destination: "/data/sub", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "nodev"}}},
		"bind":  {{Destination: "/data/sub", Type: "bind", Source: volumeSrc, Options: []string{"rbind", "nosuid"}}},
	}
	for _, tc := range []struct {
		name, link, target string
		userns             bool
		mounts             string
	}{
		{"hosts", "etc/hosts", hostFile, false, ""},
		{"dev", "dev", hostDir, false, ""},
		{"proc", "proc", hostDir, false, ""},
		{"hosts-userns", "etc/hosts", hostFile, true, ""},
		{"dev-userns", "dev", hostDir, true, ""},
		{"proc-userns", "proc", hostDir, true, ""},
		{"volume-tmpfs", "data", hostDir, false, "tmpfs"},
		{"volume-bind", "data", hostDir, false, "bind"},
		{"volume-bind-userns", "data", hostDir, true, "bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			layer := t.TempDir()
			if err := os.MkdirAll(filepath.Join(layer, filepath.Dir(tc.link)), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(tc.target, filepath.Join(layer, tc.link)); err != nil {
				t.Fatal(err)
			}
			c := h.config(t, "sh", "-c", "echo container > /etc/hosts; echo x > /dev/x; echo x > /proc/x; echo x > /data/sub/x; true")
			c.LowerDirs = []string{layer, h.rootfs}
			c.Mounts = mounts[tc.mounts]
			c.UserNS = tc.userns
			if _, err := h.r.Run(context.Background(), c); err == nil {
				t.Cleanup(func() { _ = h.r.Delete(context.Background(), c.ID, true) })
				h.wait(t, c.ID)
			} else {
				t.Logf("refused: %v", err)
			}
			if tc.mounts == "bind" && !tc.userns {
				// Followed inside the container's tree, the link leads the
				// volume to the container's own copy of that path.
				if b, _ := os.ReadFile(filepath.Join(volumeSrc, "x")); string(b) != "x\n" {
					t.Errorf("the volume at /data/sub holds %q, want the container's x", b)
				}
			}
			if b, _ := os.ReadFile(hostFile); string(b) != "host\n" {
				t.Errorf("the host file was written through the image's link: %q", b)
			}
			ents, _ := os.ReadDir(hostDir)
			if len(ents) != 1 {
				t.Errorf("the host directory got entries through the image's link: %v", ents)
			}
			mounts, _ := os.ReadFile("/proc/self/mountinfo")
			if bytes.Contains(mounts, []byte(hostDir)) {
				t.Errorf("something is mounted on the host directory %s", hostDir)
			}
		})
	}
}

// testForkBomb: a fork bomb stays within the pids limit, and the
// container is still stopped and removed cleanly.
func (h *harness) testForkBomb(t *testing.T) {
	c := h.config(t, "sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 60")
	c.Resources.Pids = 32
	st := h.run(t, c)
	peak := 0
	// pids.events counts the forks the limit refused.
	eventually(t, 20*time.Second, "the bomb to hit the limit", func() bool {
		peak = max(peak, pidsCurrent(h.r.CgroupPath(c.ID)))
		ev := pidsFile(h.r.CgroupPath(c.ID), "pids.events")
		return strings.HasPrefix(ev, "max ") && ev != "max 0"
	})
	for range 20 {
		peak = max(peak, pidsCurrent(h.r.CgroupPath(c.ID)))
		time.Sleep(10 * time.Millisecond)
	}
	if peak > 32 {
		t.Errorf("the container reached %d processes under a limit of 32", peak)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := h.r.Stop(ctx, c.ID, 0); err != nil {
		t.Fatalf("stop a fork-bombed container (pid %d): %v", st.Pid, err)
	}
	if err := h.r.Delete(ctx, c.ID, false); err != nil {
		t.Fatalf("remove a fork-bombed container: %v", err)
	}
}

func pidsCurrent(path string) int {
	n, _ := strconv.Atoi(pidsFile(path, "pids.current"))
	return n
}

// pidsFile reads a file of the container's pids cgroup, on v1 or v2.
func pidsFile(path, name string) string {
	for _, f := range []string{"/sys/fs/cgroup/pids" + path + "/" + name, "/sys/fs/cgroup" + path + "/" + name} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	return ""
}

// testExeOverwrite is CVE-2019-5736's attack: a script whose interpreter
// is /proc/self/exe, run by exec, makes the exec'ing binary (for the
// built-in executor, berth's own) run inside the container. The
// container's main process opens that process's /proc/PID/exe, tries to
// write it, and tries again through the held descriptor once the shim is
// killed and nothing runs the binary any more (before, the kernel answers
// "text file busy" whatever the view). The runtime runs from a copy of
// the binary, so that the test process is not one that runs it.
func (h *harness) testExeOverwrite(t *testing.T) {
	t.Run("Default", func(t *testing.T) { h.exeOverwrite(t, false, false) })
	if h.executor == runtime.ExecutorBuiltin {
		// Given CAP_SYS_ADMIN, the container may clone the view's mount
		// and clear its read-only flag: the view must stay read-only below.
		t.Run("SysAdmin", func(t *testing.T) { h.exeOverwrite(t, true, false) })
		// In a user namespace: held the same, by the same read-only view.
		t.Run("UserNS", func(t *testing.T) { h.exeOverwrite(t, false, true) })
	}
}

// Long because it is one escape attempt told step by step, each step
// asserting what the one before left behind.
func (h *harness) exeOverwrite(t *testing.T, admin, userns bool) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "berth-copy")
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := runtime.New(t.TempDir(), runtime.WithBinary(bin))
	if err != nil {
		t.Fatal(err)
	}
	rootfs := t.TempDir()
	if err := WriteBusyboxRootfs(rootfs); err != nil {
		t.Fatal(err)
	}
	Probe(t, rootfs)
	CopyLibraries(t, rootfs, bin)
	hc := &harness{r: r, rootfs: rootfs, executor: h.executor, n: h.n}
	// A peer's binary runs only for the moment it takes to refuse the
	// script's arguments: the script runs again and again, for a shorter
	// watch, and catching it is best effort.
	builtin := h.executor == runtime.ExecutorBuiltin
	watch := 3000
	if builtin {
		watch = 20000
	}
	c := hc.config(t, "sh", "-c", "printf '#!/proc/self/exe\\n' > /tmp/x && chmod +x /tmp/x && mkfifo /tmp/plan && "+
		fmt.Sprintf("probe exe %d > /tmp/attack.tmp; mv /tmp/attack.tmp /tmp/attack; sleep 60", watch))
	if admin {
		c.CapAdd = []string{"SYS_ADMIN"}
	}
	c.UserNS = userns
	st := hc.run(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	upper := filepath.Join(r.Root(), c.ID, "upper", "tmp")
	eventually(t, 10*time.Second, "the script and fifo", func() bool {
		_, err := os.Stat(filepath.Join(upper, "plan"))
		return err == nil
	})
	// berth's binary, when it is what runs, waits on the fifo as a shim
	// would for its plan: the attacker has all the time it needs.
	partial := func() string { b, _ := os.ReadFile(filepath.Join(upper, "attack.tmp")); return string(b) }
	scriptDone := make(chan struct{})
	go func() {
		defer close(scriptDone)
		for ctx.Err() == nil {
			_, _ = r.Exec(ctx, c.ID, runtime.ExecProcess{Args: []string{"/tmp/x"},
				Env: []string{"_BERTH_STAGE=shim", "_BERTH_PLAN=/tmp/plan"}})
			if _, err := os.Stat(filepath.Join(upper, "attack")); builtin || err == nil || strings.Contains(partial(), "held=") {
				return
			}
		}
	}()
	eventually(t, 30*time.Second, "the attacker to hold the binary or give up", func() bool {
		_, err := os.Stat(filepath.Join(upper, "attack"))
		return strings.Contains(partial(), "held=") || err == nil
	})
	if strings.Contains(partial(), "held=") {
		// The attacker killed the process it held: the exec stage is gone
		// with it. Killing the shim leaves no process running the binary.
		<-scriptDone
		if cur, err := r.State(ctx, c.ID); err == nil && cur.ShimPid > 0 {
			_ = syscall.Kill(cur.ShimPid, syscall.SIGKILL)
			eventually(t, 10*time.Second, "the shim to die", func() bool { return syscall.Kill(cur.ShimPid, 0) != nil })
		}
		if pid := HostPidOf(st.Pid, "probe\x00exe"); pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGUSR1)
		}
	}
	var out string
	eventually(t, 40*time.Second, "the attacker's report", func() bool {
		b, err := os.ReadFile(filepath.Join(upper, "attack"))
		out = string(b)
		return err == nil
	})
	res := ProbeResults(out)
	if b, _ := os.ReadFile(bin); !bytes.Equal(b, data) {
		t.Errorf("the binary was changed from inside the container")
	}
	if builtin {
		if res["foreign"] == "none" {
			t.Fatalf("the script did not run berth's binary in the container, the attack was not tried:\n%s", out)
		}
		// A read-only view: reading is what runc allows too; writing is
		// refused by the filesystem (or, for the fallback copy, by its seals).
		want := map[string]string{"exe_open_w": "EROFS|ETXTBSY", "go_on": "1", "exe_reopen_w": "EROFS", "exe_clone": "EPERM"}
		if admin {
			// The kernel refuses to clone a mount of another mount namespace
			// (EINVAL); were it cloned, the overlay below has no upper layer.
			want["exe_clone"], want["exe_clone_w"] = "EINVAL|OK", "EROFS|"
		}
		if os.Getenv(runtime.ExeViewEnv) == "memfd" {
			want = map[string]string{"go_on": "1", "exe_reopen_w": "OK", "exe_repwrite": "EPERM", "exe_clone_pwrite": "EPERM|"}
		}
		expect(t, res, want, out)
		return
	}
	// A peer runs its own binary there, if any: whatever it shows must not be writable.
	if res["exe_pwrite"] == "OK" || res["exe_repwrite"] == "OK" || res["exe_clone_pwrite"] == "OK" {
		t.Errorf("%s: a host binary was writable from the container:\n%s", h.executor, out)
	}
	t.Logf("%s:\n%s", h.executor, out)
}

// HostPidOf finds the host pid of a process in the PID namespace of
// container process ref whose command line starts with prefix.
func HostPidOf(ref int, prefix string) int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", ref))
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if l, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid)); l != ns {
			continue
		}
		if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid)); strings.HasPrefix(string(b), prefix) {
			return pid
		}
	}
	return 0
}

// testCgroupsJoined: the container's process is in its own cgroup in every
// hierarchy the host has (every v1 controller, named hierarchies and the
// unified one on a hybrid host), so no controller leaves it unaccounted.
func (h *harness) testCgroupsJoined(t *testing.T) {
	c := h.config(t, "sleep", "60")
	st := h.run(t, c)
	want := h.r.CgroupPath(c.ID)
	mine, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var b []byte
	eventually(t, 10*time.Second, "the container's cgroups", func() bool {
		b, _ = os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", st.Pid))
		return len(b) > 0
	})
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if n := len(strings.Split(strings.TrimSpace(string(mine)), "\n")); len(lines) != n {
		t.Errorf("the container is in %d hierarchies, the host has %d", len(lines), n)
	}
	for _, line := range lines {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if f[0] == "0" && h.executor == "crun" && hybrid() {
			// crun refuses a hybrid host, so berth runs it where the unified mount is hidden.
			t.Logf("crun cannot join the unified hierarchy of a hybrid host: it is in %q", f[2])
			continue
		}
		// The runtime (runc included) may nest the container's cgroup below that path.
		if !strings.HasPrefix(f[2], want) {
			t.Errorf("hierarchy %s:%s: the container is in %q, not its own %q", f[0], f[1], f[2], want)
		}
	}
}

func hybrid() bool {
	var st, root syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC &&
		syscall.Statfs("/sys/fs/cgroup", &root) == nil && root.Type != unix.CGROUP2_SUPER_MAGIC
}
