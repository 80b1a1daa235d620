package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const usernsYAML = `kind: Service
name: iso
replicas: 1
template:
  image: demo/busybox:1
  userns: true
  command: ["sh", "-c", "touch /in-rootfs /host/in-host /data/in-volume; exec httpd -f -p 80 -h /www"]
  volumes:
  - {hostPath: HOST, path: /host}
  - {name: isodata, path: /data}
  files:
  - {secret: iso, path: /run/secrets/iso, mode: 0400}
`

// hostRoot parses a uid_map line, "0 HOSTID 65536", and checks the range
// is an unprivileged one.
func hostRoot(t *testing.T, uidmap string) uint32 {
	t.Helper()
	f := strings.Fields(uidmap)
	if len(f) != 3 || f[0] != "0" || f[2] != "65536" {
		t.Fatalf("uid_map %q, want \"0 HOSTID 65536\"", uidmap)
	}
	n, err := strconv.ParseUint(f[1], 10, 32)
	if err != nil || n < 65536 {
		t.Fatalf("uid_map %q: the container's root is a privileged host id", uidmap)
	}
	return uint32(n)
}

func owner(t *testing.T, path string) uint32 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Uid
}

// TestUserNSService runs a service with userns: true on berth up with its
// network: inside, the process is root; its uid_map maps root to an
// unprivileged host range; what it writes to its rootfs and to a hostPath
// is owned on the host by that range; its named volume is bound idmapped
// (owned by the host's root on disk, as without userns), and so is its
// secret (root-only, 0400, and readable by its root); it serves on its
// pod address, and berth exec joins its user namespace.
func TestUserNSService(t *testing.T) {
	c := startCluster(t)
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(c.dataDir, "data"), syscall.MNT_DETACH) })
	c.ok("secret", "create", "iso", "--from-literal", "token=s3cret-userns")
	host := t.TempDir()
	if err := os.Chmod(host, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.applyYAML(strings.ReplaceAll(usernsYAML, "HOST", host)); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	in := c.waitRunning("iso", 1)[0]
	base := hostRoot(t, c.ok("exec", "iso", "cat", "/proc/self/uid_map"))
	if id := strings.TrimSpace(c.ok("exec", "iso", "id", "-u")); id != "0" {
		t.Errorf("id -u inside = %q, want 0", id)
	}
	eventually(t, 10*time.Second, "the container's file in the hostPath", func() bool {
		_, err := os.Stat(filepath.Join(host, "in-host"))
		return err == nil
	})
	if u := owner(t, filepath.Join(host, "in-host")); u != base {
		t.Errorf("hostPath file owned by %d on the host, want the mapped root %d", u, base)
	}
	if u := owner(t, filepath.Join(c.dataDir, "containers", in.Status.ContainerID, "upper", "in-rootfs")); u != base {
		t.Errorf("rootfs file owned by %d on the host, want the mapped root %d", u, base)
	}
	if u := owner(t, filepath.Join(c.dataDir, "volumes", "default", "isodata", "in-volume")); u != 0 {
		t.Errorf("named-volume file owned by %d on the host, want 0 (the volume is bound idmapped)", u)
	}
	if out := c.ok("exec", "iso", "sh", "-c", "stat -c %u:%a /run/secrets/iso; cat /run/secrets/iso"); out != "0:400\ns3cret-userns" {
		t.Errorf("the secret inside: %q, want it root's, 0400, and readable", out)
	}
	if out := c.ok("exec", "iso", "ls", "/sys/class/net"); !strings.Contains(out, "lo") {
		t.Errorf("/sys/class/net inside: %q", out)
	}
	eventually(t, 10*time.Second, "the service to answer on its pod address", func() bool {
		body, err := c.hostGet(in.Status.IP + ":80")
		return err == nil && strings.Contains(body, "hello from berth")
	})
}

// TestContainerRunUserNS: berth container run --userns runs as root inside
// a range of its own; without the flag there is no mapping.
func TestContainerRunUserNS(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	out, errOut, code := e.run("container", "run", "--rm", "--userns", "demo/busybox:1", "sh", "-c", "id -u; cat /proc/self/uid_map")
	if code != 0 {
		t.Fatalf("run --userns: exit %d: %s%s", code, out, errOut)
	}
	lines := strings.SplitN(strings.TrimSpace(out), "\n", 2)
	if len(lines) != 2 || lines[0] != "0" {
		t.Fatalf("run --userns printed %q, want id 0 then the uid map", out)
	}
	hostRoot(t, lines[1])
	out = e.ok("container", "run", "--rm", "demo/busybox:1", "cat", "/proc/self/uid_map")
	if f := strings.Fields(out); len(f) != 3 || f[1] != "0" {
		t.Errorf("without --userns the uid map is %q, want the host's identity map", out)
	}
}
