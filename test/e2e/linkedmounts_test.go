package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// varRunImage builds demo/varrun:1 in e's data dir: busybox with
// /var/run a link to /run, as Debian's and Alpine's images have it.
func (e *env) varRunImage() {
	e.t.Helper()
	rootfs := runtimetest.BusyboxRootfs(e.t)
	check(e.t, os.Mkdir(filepath.Join(rootfs, "run"), 0o755))
	check(e.t, os.Mkdir(filepath.Join(rootfs, "var"), 0o755))
	check(e.t, os.Symlink("/run", filepath.Join(rootfs, "var", "run")))
	e.ok("image", "build", rootfs, "--tag", "demo/varrun:1", "--cmd", "sh")
}

// TestRunVolumeThroughImageLink: Debian's and Alpine's images link
// /var/run to /run; a bind asked at /var/run/app lands at /run/app, as
// docker run puts it, and is the host's directory, read-only when asked.
func TestRunVolumeThroughImageLink(t *testing.T) {
	e := newEnv(t)
	e.varRunImage()

	dir := t.TempDir()
	out := e.ok("container", "run", "--rm", "-v", dir+":/var/run/app", "demo/varrun:1", "sh", "-c",
		"echo from the container > /run/app/out; cat /var/run/app/out; grep -o ' /run/app [^ ]*' /proc/self/mountinfo")
	if !strings.Contains(out, "from the container\n") || !strings.Contains(out, " /run/app rw") {
		t.Errorf("-v DIR:/var/run/app: output %q, want the file read back through the link and a writable mount at /run/app", out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || string(b) != "from the container\n" {
		t.Errorf("-v DIR:/var/run/app: the host sees %q, %v", b, err)
	}

	out, errOut, code := e.run("container", "run", "--rm", "-v", dir+":/var/run/app:ro", "demo/varrun:1", "sh", "-c", "cat /run/app/out && echo x > /run/app/out")
	if code == 0 || out != "from the container\n" || !strings.Contains(errOut, "Read-only") {
		t.Errorf("-v DIR:/var/run/app:ro: exit %d, stdout %q, stderr %q: want it read and the write refused", code, out, errOut)
	}
}

// TestServiceVolumeThroughImageLink: a service's named volume at
// /var/run/postgresql, as Compose files for Postgres have it, in an image
// linking /var/run to /run: the instance starts, and what it writes at
// /run/postgresql is in the volume on the node.
func TestServiceVolumeThroughImageLink(t *testing.T) {
	e := newEnv(t)
	e.varRunImage()
	c := startClusterIn(t, e, "--no-network")
	if _, errOut, code := c.applyYAML(`kind: Service
name: pg
replicas: 1
template:
  image: demo/varrun:1
  command: ["sh", "-c", "echo 42 > /run/postgresql/pid; exec sleep 1d"]
  volumes:
  - {name: pgrun, path: /var/run/postgresql}
`); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("pg", 1)
	vol := filepath.Join(c.dataDir, "volumes", "default", "pgrun", "pid")
	eventually(t, 10*time.Second, "the instance's pid file in the named volume", func() bool {
		b, err := os.ReadFile(vol)
		return err == nil && string(b) == "42\n"
	})
	if out := c.ok("exec", "pg", "cat", "/var/run/postgresql/pid"); out != "42\n" {
		t.Errorf("exec cat /var/run/postgresql/pid: %q", out)
	}
}
