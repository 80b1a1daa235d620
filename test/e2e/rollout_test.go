package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// rolloutSpec is a service whose health check passes only when its
// command makes /tmp/ok.
func rolloutSpec(replicas int, update, v, command string) string {
	return fmt.Sprintf(`kind: Service
name: web
replicas: %d
update: {%s}
template:
  image: demo/busybox:1
  command: %s
  env: {V: "%s"}
  health: {exec: {command: ["test", "-f", "/tmp/ok"]}, interval: 200ms, timeout: 2s, failures: 1}
`, replicas, update, command, v)
}

const (
	healthyCmd   = `["sh", "-c", "touch /tmp/ok; exec sleep 1d"]`
	unhealthyCmd = `["sleep", "1d"]`
)

func (c *cluster) service(name string) api.Service {
	c.t.Helper()
	var svc api.Service
	if err := jsonOut(c.ok("get", "service", name, "-o", "json"), &svc); err != nil {
		c.t.Fatal(err)
	}
	return svc
}

// envOf lists the V of each live instance of web.
func (c *cluster) versions() map[string]int {
	out := map[string]int{}
	for _, in := range c.ownedBy("web") {
		out[in.Spec.Template.Env["V"]]++
	}
	return out
}

// undo puts the previous template back; history lists both; status waits.
func TestRolloutUndo(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(rolloutSpec(2, "", "1", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	if out := c.ok("rollout", "status", "web", "--timeout", "60s"); !strings.Contains(out, "Complete") {
		t.Fatalf("rollout status of revision 1: %q", out)
	}
	if _, errOut, code := c.applyYAML(rolloutSpec(2, "", "2", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	c.ok("rollout", "status", "web", "--timeout", "60s")
	if v := c.versions(); v["2"] != 2 || len(v) != 1 {
		t.Fatalf("after the rollout of V=2: %v", v)
	}
	hist := c.ok("rollout", "history", "web")
	if !strings.Contains(hist, "1 ") || !strings.Contains(hist, "2 (current)") {
		t.Fatalf("history:\n%s", hist)
	}
	if out := c.ok("rollout", "undo", "web"); !strings.Contains(out, "rolled back to revision 1") {
		t.Fatalf("undo: %q", out)
	}
	if svc := c.service("web"); svc.Spec.Template.Env["V"] != "1" {
		t.Fatalf("template after undo: %+v", svc.Spec.Template)
	}
	c.ok("rollout", "status", "web", "--timeout", "60s")
	if v := c.versions(); v["1"] != 2 || len(v) != 1 {
		t.Fatalf("after undo: %v", v)
	}
	if hist := c.ok("rollout", "history", "web"); !strings.Contains(hist, "3 (current)") {
		t.Fatalf("history after undo (the template put back is revision 3):\n%s", hist)
	}
	if _, errOut, code := c.run("rollout", "undo", "web", "--to-revision", "9"); code == 0 || !strings.Contains(errOut, "no such revision") {
		t.Fatalf("undo to a revision not kept: exit %d %q", code, errOut)
	}
	if _, _, code := c.run("rollout", "frobnicate", "web"); code == 0 {
		t.Fatal("an unknown rollout subcommand exited 0")
	}
}

// A rollout whose new instance fails its health check stalls at maxSurge:
// READY still counts the old instances serving, UPDATED the new one,
// rollout status fails. Turning autoRollback on then rolls it back.
func TestRolloutStallsThenRollsBack(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(rolloutSpec(2, "maxSurge: 1", "1", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	c.ok("rollout", "status", "web", "--timeout", "60s")
	if _, errOut, code := c.applyYAML(rolloutSpec(2, "maxSurge: 1", "2", unhealthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	_, errOut, code := c.run("rollout", "status", "web", "--timeout", "60s")
	if code == 0 || !strings.Contains(errOut, "failed") {
		t.Fatalf("rollout status of a failing rollout: exit %d %q", code, errOut)
	}
	svc := c.service("web")
	if svc.Status.ReadyReplicas != 2 || svc.Status.UpdatedReplicas != 1 || svc.Status.Rollout.Phase != api.RolloutFailed {
		t.Fatalf("stalled rollout status: %+v", svc.Status)
	}
	if v := c.versions(); v["1"] != 2 || v["2"] != 1 {
		t.Fatalf("stalled rollout went past maxSurge: %v", v)
	}
	line := ""
	for l := range strings.SplitSeq(c.ok("get", "services"), "\n") {
		if strings.Contains(l, " web ") {
			line = l
		}
	}
	if f := strings.Fields(line); len(f) < 4 || f[2] != "2/2" || f[3] != "1" {
		t.Fatalf("get services during a stalled rollout (want READY 2/2, UPDATED 1): %q", line)
	}

	// autoRollback, turned on now, rolls the failed rollout back.
	if _, errOut, code := c.applyYAML(rolloutSpec(2, "maxSurge: 1, autoRollback: true", "2", unhealthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	eventually(t, 30*time.Second, "the rollback", func() bool {
		svc := c.service("web")
		return svc.Spec.Template.Env["V"] == "1" && svc.Status.Rollout.Phase == api.RolloutRolledBack
	})
	eventually(t, 30*time.Second, "only V=1 instances, ready", func() bool {
		v := c.versions()
		return v["1"] == 2 && len(v) == 1 && c.service("web").Status.ReadyReplicas == 2
	})
	_, errOut, code = c.run("rollout", "status", "web", "--timeout", "10s")
	if code == 0 || !strings.Contains(errOut, "rolled back") {
		t.Fatalf("rollout status after a rollback: exit %d %q", code, errOut)
	}
	if ev := c.ok("get", "events"); !strings.Contains(ev, "RolledBack") || !strings.Contains(ev, "RolloutFailed") {
		t.Fatalf("events:\n%s", ev)
	}
}

// With maxSurge 0 and maxUnavailable 1, old instances go one at a time
// before new ones come: never more than replicas instances exist.
func TestRolloutMaxUnavailable(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(rolloutSpec(3, "maxSurge: 0, maxUnavailable: 1", "1", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	c.ok("rollout", "status", "web", "--timeout", "60s")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events, err := c.apiClient().Instances().Watch(ctx, "default", 0)
	if err != nil {
		t.Fatal(err)
	}
	live := map[string]string{}
	for _, in := range c.ownedBy("web") {
		live[in.Metadata.Name] = in.Spec.Template.Env["V"]
	}
	if _, errOut, code := c.applyYAML(rolloutSpec(3, "maxSurge: 0, maxUnavailable: 1", "2", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	var order []string
	peak := len(live)
	deadline := time.After(60 * time.Second)
	for {
		v := map[string]int{}
		for _, ver := range live {
			v[ver]++
		}
		if v["2"] == 3 && len(v) == 1 {
			break
		}
		select {
		case ev, ok := <-events:
			if !ok || ev.Err != nil {
				t.Fatalf("watch ended: %v", ev.Err)
			}
			in := ev.Object
			if in.Spec.Owner.Name != "web" {
				continue
			}
			_, known := live[in.Metadata.Name]
			switch {
			case ev.Type == "Deleted" && known:
				delete(live, in.Metadata.Name)
				order = append(order, "-"+in.Spec.Template.Env["V"])
			case ev.Type != "Deleted" && !known:
				live[in.Metadata.Name] = in.Spec.Template.Env["V"]
				order = append(order, "+"+in.Spec.Template.Env["V"])
			}
			peak = max(peak, len(live))
		case <-deadline:
			t.Fatalf("rollout not done; changes so far %v", order)
		}
	}
	if peak > 3 || len(order) == 0 || order[0] != "-1" {
		t.Fatalf("with no surge: peak %d instances, changes %v (want an old one to go first, never over 3)", peak, order)
	}
	t.Logf("changes: %v", order)
}

// With autoRollback set from the start, a failing rollout rolls itself back.
func TestRolloutAutoRollback(t *testing.T) {
	c := startCluster(t, "--no-network")
	if _, errOut, code := c.applyYAML(rolloutSpec(1, "autoRollback: true", "1", healthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	c.ok("rollout", "status", "web", "--timeout", "60s")
	if _, errOut, code := c.applyYAML(rolloutSpec(1, "autoRollback: true", "2", unhealthyCmd)); code != 0 {
		t.Fatal(errOut)
	}
	_, errOut, code := c.run("rollout", "status", "web", "--timeout", "60s")
	if code == 0 || !strings.Contains(errOut, "rolled back to revision 1") {
		t.Fatalf("rollout status of a rollout that failed its health check: exit %d %q", code, errOut)
	}
	if svc := c.service("web"); svc.Spec.Template.Env["V"] != "1" {
		t.Fatalf("template after the rollback: %+v", svc.Spec.Template)
	}
	eventually(t, 30*time.Second, "only the V=1 instance, ready", func() bool {
		v := c.versions()
		return v["1"] == 1 && len(v) == 1 && c.service("web").Status.ReadyReplicas == 1
	})
}
