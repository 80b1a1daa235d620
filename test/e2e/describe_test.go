package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const describeYAML = `kind: Service
name: every
mode: global
rollOnChange: true
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  files: [{secret: db, path: /run/secrets/db}]
---
kind: CronJob
name: nightly
schedule: "0 3 * * *"
timeZone: Europe/Paris
concurrency: forbid
job:
  completions: 1
  template:
    image: demo/busybox:1
    command: ["sh", "-c", "echo ran"]
`

// berth describe of the workload kinds: a secret (its keys and sizes,
// never its value, and who uses it), a config, a cron job (schedule,
// last and next times, its runs) and a global service (its mode, its
// eligible nodes as the desired count).
func TestDescribeWorkloadKinds(t *testing.T) {
	c := startCluster(t, "--no-network")
	// The agent keeps its instances' data on a tmpfs in the data dir.
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(c.dataDir, "data"), unix.MNT_DETACH) })
	const plain = "s3cret-describe-7f1e"
	c.ok("secret", "create", "db", "--from-literal", "password="+plain)
	c.ok("config", "create", "app", "--from-literal", "greeting=hello")
	if _, errOut, code := c.applyYAML(describeYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.waitRunning("every", 1)

	out := c.ok("describe", "secret/db")
	if strings.Contains(out, plain) {
		t.Fatalf("describe secret shows its value:\n%s", out)
	}
	for _, want := range []string{"Kind:", "Secret", "password", "20 bytes", "Used by:", "service/every (rolls on change)", "Digest:"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe secret/db lacks %q:\n%s", want, out)
		}
	}
	out = c.ok("describe", "config/app")
	for _, want := range []string{"greeting", "5 bytes", "Used by:", "none"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe config/app lacks %q:\n%s", want, out)
		}
	}

	out = c.ok("describe", "cronjob/nightly")
	for _, want := range []string{"Schedule:", "0 3 * * * (Europe/Paris)", "Concurrency:", "forbid", "Last schedule:", "Next schedule:", "Runs:", "none"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe cronjob/nightly lacks %q:\n%s", want, out)
		}
	}
	run := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(c.ok("cronjob", "trigger", "nightly")), "job/"), " created")
	eventually(t, 30*time.Second, "the run listed with its phase", func() bool {
		out := c.ok("describe", "cronjob/nightly")
		return strings.Contains(out, run) && strings.Contains(out, "Succeeded")
	})

	out = c.ok("describe", "service/every")
	for _, want := range []string{"Mode:", "global", "Replicas:", "1 eligible nodes, 1 ready", "Roll on change:"} {
		if !strings.Contains(out, want) {
			t.Errorf("describe service/every lacks %q:\n%s", want, out)
		}
	}
	if _, errOut, code := c.run("describe", "secret/nope"); code == 0 || !strings.Contains(errOut, "nope") {
		t.Errorf("describe of a missing secret: exit %d, %s", code, errOut)
	}
}
