package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestContainerRunRestart checks container run --restart: the container's
// shim starts the process again by the policy (on-failure up to its
// count, always and unless-stopped whatever the exit, no never), and
// berth container stop ends it for good.
func TestContainerRunRestart(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	t.Cleanup(func() { removeContainers(e) })
	type status struct {
		State    string `json:"state"`
		ExitCode int    `json:"exitCode"`
		Restarts int    `json:"restarts"`
	}
	inspect := func(name string) status {
		var st status
		check(t, json.Unmarshal([]byte(e.ok("container", "inspect", name)), &st))
		return st
	}
	runs := func(name string) int { return strings.Count(e.ok("container", "logs", name), "run\n") }
	start := func(name, policy, script string) {
		e.ok("container", "run", "-d", "--name", name, "--restart", policy, "demo/busybox:1", "sh", "-c", script)
	}

	start("fails", "on-failure:2", "echo run; exit 3")
	start("succeeds", "on-failure", "echo run; exit 0")
	start("never", "no", "echo run; exit 3")
	start("always", "always", "echo run; sleep 0.2")
	start("unless", "unless-stopped", "echo run; exit 0")

	eventually(t, 20*time.Second, "on-failure:2 to give up after two restarts", func() bool {
		st := inspect("fails")
		return st.State == "exited" && st.Restarts == 2
	})
	if st, n := inspect("fails"), runs("fails"); st.ExitCode != 3 || n != 3 {
		t.Errorf("on-failure:2: exit %d after %d runs, want 3 after 3", st.ExitCode, n)
	}
	for _, name := range []string{"succeeds", "never"} {
		eventually(t, 10*time.Second, name+" to exit", func() bool { return inspect(name).State == "exited" })
	}
	time.Sleep(500 * time.Millisecond) // longer than the first pause before a restart
	for _, name := range []string{"succeeds", "never"} {
		if st, n := inspect(name), runs(name); st.State != "exited" || st.Restarts != 0 || n != 1 {
			t.Errorf("%s: %+v after %d runs, want one run and no restart", name, st, n)
		}
	}
	for _, name := range []string{"always", "unless"} {
		eventually(t, 20*time.Second, name+" to restart twice", func() bool {
			st := inspect(name)
			return st.State == "running" && st.Restarts >= 2
		})
	}
	if out := e.ok("container", "ps"); !strings.Contains(out, "restarts") {
		t.Errorf("container ps shows no restart count:\n%s", out)
	}
	// Stopped, it stays stopped, in a run or in the pause between two.
	for _, name := range []string{"always", "unless"} {
		e.ok("container", "stop", "-t", "1", name)
	}
	settled := map[string]int{"always": runs("always"), "unless": runs("unless")}
	time.Sleep(1500 * time.Millisecond)
	for name, n := range settled {
		if st, now := inspect(name), runs(name); st.State != "exited" || now != n {
			t.Errorf("%s after stop: %s with %d runs, was %d: want it to stay stopped", name, st.State, now, n)
		}
	}

	for _, bad := range [][]string{
		{"--restart", "sometimes"}, {"--restart", "on-failure:0"}, {"--restart", "always:3"},
		{"--restart", "always", "--rm"}, {"--restart", "always", "-it"}, {"--restart", "always", "--runtime", "runc", "-d"},
	} {
		args := append(append([]string{"container", "run"}, bad...), "demo/busybox:1", "true")
		if _, errOut, code := e.run(args...); code == 0 || !strings.Contains(errOut, "restart") {
			t.Errorf("container run %v: exit %d, %q; want a refusal naming restart", bad, code, errOut)
		}
	}
}
