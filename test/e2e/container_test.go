package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func (e *env) demoImage() {
	e.t.Helper()
	rootfs := runtimetest.BusyboxRootfs(e.t)
	e.ok("image", "build", rootfs, "--tag", "demo/busybox:1", "--cmd", "sh")
}

func TestContainerLifecycle(t *testing.T) {
	e := newEnv(t)
	e.demoImage()

	// Foreground: output streams back and the exit code is the container's.
	out, errOut, code := e.run("container", "run", "--rm", "demo/busybox:1", "sh", "-c", "echo hello; echo oops >&2; exit 3")
	if code != 3 || !strings.Contains(out, "hello") || !strings.Contains(errOut, "oops") {
		t.Fatalf("foreground run: exit %d stdout %q stderr %q", code, out, errOut)
	}

	// Detached: a web server that keeps running after the command returns.
	if got := strings.TrimSpace(e.ok("container", "run", "-d", "--name", "web", "--memory", "64Mi",
		"demo/busybox:1", "httpd", "-f", "-p", "8080", "-h", "/www")); got != "web" {
		t.Fatalf("run -d printed %q, want the name", got)
	}
	t.Cleanup(func() { e.run("container", "rm", "--force", "web") })
	var list []map[string]any
	if err := json.Unmarshal([]byte(e.ok("container", "ps", "-o", "json")), &list); err != nil || len(list) != 1 || list[0]["state"] != "running" {
		t.Fatalf("ps -o json: %v %v", list, err)
	}
	eventually(t, 10*time.Second, "httpd to answer", func() bool {
		out, _, code := e.run("container", "exec", "web", "wget", "-qO-", "http://127.0.0.1:8080/")
		return code == 0 && strings.Contains(out, "hello from berth")
	})
	if _, _, code := e.run("container", "exec", "web", "sh", "-c", "exit 5"); code != 5 {
		t.Errorf("exec exit code %d, want 5", code)
	}

	// The image is in use: removing it is refused until forced or unused.
	if _, errOut, code := e.run("image", "rm", "demo/busybox:1"); code == 0 || !strings.Contains(errOut, "web") {
		t.Errorf("image rm of an image in use: exit %d, stderr %q (should name the container)", code, errOut)
	}
	if _, errOut, code := e.run("container", "rm", "web"); code == 0 || !strings.Contains(errOut, "running") {
		t.Errorf("rm of a running container: exit %d, %q", code, errOut)
	}
	e.ok("container", "stop", "--time", "1s", "web")
	e.ok("container", "rm", "web")
	if out := e.ok("container", "ps", "-a"); strings.Contains(out, "web") {
		t.Errorf("removed container still listed:\n%s", out)
	}
	e.ok("image", "rm", "demo/busybox:1")
}

func TestContainerOOMIsReported(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	_, errOut, code := e.run("container", "run", "--rm", "--memory", "16Mi", "demo/busybox:1", "tail", "/dev/zero")
	if code != 137 || !strings.Contains(errOut, "memory limit") {
		t.Errorf("memory hog: exit %d stderr %q, want 137 and a word about the memory limit", code, errOut)
	}
}

func TestContainerBadInput(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"container", "run", "--memory", "64MB", "x"}, "--memory"},
		{[]string{"container", "run", "no/such:image", "true"}, "no/such:image"},
		{[]string{"container", "run", "--name", "Bad_Name", "--rootfs", "/", "x", "true"}, "Bad_Name"},
		{[]string{"container", "logs", "ghost"}, "ghost"},
	} {
		_, errOut, code := e.run(tc.args...)
		if code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("berth %v: exit %d, stderr %q; want an error naming %q", tc.args, code, errOut, tc.want)
		}
	}
}
