package runtimetest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/runtime"
)

// testUserNS: with UserNS the container's root is root only inside. Its
// ids map to a host range of its own (never another container's), what
// it writes to its rootfs and to a host directory is owned on the host by
// that range, the image still looks root-owned inside, /sys works in a
// network namespace the host made (as the agent's are), exec joins the
// namespace too, and every escape case stays blocked. Removal frees the range.
//
// Long because it is one scenario whose steps build on each other: the ids
// seen inside, then outside, then the files written with them.
func (h *harness) testUserNS(t *testing.T) {
	// A container's root is a stranger to the host: the volume must let it in.
	vol := t.TempDir()
	for dir, mode := range map[string]os.FileMode{vol: 0o777, filepath.Dir(vol): 0o711} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	// Data the host's root owns (a named volume, a secret) is bound idmapped:
	// the container's root reads and writes it as the host's root.
	data := t.TempDir()
	if err := os.WriteFile(filepath.Join(data, "secret"), []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ns := filepath.Join(t.TempDir(), "ns")
	if err := netns.Create(ns, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	script := `echo uid=$(id -u) gid=$(id -g) image=$(stat -c %u:%g /bin/sh)
echo uidmap=$(cat /proc/self/uid_map)
echo gidmap=$(cat /proc/self/gid_map)
touch /made-in-rootfs /vol/made-in-volume /data/made-in-data
echo data=$(cat /data/secret) dataowner=$(stat -c %u /data/secret)
echo sysnet=$(ls /sys/class/net | tr '\n' ' ')
echo lowports=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start)
probe escape ` + strconv.Itoa(os.Getpid()) + `
sleep 60`
	c := h.config(t, "sh", "-c", script)
	c.UserNS = true
	c.NetNS = ns
	c.Mounts = []specs.Mount{
		{Destination: "/vol", Source: vol, Type: "bind", Options: []string{"rbind", "rw"}},
		{Destination: "/data", Source: data, Type: "bind", Options: []string{"rbind", "idmap"}},
	}
	h.run(t, c)
	eventually(t, 10*time.Second, "the probe to finish", func() bool { return strings.Contains(h.logs(t, c.ID), "fds=") })
	out := h.logs(t, c.ID)
	res := ProbeResults(out)
	base := mappedRoot(t, res["uidmap"], out)
	if !strings.Contains(out, "uid=0 gid=0 ") {
		t.Errorf("inside, id is not root:\n%s", out)
	}
	if !strings.Contains(out, "image=0:0") {
		t.Errorf("the image's files do not look root-owned inside (idmapped layers):\n%s", out)
	}
	if res["gidmap"] != res["uidmap"] {
		t.Errorf("gid_map %q differs from uid_map %q", res["gidmap"], res["uidmap"])
	}
	if res["data"] != "s3cret dataowner=0" {
		t.Errorf("the idmapped bind: %q, want the root-only file readable and root-owned inside\n%s", res["data"], out)
	}
	var dst syscall.Stat_t
	if err := syscall.Stat(filepath.Join(data, "made-in-data"), &dst); err != nil || dst.Uid != 0 {
		t.Errorf("a file made in the idmapped bind is owned by %d on the host (%v), want 0 as for the host's root", dst.Uid, err)
	}
	// The idmapped sources and layers leave the host's mount table once the container holds them.
	eventually(t, 10*time.Second, "the idmapped sources to be detached on the host", func() bool {
		ents, _ := os.ReadDir(filepath.Join(h.stateDir(), c.ID, "idmapped"))
		return len(ents) == 0
	})
	// The host owns the network namespace, so the container's root holds
	// no privilege there: ports below 1024 are opened to it by sysctl.
	if res["lowports"] != "0" {
		t.Errorf("ip_unprivileged_port_start = %q in the host-made network namespace, want 0\n%s", res["lowports"], out)
	}
	if !strings.Contains(res["sysnet"], "lo") {
		t.Errorf("/sys/class/net in the container's network namespace: %q, want lo\n%s", res["sysnet"], out)
	}
	for _, f := range []string{filepath.Join(h.stateDir(), c.ID, "upper", "made-in-rootfs"), filepath.Join(vol, "made-in-volume")} {
		var st syscall.Stat_t
		if err := syscall.Stat(f, &st); err != nil {
			t.Errorf("file the container made: %v", err)
			continue
		}
		if st.Uid != base || st.Gid != base {
			t.Errorf("%s is owned by %d:%d on the host, want the mapped root %d:%d", f, st.Uid, st.Gid, base, base)
		}
	}
	t.Run("Escape", func(t *testing.T) { expect(t, res, usernsEscapeWant(h.escapeWant()), out) })

	var execOut bytes.Buffer
	code, err := h.r.Exec(context.Background(), c.ID, runtime.ExecProcess{
		Args:   []string{"sh", "-c", "echo uidmap=$(cat /proc/self/uid_map); probe escape " + strconv.Itoa(os.Getpid())},
		Stdout: &execOut, Stderr: &execOut,
	})
	if err != nil || code != 0 {
		t.Fatalf("exec: code %d, %v: %s", code, err, execOut.String())
	}
	t.Run("ExecEscape", func(t *testing.T) {
		eres := ProbeResults(execOut.String())
		if eres["uidmap"] != res["uidmap"] {
			t.Errorf("exec: uid_map %q, want the container's %q", eres["uidmap"], res["uidmap"])
		}
		expect(t, eres, usernsEscapeWant(h.escapeWant()), execOut.String())
	})

	if err := h.r.Checkpoint(context.Background(), c.ID, runtime.CheckpointOptions{ImageDir: t.TempDir(), LeaveRunning: true}); err == nil || !strings.Contains(err.Error(), "userns") {
		t.Errorf("checkpoint of a userns container: %v, want a refusal naming userns", err)
	}

	// A second container holds a range of its own.
	c2 := h.config(t, "sh", "-c", "echo uidmap=$(cat /proc/self/uid_map)")
	c2.UserNS = true
	st, out2 := h.runToEnd(t, c2)
	if st.ExitCode != 0 {
		t.Fatalf("second container: exit %d: %s", st.ExitCode, out2)
	}
	base2 := mappedRoot(t, ProbeResults(out2)["uidmap"], out2)
	if base2 >= base && base2 < base+65536 || base >= base2 && base < base2+65536 {
		t.Errorf("two containers share host ids: ranges from %d and %d", base, base2)
	}
	if err := h.r.Delete(context.Background(), c2.ID, true); err != nil {
		t.Fatal(err)
	}
	c3 := h.config(t, "sh", "-c", "echo uidmap=$(cat /proc/self/uid_map)")
	c3.UserNS = true
	_, out3 := h.runToEnd(t, c3)
	if base3 := mappedRoot(t, ProbeResults(out3)["uidmap"], out3); base3 != base2 {
		t.Errorf("range from %d was not freed by the removal: the next container got %d", base2, base3)
	}
}

// testUserNSUnreachable: an OCI runtime resolves the rootfs as the
// container's unprivileged root, so a state directory it cannot pass is
// refused at the start by name; the built-in executor resolves it before
// it takes the mapped ids, and runs.
func (h *harness) testUserNSUnreachable(t *testing.T) {
	dir := t.TempDir() // 0700
	r, err := runtime.New(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	c := h.config(t, "true")
	c.UserNS = true
	_, err = r.Run(context.Background(), c)
	t.Cleanup(func() { _ = r.Delete(context.Background(), c.ID, true) })
	if h.executor == runtime.ExecutorBuiltin {
		if err != nil {
			t.Fatalf("built-in executor under a 0700 directory: %v", err)
		}
		return
	}
	if err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "o+x") {
		t.Fatalf("%s under a 0700 directory: %v, want a refusal naming %s and o+x", h.executor, err, dir)
	}
}

// usernsEscapeWant is the escape suite's expectation in a user namespace:
// every case is still refused, some one step earlier.
func usernsEscapeWant(want map[string]string) map[string]string {
	// The kernel refuses device nodes to a user namespace: mknod fails, so
	// there is nothing to open.
	want["mknod"], want["mknod_mem"] = "EPERM", "EPERM"
	want["mknod_open"], want["mknod_mem_open"] = "ENOENT", "ENOENT"
	// The sysctl and sysfs files belong to the host's root, a stranger
	// here: refused before the read-only mount is reached.
	want["proc_sys_write"] = "EROFS|EACCES"
	want["sys_write"] = "EROFS|EACCES"
	// So are the cgroup files and directories: a write or mkdir there is
	// refused for want of permission, or by the read-only mount.
	for _, k := range []string{"cgroup_procs_v2", "cgroup_procs_v1", "cgroup_procs_unified", "cgroup_mkdir", "cgroup_release_agent"} {
		want[k] = "EROFS|ENOENT|EACCES"
	}
	return want
}

// mappedRoot parses "0 HOSTID 65536" and checks the range is unprivileged.
func mappedRoot(t *testing.T, uidmap, out string) uint32 {
	t.Helper()
	f := strings.Fields(uidmap)
	if len(f) != 3 || f[0] != "0" || f[2] != "65536" {
		t.Fatalf("uid_map %q, want \"0 HOSTID 65536\"\n%s", uidmap, out)
	}
	base, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil || base < 65536 {
		t.Fatalf("uid_map %q: the container's root is a privileged host id\n%s", uidmap, out)
	}
	return uint32(base)
}
