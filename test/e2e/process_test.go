package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestHardenedExample: the example of a template's process settings runs
// as written (non-root, read-only, under init), becomes ready, and is
// reached by its alias; a host-wide sysctl is refused at apply, named.
func TestHardenedExample(t *testing.T) {
	c := startCluster(t)
	c.ok("apply", "-f", "../../examples/hardened.yaml")
	insts := c.waitRunning("hardened", 2)
	eventually(t, 30*time.Second, "both instances to be ready", func() bool {
		n := 0
		for _, in := range c.running("hardened") {
			if in.Status.Healthy {
				n++
			}
		}
		return n == 2
	})
	out := c.ok("exec", insts[0].Metadata.Name, "sh", "-c",
		"cat /proc/1/comm; cat /proc/2/status | grep ^Uid; hostname; touch /x 2>&1; timeout 2 wget -qO- http://www:8080/ >/dev/null && echo reached-www")
	for _, want := range []string{"init\n", "65534", "web.internal", "Read-only file system", "reached-www"} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in:\n%s", want, out)
		}
	}

	desc := c.ok("describe", "service/hardened")
	for _, want := range []string{"Aliases:", "www", "start period 10s", "user nobody:nogroup", "cap drop ALL", "read-only root", "sysctl net.core.somaxconn=1024", "init", "stop signal SIGQUIT", "stop grace 30s"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe: want %q in:\n%s", want, desc)
		}
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: Service\nname: bad\ntemplate:\n  image: demo/busybox:1\n  sysctls: {kernel.pid_max: \"9\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errOut, code := c.run("apply", "-f", bad)
	if code == 0 || !strings.Contains(errOut, "template.sysctls") || !strings.Contains(errOut, "kernel.pid_max is not namespaced") {
		t.Fatalf("a host-wide sysctl: exit %d, %s", code, errOut)
	}
}
