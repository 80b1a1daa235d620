package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

const cronYAML = `kind: CronJob
name: nightly
schedule: "0 3 1 1 *"
timeZone: Europe/Paris
concurrency: forbid
successfulHistory: 1
job:
  completions: 1
  template:
    image: demo/busybox:1
    command: ["sh", "-c", "echo ran"]
`

// A cron job from the user's seat: applied from a spec file, listed,
// run now with "berth cronjob trigger" (each run a job of its own), and
// its history trimmed to successfulHistory once the second run is done.
func TestCronJobTrigger(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(cronYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	if out := c.ok("get", "cronjobs"); !strings.Contains(out, "nightly") || !strings.Contains(out, "0 3 1 1 * Europe/Paris") {
		t.Errorf("get cronjobs:\n%s", out)
	}
	if _, errOut, code := c.run("cronjob", "trigger", "nope"); code == 0 || !strings.Contains(errOut, "nope") {
		t.Errorf("trigger of a missing cron job: exit %d, %s", code, errOut)
	}
	runs := func() map[string]api.JobPhase {
		out := map[string]api.JobPhase{}
		var jobs []api.Job
		if err := json.Unmarshal([]byte(c.ok("get", "jobs", "-o", "json")), &jobs); err != nil {
			t.Fatal(err)
		}
		for _, j := range jobs {
			if j.Metadata.Labels[api.LabelCronJob] == "nightly" {
				out[j.Metadata.Name] = j.Status.Phase
			}
		}
		return out
	}
	trigger := func() string {
		out := c.ok("cronjob", "trigger", "nightly")
		name, ok := strings.CutPrefix(strings.TrimSpace(out), "job/")
		name, ok2 := strings.CutSuffix(name, " created")
		if !ok || !ok2 || !strings.HasPrefix(name, "nightly-") {
			t.Fatalf("trigger printed %q", out)
		}
		eventually(t, 30*time.Second, "run "+name+" to succeed", func() bool { return runs()[name] == api.JobSucceeded })
		return name
	}
	first := trigger()
	second := trigger()
	eventually(t, 15*time.Second, "the history trimmed to the last success", func() bool {
		r := runs()
		_, hasFirst := r[first]
		return len(r) == 1 && !hasFirst && r[second] == api.JobSucceeded
	})
}

// A cron job passes the same admission as a job: an over-limit template
// or a hostPath outside the allowed ones is refused at apply, naming the
// field and the limit.
func TestCronJobAdmission(t *testing.T) {
	c := startCluster(t, "--no-network", "--allowed-host-paths", "/srv")
	var env strings.Builder
	for i := range api.MaxEnv + 1 {
		fmt.Fprintf(&env, "      V%d: x\n", i)
	}
	over := strings.Replace(cronYAML, "    command: [\"sh\", \"-c\", \"echo ran\"]\n",
		"    command: [\"sh\", \"-c\", \"echo ran\"]\n    env:\n"+env.String(), 1)
	_, errOut, code := c.applyYAML(over)
	if code == 0 || !strings.Contains(errOut, "job.template.env") || !strings.Contains(errOut, fmt.Sprintf("over the limit of %d", api.MaxEnv)) {
		t.Errorf("apply of a cron job over the env limit: exit %d, %s", code, errOut)
	}
	host := strings.Replace(cronYAML, "    command: [\"sh\", \"-c\", \"echo ran\"]\n",
		"    command: [\"sh\", \"-c\", \"echo ran\"]\n    volumes: [{hostPath: /etc, path: /host}]\n", 1)
	_, errOut, code = c.applyYAML(host)
	if code == 0 || !strings.Contains(errOut, "spec.job.template.volumes[0].hostPath") || !strings.Contains(errOut, "outside the allowed host paths") {
		t.Errorf("apply of a cron job with a hostPath outside the allowed ones: exit %d, %s", code, errOut)
	}
	if _, _, code := c.run("get", "cronjob", "nightly"); code == 0 {
		t.Error("a refused cron job was stored")
	}
}
