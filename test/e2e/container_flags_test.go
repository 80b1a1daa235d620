package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestContainerRunDockerFlags checks container run's flags that docker
// run users type: --env-file and -e KEY from the caller's environment,
// --entrypoint, -u by name, -v and --mount binds (read-only too),
// --label, and stop -t in seconds.
func TestContainerRunDockerFlags(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	t.Cleanup(func() { removeContainers(e) })

	envFile := filepath.Join(t.TempDir(), "app.env")
	check(t, os.WriteFile(envFile, []byte("# settings\nA=from-file\n\nB\nUNSET_HERE\n"), 0o644))
	t.Setenv("B", "b-from-caller")
	t.Setenv("C", "c-from-caller")
	out := e.ok("container", "run", "--rm", "--env-file", envFile, "-e", "C", "-e", "D=flag",
		"demo/busybox:1", "sh", "-c", `echo "$A|$B|$C|$D|${UNSET_HERE-unset}"`)
	if strings.TrimSpace(out) != "from-file|b-from-caller|c-from-caller|flag|unset" {
		t.Errorf("environment: %q", out)
	}
	if _, errOut, code := e.run("container", "run", "--rm", "--env-file", envFile+".missing", "demo/busybox:1", "true"); code == 0 || !strings.Contains(errOut, "--env-file") {
		t.Errorf("a missing --env-file: exit %d, %q", code, errOut)
	}
	bad := filepath.Join(t.TempDir(), "bad.env")
	check(t, os.WriteFile(bad, []byte("OK=1\n=nokey\n"), 0o644))
	if _, errOut, code := e.run("container", "run", "--rm", "--env-file", bad, "demo/busybox:1", "true"); code == 0 || !strings.Contains(errOut, "bad.env:2") {
		t.Errorf("a bad --env-file line: exit %d, %q, want it named by file and line", code, errOut)
	}

	// A "--" after the image only separates, as kubectl users write it.
	if out := e.ok("container", "run", "--rm", "demo/busybox:1", "--", "echo", "dashed"); strings.TrimSpace(out) != "dashed" {
		t.Errorf("run IMAGE -- echo dashed: %q", out)
	}

	if out := e.ok("container", "run", "--rm", "--entrypoint", "echo", "demo/busybox:1", "from", "entrypoint"); strings.TrimSpace(out) != "from entrypoint" {
		t.Errorf("--entrypoint echo: %q", out)
	}

	if out := e.ok("container", "run", "--rm", "-u", "nobody", "demo/busybox:1", "id"); !strings.Contains(out, "uid=65534") || !strings.Contains(out, "gid=65534") {
		t.Errorf("-u nobody: %q", out)
	}
	if out := e.ok("container", "run", "--rm", "-u", "nobody:root", "demo/busybox:1", "id", "-g"); strings.TrimSpace(out) != "0" {
		t.Errorf("-u nobody:root: gid %q", out)
	}
	if _, errOut, code := e.run("container", "run", "--rm", "-u", "ghost", "demo/busybox:1", "true"); code == 0 || !strings.Contains(errOut, `"ghost"`) {
		t.Errorf("-u ghost: exit %d, %q", code, errOut)
	}

	// Binds: writable, read-only, and --mount's form.
	dir := t.TempDir()
	check(t, os.WriteFile(filepath.Join(dir, "in"), []byte("from the host\n"), 0o644))
	if out := e.ok("container", "run", "--rm", "-v", dir+":/data", "demo/busybox:1", "sh", "-c", "cat /data/in; echo from the container > /data/out"); out != "from the host\n" {
		t.Errorf("-v rw read %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "out")); err != nil || string(b) != "from the container\n" {
		t.Errorf("-v rw: the host sees %q, %v", b, err)
	}
	for _, flags := range [][]string{{"-v", dir + ":/data:ro"}, {"--mount", "type=bind,source=" + dir + ",target=/data,readonly"}} {
		args := append(append([]string{"container", "run", "--rm"}, flags...), "demo/busybox:1", "sh", "-c", "cat /data/in && echo x > /data/in")
		out, errOut, code := e.run(args...)
		if code == 0 || out != "from the host\n" || !strings.Contains(errOut, "Read-only") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q: want it read and the write refused", flags, code, out, errOut)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "in")); string(b) != "from the host\n" {
		t.Errorf("a read-only bind was written: %q", b)
	}
	for _, bad := range [][]string{{"-v", "relative:/data"}, {"-v", dir + "/missing:/data"}, {"--mount", "type=volume,source=x,target=/y"}} {
		if _, errOut, code := e.run(append(append([]string{"container", "run", "--rm"}, bad...), "demo/busybox:1", "true")...); code == 0 || !strings.Contains(errOut, bad[0]) {
			t.Errorf("%v: exit %d, %q: want an error naming the flag", bad, code, errOut)
		}
	}

	e.ok("container", "run", "-d", "--name", "stubborn", "--label", "team=web", "--label", "tier=front",
		"demo/busybox:1", "sh", "-c", "trap 'echo ignoring TERM' TERM; echo trapped; while :; do sleep 0.1; done")
	var st struct {
		Labels map[string]string `json:"labels"`
	}
	check(t, json.Unmarshal([]byte(e.ok("container", "inspect", "stubborn")), &st))
	if st.Labels["team"] != "web" || st.Labels["tier"] != "front" {
		t.Errorf("labels %v", st.Labels)
	}
	// Stopped before its trap is set, it would die of SIGTERM at once.
	eventually(t, 10*time.Second, "the trap to be set", func() bool {
		out, _, _ := e.run("container", "logs", "stubborn")
		return strings.Contains(out, "trapped")
	})
	t0 := time.Now()
	e.ok("container", "stop", "-t", "1", "stubborn")
	if took := time.Since(t0); took < time.Second || took > 6*time.Second {
		t.Errorf("stop -t 1 of a container that outlives SIGTERM took %v, want about a second", took)
	}
}

// TestContainerRunInit: with --init, PID 1 is berth's init, which reaps
// an orphan left to it (the runtime's conformance suite shows the zombie
// a workload as PID 1 leaves). An OCI runtime binary has no such init,
// and says so.
func TestContainerRunInit(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	t.Cleanup(func() { removeContainers(e) })
	// The orphaned sleep ends at 0.2 s; the workload looks at 1 s.
	script := `(sleep 0.2 &); sleep 1; echo pid1=$(cat /proc/1/comm); for d in /proc/[0-9]*; do read -r l < $d/stat; case $l in *') Z '*) echo zombie;; esac; done`
	out := e.ok("container", "run", "--rm", "--init", "demo/busybox:1", "sh", "-c", script)
	if !strings.Contains(out, "pid1=init") || strings.Contains(out, "zombie") {
		t.Errorf("--init: %q, want berth's init as PID 1 and no zombie", out)
	}
	out = e.ok("container", "run", "--rm", "demo/busybox:1", "sh", "-c", script)
	if !strings.Contains(out, "pid1=sh") {
		t.Errorf("without --init: %q, want sh as PID 1", out)
	}
	if _, errOut, code := e.run("container", "run", "--rm", "--init", "--runtime", "runc", "demo/busybox:1", "true"); code == 0 || !strings.Contains(errOut, "init") {
		t.Errorf("--init with runc: exit %d, %q, want refused naming init", code, errOut)
	}
}
