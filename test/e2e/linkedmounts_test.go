package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// TestRunVolumeThroughImageLink: Debian's and Alpine's images link
// /var/run to /run; a bind asked at /var/run/app lands at /run/app, as
// docker run puts it, and is the host's directory, read-only when asked.
func TestRunVolumeThroughImageLink(t *testing.T) {
	e := newEnv(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	check(t, os.Mkdir(filepath.Join(rootfs, "run"), 0o755))
	check(t, os.Mkdir(filepath.Join(rootfs, "var"), 0o755))
	check(t, os.Symlink("/run", filepath.Join(rootfs, "var", "run")))
	e.ok("image", "build", rootfs, "--tag", "demo/varrun:1", "--cmd", "sh")

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
