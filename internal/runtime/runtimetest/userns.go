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
func (h *harness) testUserNS(t *testing.T) {
	// A container's root is a stranger to the host: the volume, and the
	// state directory the bundles are in, must let it pass.
	vol := t.TempDir()
	for dir, mode := range map[string]os.FileMode{vol: 0o777, filepath.Dir(vol): 0o711, h.stateDir(): 0o711, filepath.Dir(h.stateDir()): 0o711} {
		if err := os.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
	}
	ns := filepath.Join(t.TempDir(), "ns")
	if err := netns.Create(ns, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netns.Delete(ns) })
	script := `echo uid=$(id -u) gid=$(id -g) image=$(stat -c %u:%g /bin/sh)
echo uidmap=$(cat /proc/self/uid_map)
echo gidmap=$(cat /proc/self/gid_map)
touch /made-in-rootfs /vol/made-in-volume
echo sysnet=$(ls /sys/class/net | tr '\n' ' ')
probe escape ` + strconv.Itoa(os.Getpid()) + `
sleep 60`
	c := h.config(t, "sh", "-c", script)
	c.UserNS = true
	c.NetNS = ns
	c.Mounts = []specs.Mount{{Destination: "/vol", Source: vol, Type: "bind", Options: []string{"rbind", "rw"}}}
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
