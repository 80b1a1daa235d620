package e2e

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// writeCompose writes a Compose file into a directory of its own.
func writeCompose(t *testing.T, dir, body string) string {
	t.Helper()
	f := filepath.Join(dir, "compose.yaml")
	if err := os.WriteFile(f, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

func (c *cluster) instancesIn(ns string) []api.Instance {
	c.t.Helper()
	var list []api.Instance
	if err := json.Unmarshal([]byte(c.ok("get", "instances", "-n", ns, "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	return list
}

// projectContainers counts the runtime's containers of a namespace.
func (c *cluster) projectContainers(ns string) int {
	c.t.Helper()
	var list []struct {
		Labels map[string]string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(c.ok("container", "ps", "-a", "-o", "json")), &list); err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for _, ct := range list {
		if strings.HasPrefix(ct.Labels["berth.instance"], ns+"/") {
			n++
		}
	}
	return n
}

const counterApp = `name: counter
services:
  web:
    image: demo/busybox:1
    # Whether counter answered, by its Compose name, when web first started.
    command: ["sh", "-c", "if wget -qO- http://counter:6379/ >/dev/null 2>&1; then echo counter-was-up; else echo counter-was-down; fi; exec httpd -f -p 80 -h /www"]
    environment:
      COLOR: blue
    depends_on:
      counter:
        condition: service_healthy
  counter:
    image: demo/busybox:1
    # Ready only after a while, so web would see it down if it did not wait.
    command: ["sh", "-c", "sleep 2; touch /tmp/ready; exec httpd -f -p 6379 -h /www"]
    expose: ["6379"]
    healthcheck:
      test: ["CMD-SHELL", "test -f /tmp/ready"]
      interval: 500ms
      timeout: 1s
      retries: 3
`

// TestComposeHealthyDependency: web starts only once counter is healthy,
// reaches it by its Compose name, and an edit to web then up rolls web
// alone; down leaves nothing behind.
func TestComposeHealthyDependency(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	f := writeCompose(t, dir, counterApp)

	out := c.ok("compose", "-f", f, "up", "-d")
	if !strings.Contains(out, "waiting for counter to be healthy") || !strings.Contains(out, "service counter/web created") {
		t.Fatalf("compose up: %s", out)
	}
	var web api.Instance
	eventually(t, 30*time.Second, "web to run", func() bool {
		for _, in := range c.instancesIn("counter") {
			if in.Spec.Owner.Name == "web" && in.Status.Phase == api.PhaseRunning {
				web = in
				return true
			}
		}
		return false
	})
	var logs string
	eventually(t, 10*time.Second, "web's first line", func() bool {
		logs = c.ok("compose", "-f", f, "logs", "web")
		return strings.Contains(logs, "counter-was-")
	})
	if !strings.Contains(logs, "counter-was-up") || strings.Contains(logs, "counter-was-down") {
		t.Fatalf("web did not find counter up by name at its start: %q", logs)
	}

	ps := c.ok("compose", "-f", f, "ps")
	if !strings.Contains(ps, "web") || !strings.Contains(ps, "counter") {
		t.Fatalf("compose ps: %s", ps)
	}
	var counterBefore []string
	for _, in := range c.instancesIn("counter") {
		if in.Spec.Owner.Name == "counter" {
			counterBefore = append(counterBefore, in.Metadata.Name)
		}
	}

	// An edit to web alone: up configures web, leaves counter unchanged.
	writeCompose(t, dir, strings.Replace(counterApp, "COLOR: blue", "COLOR: green", 1))
	out = c.ok("compose", "-f", f, "up", "-d")
	if !strings.Contains(out, "service counter/web configured") || !strings.Contains(out, "service counter/counter unchanged") {
		t.Fatalf("up after an edit of web: %s", out)
	}
	eventually(t, 30*time.Second, "web's new instance", func() bool {
		for _, in := range c.instancesIn("counter") {
			if in.Spec.Owner.Name == "web" && in.Status.Phase == api.PhaseRunning && in.Metadata.Name != web.Metadata.Name {
				return in.Spec.Template.Env["COLOR"] == "green"
			}
		}
		return false
	})
	var counterAfter []string
	for _, in := range c.instancesIn("counter") {
		if in.Spec.Owner.Name == "counter" {
			counterAfter = append(counterAfter, in.Metadata.Name)
		}
	}
	if strings.Join(counterBefore, ",") != strings.Join(counterAfter, ",") {
		t.Fatalf("counter's instances changed on an edit of web: %v -> %v", counterBefore, counterAfter)
	}

	out = c.ok("compose", "-f", f, "down")
	if !strings.Contains(out, "service counter/web removed") || !strings.Contains(out, "service counter/counter removed") {
		t.Fatalf("compose down: %s", out)
	}
	if left := c.instancesIn("counter"); len(left) != 0 {
		t.Fatalf("instances left after down: %v", left)
	}
	eventually(t, 20*time.Second, "the project's containers to go", func() bool { return c.projectContainers("counter") == 0 })
	if svcs := strings.TrimSpace(c.ok("get", "services", "-n", "counter", "-o", "json")); svcs != "[]" {
		t.Fatalf("services left after down: %s", svcs)
	}
}

// TestComposeMigrationJob: a one-shot others wait on with
// service_completed_successfully is a job, applied through berth apply -f
// compose.yaml, and the app starts after it has written its migration.
func TestComposeMigrationJob(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	f := writeCompose(t, dir, `name: shop
services:
  migrate:
    image: demo/busybox:1
    working_dir: /data
    command: ["sh", "-c", "sleep 1; echo schema-v2 > migrated; pwd > wd"]
    volumes: ["./data:/data"]
    restart: "no"
  db:
    image: demo/busybox:1
    command: ["httpd", "-f", "-p", "5432", "-h", "/www"]
    expose: ["5432"]
  app:
    image: demo/busybox:1
    command: ["sh", "-c", "cat /data/migrated || exit 1; wget -qO- http://db:5432/ || exit 2; exec sleep 3600"]
    volumes: ["./data:/data:ro"]
    depends_on:
      migrate:
        condition: service_completed_successfully
      db:
        condition: service_started
`)
	out, errOut, code := c.run("apply", "-f", f)
	if code != 0 {
		logs, _, _ := c.run("get", "instances", "-n", "shop", "-o", "yaml")
		t.Fatalf("apply -f compose.yaml: exit %d\n%s\n%s\nmigrate: %s", code, out, errOut, logs)
	}
	if !strings.Contains(out, "job shop/migrate created") || !strings.Contains(out, "waiting for migrate to be completed_successfully") {
		t.Fatalf("apply -f compose.yaml: %s", out)
	}
	b, err := os.ReadFile(filepath.Join(data, "migrated"))
	if err != nil || strings.TrimSpace(string(b)) != "schema-v2" {
		t.Fatalf("migration output: %q %v", b, err)
	}
	if wd, _ := os.ReadFile(filepath.Join(data, "wd")); strings.TrimSpace(string(wd)) != "/data" {
		t.Fatalf("working_dir: the job ran in %q", wd)
	}
	eventually(t, 30*time.Second, "app to run", func() bool {
		for _, in := range c.instancesIn("shop") {
			if in.Spec.Owner.Name == "app" && in.Status.Phase == api.PhaseRunning {
				return true
			}
		}
		return false
	})
	// Running comes as the app's command starts: what it reads from the
	// migration and from db follows a moment later.
	var logs string
	eventually(t, 30*time.Second, "the app's output of the migration and of db", func() bool {
		logs = c.ok("logs", "-n", "shop", "app")
		return strings.Contains(logs, "schema-v2") && strings.Contains(logs, "hello from berth")
	})
	for _, in := range c.instancesIn("shop") {
		if in.Spec.Owner.Name == "app" && in.Status.Restarts != 0 {
			t.Fatalf("app restarted %d times: it started before what it waits for", in.Status.Restarts)
		}
	}
	c.ok("compose", "-f", f, "down")
	eventually(t, 20*time.Second, "the project's containers to go", func() bool { return c.projectContainers("shop") == 0 })
	if _, err := os.Stat(filepath.Join(data, "migrated")); err != nil {
		t.Fatalf("down removed a bind-mounted host directory's data: %v", err)
	}
}

// TestComposeUnsupportedKeys: keys berth does not carry out are listed
// exactly, by file and service, and nothing is applied; with
// --ignore-unsupported the rest applies.
func TestComposeUnsupportedKeys(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	f := writeCompose(t, dir, `name: legacy
services:
  app:
    image: demo/busybox:1
    command: ["sleep", "3600"]
    privileged: true
    sysctls: {kernel.pid_max: "65536"}
    ports: ["127.0.0.1:8080:80"]
  ok:
    image: demo/busybox:1
    command: ["sleep", "3600"]
`)
	_, errOut, code := c.run("compose", "-f", f, "up", "-d")
	want := `berth: 3 Compose key(s) berth does not support; nothing was applied (--ignore-unsupported applies the rest):
  ` + f + `: service "app": privileged: not supported by berth
  ` + f + `: service "app": ports[0].host_ip: 127.0.0.1: berth publishes on every address of the node
  ` + f + `: service "app": sysctls.kernel.pid_max: kernel.pid_max is not namespaced: it would change the whole node
`
	if code != 1 || errOut != want {
		t.Fatalf("up with unsupported keys: exit %d, stderr:\n%s\nwant:\n%s", code, errOut, want)
	}
	if svcs := strings.TrimSpace(c.ok("get", "services", "-n", "legacy", "-o", "json")); svcs != "[]" {
		t.Fatalf("something was applied: %s", svcs)
	}
	_, errOut, code = c.run("apply", "-f", f)
	if code != 1 || !strings.Contains(errOut, `service "app": privileged`) {
		t.Fatalf("apply -f with unsupported keys: exit %d, %s", code, errOut)
	}

	out, errOut, code := c.run("compose", "-f", f, "up", "-d", "--ignore-unsupported")
	if code != 0 || !strings.Contains(errOut, `warning: unsupported, ignored: `+f+`: service "app": privileged`) ||
		!strings.Contains(out, "service legacy/app created") {
		t.Fatalf("up --ignore-unsupported: exit %d\n%s\n%s", code, out, errOut)
	}
	c.ok("compose", "-p", "legacy", "down")

	// build: needs the image on the server; one it has is used as it is.
	f = writeCompose(t, dir, `name: built
services:
  api:
    build: ./api
  web:
    image: demo/busybox:1
    build: ./web
    command: ["sleep", "3600"]
`)
	_, errOut, code = c.run("compose", "-f", f, "up", "-d")
	if code != 1 || !strings.Contains(errOut, `service "api" has a build: section: berth builds no images, and the server has no image built-api and cannot pull it`) ||
		strings.Contains(errOut, `service "web"`) {
		t.Fatalf("up with build: sections: exit %d\n%s", code, errOut)
	}
	if svcs := strings.TrimSpace(c.ok("get", "services", "-n", "built", "-o", "json")); svcs != "[]" {
		t.Fatalf("something was applied: %s", svcs)
	}

	// apply --dry-run of a Compose file shows what it would make, storing nothing.
	f = writeCompose(t, dir, `name: dry
services:
  web:
    image: demo/busybox:1
    command: ["sleep", "3600"]
`)
	out = c.ok("apply", "--dry-run", "-f", f)
	if !strings.Contains(out, "service/web created (dry run)") || !strings.Contains(out, "+  - sleep") {
		t.Fatalf("apply --dry-run -f compose.yaml: %s", out)
	}
	if svcs := strings.TrimSpace(c.ok("get", "services", "-n", "dry", "-o", "json")); svcs != "[]" {
		t.Fatalf("a dry run stored: %s", svcs)
	}

	// -n puts the project in another namespace; down there removes it.
	if out := c.ok("-n", "elsewhere", "compose", "-f", f, "up", "-d"); !strings.Contains(out, "service elsewhere/web created") {
		t.Fatalf("up -n elsewhere: %s", out)
	}
	c.waitRunningIn("elsewhere", "web")
	if out := c.ok("compose", "-f", f, "-n", "elsewhere", "down"); !strings.Contains(out, "service elsewhere/web removed") {
		t.Fatalf("down -n elsewhere: %s", out)
	}

	// Unknown subcommands exit non-zero.
	if _, _, code := c.run("compose", "nope"); code == 0 {
		t.Fatal("compose nope exited 0")
	}
}

// TestComposeCommands: profiles, -p, .env interpolation, a named volume
// kept across down and removed by down --volumes, and the config, pull,
// ps -a, exec, restart and logs subcommands, run as a user would.
func TestComposeCommands(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, ".env"), []byte("GREETING=hi-from-env\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	f := writeCompose(t, dir, `services:
  store:
    image: demo/busybox:1
    command: ["sh", "-c", "echo $$GREETING >> /data/log; exec sleep 3600"]
    environment:
      GREETING: ${GREETING}
    volumes: ["data:/data"]
  seed:
    image: demo/busybox:1
    command: ["echo", "seeded"]
    restart: "no"
  debug:
    image: demo/busybox:1
    profiles: ["debug"]
    command: ["sleep", "3600"]
volumes:
  data: {}
`)
	// The project is named by -p; debug only runs with its profile.
	if got := c.ok("compose", "-f", f, "-p", "tools", "config", "--services"); got != "seed\nstore\n" {
		t.Fatalf("config --services: %q", got)
	}
	if got := c.ok("compose", "-f", f, "--profile", "debug", "config", "--services"); got != "debug\nseed\nstore\n" {
		t.Fatalf("config --services with --profile debug: %q", got)
	}
	if got := c.ok("compose", "-f", f, "-p", "tools", "config", "--berth"); !strings.Contains(got, "GREETING: hi-from-env") || !strings.Contains(got, "namespace: tools") {
		t.Fatalf("config --berth: %s", got)
	}
	if got := c.ok("compose", "-f", f, "config"); !strings.Contains(got, "GREETING: hi-from-env") {
		t.Fatalf("config: %s", got)
	}
	if got := c.ok("compose", "-f", f, "-p", "tools", "pull"); !strings.Contains(got, "store\tdemo/busybox:1@sha256:") {
		t.Fatalf("pull: %s", got)
	}

	c.ok("compose", "-f", f, "-p", "tools", "up", "-d")
	eventually(t, 30*time.Second, "store to run and seed to finish", func() bool {
		ps := c.ok("compose", "-f", f, "-p", "tools", "ps", "-a")
		return strings.Contains(ps, "store") && strings.Contains(ps, "Running") && strings.Contains(ps, "Succeeded")
	})
	if ps := c.ok("compose", "-f", f, "-p", "tools", "ps"); strings.Contains(ps, "Succeeded") || strings.Contains(ps, "debug") {
		t.Fatalf("ps without -a shows finished instances, or a profile not enabled: %s", ps)
	}
	if logs := c.ok("compose", "-f", f, "-p", "tools", "logs", "seed"); !strings.Contains(logs, "seed | ") || !strings.Contains(logs, "seeded") {
		t.Fatalf("logs seed: %q", logs)
	}
	if out := c.ok("compose", "-f", f, "-p", "tools", "exec", "store", "cat", "/data/log"); out != "hi-from-env\n" {
		t.Fatalf("exec store cat /data/log: %q", out)
	}

	// restart: a new instance of store, which appends to the same volume.
	before := runningIn(c, "tools", "store")
	if out := c.ok("compose", "-f", f, "-p", "tools", "restart", "store"); !strings.Contains(out, "service tools/store restarted") {
		t.Fatalf("restart: %s", out)
	}
	eventually(t, 30*time.Second, "store's new instance", func() bool {
		now := runningIn(c, "tools", "store")
		return now != "" && now != before
	})
	eventually(t, 10*time.Second, "the volume to hold both starts", func() bool {
		out, _, _ := c.run("compose", "-f", f, "-p", "tools", "exec", "store", "cat", "/data/log")
		return out == "hi-from-env\nhi-from-env\n"
	})

	// A service dropped from the file is warned about, then removed with
	// --remove-orphans.
	body, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	i, j := strings.Index(string(body), "  seed:"), strings.Index(string(body), "  debug:")
	writeCompose(t, dir, string(body[:i])+string(body[j:]))
	_, errOut, code := c.run("compose", "-f", f, "-p", "tools", "up", "-d")
	if code != 0 || !strings.Contains(errOut, "warning: service tools/seed is the project's but no longer in its files") {
		t.Fatalf("up without seed: exit %d, %s", code, errOut)
	}
	if out := c.ok("compose", "-f", f, "-p", "tools", "up", "-d", "--remove-orphans"); !strings.Contains(out, "service tools/seed removed") ||
		!strings.Contains(out, "service tools/store unchanged") {
		t.Fatalf("up --remove-orphans: %s", out)
	}
	if _, _, code := c.run("get", "service", "seed", "-n", "tools"); code == 0 {
		t.Fatal("seed still there after --remove-orphans")
	}

	// down keeps the named volume; down --volumes removes it.
	c.ok("compose", "-f", f, "-p", "tools", "down")
	if vols := c.ok("volume", "ls", "-n", "tools"); !strings.Contains(vols, "data") {
		t.Fatalf("down removed the volume: %s", vols)
	}
	c.ok("compose", "-f", f, "-p", "tools", "up", "-d")
	eventually(t, 30*time.Second, "store again", func() bool { return runningIn(c, "tools", "store") != "" })
	out := c.ok("compose", "-f", f, "-p", "tools", "down", "--volumes")
	if !strings.Contains(out, "volume tools/data removed") {
		t.Fatalf("down --volumes: %s", out)
	}
	eventually(t, 20*time.Second, "the volume's data to go", func() bool {
		vols := c.ok("volume", "ls", "-n", "tools", "-o", "json")
		return strings.TrimSpace(vols) == "[]"
	})
	// The agent removes a container once its instance is gone: soon after down.
	eventually(t, 20*time.Second, "the project's containers to go", func() bool { return c.projectContainers("tools") == 0 })
}

// runningIn names the running instance of owner in ns, or "".
func runningIn(c *cluster, ns, owner string) string {
	for _, in := range c.instancesIn(ns) {
		if in.Spec.Owner.Name == owner && in.Status.Phase == api.PhaseRunning {
			return in.Metadata.Name
		}
	}
	return ""
}

// TestComposeForegroundAndTimeout: up without -d follows the services'
// output until stopped; a dependency that never becomes healthy stops up
// after --timeout, naming it, with the dependent not applied.
func TestComposeForegroundAndTimeout(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	f := writeCompose(t, dir, `name: fg
services:
  ticker:
    image: demo/busybox:1
    command: ["sh", "-c", "i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.2; done"]
`)
	var out lockedBuffer
	up := exec.Command(berthBin, "--data-dir", c.dataDir, "compose", "-f", f, "up")
	up.Stdout, up.Stderr = &out, &out
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = up.Process.Kill(); _ = up.Wait() })
	eventually(t, 30*time.Second, "up to follow ticker's output", func() bool {
		return strings.Contains(out.String(), "ticker | ") && strings.Contains(out.String(), "tick 3")
	})
	_ = up.Process.Kill()
	_ = up.Wait()
	c.ok("compose", "-f", f, "down")

	f = writeCompose(t, dir, `name: stuck
services:
  db:
    image: demo/busybox:1
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD", "false"]
      interval: 200ms
  app:
    image: demo/busybox:1
    command: ["sleep", "3600"]
    depends_on:
      db:
        condition: service_healthy
`)
	start := time.Now()
	stdout, errOut, code := c.run("compose", "-f", f, "up", "-d", "--timeout", "3s")
	if code != 1 || !strings.Contains(errOut, `service "app" waits for "db": db: not healthy after 3s`) {
		t.Fatalf("up with a never-healthy dependency: exit %d\n%s\n%s", code, stdout, errOut)
	}
	if took := time.Since(start); took > 30*time.Second {
		t.Fatalf("up took %v with --timeout 3s", took)
	}
	if _, _, code := c.run("get", "service", "app", "-n", "stuck"); code == 0 {
		t.Fatal("app was applied although db never became healthy")
	}
	c.ok("compose", "-f", f, "down")
}

// TestComposePullPolicy: against a real registry, pull_policy: never
// leaves a service's image unfetched; compose pull has the server fetch
// it; and a build: service whose image the registry has goes up.
func TestComposePullPolicy(t *testing.T) {
	c, builder, ref := clusterWithPushedImage(t)
	digest := imageDigests(t, builder)[ref]

	dir := t.TempDir()
	f := writeCompose(t, dir, `name: pulled
services:
  app:
    image: `+ref+`
    pull_policy: never
    command: ["sleep", "3600"]
`)
	if out := c.ok("compose", "-f", f, "config", "--berth"); !strings.Contains(out, "pullPolicy: Never") {
		t.Fatalf("config --berth: %s", out)
	}
	if _, ok := imageDigests(t, c.env)[ref]; ok {
		t.Fatal("the image was fetched before anything asked for it")
	}
	// never: pull leaves it alone and says it is missing.
	out, _, code := c.run("compose", "-f", f, "pull")
	if code == 0 || !strings.Contains(out, "app\t"+ref+"\tmissing") {
		t.Fatalf("pull with pull_policy never: exit %d, %s", code, out)
	}
	if _, ok := imageDigests(t, c.env)[ref]; ok {
		t.Fatal("pull_policy never: the image was fetched")
	}

	// Without the policy, pull fetches and pins it; a build: service of
	// that image then goes up.
	writeCompose(t, dir, `name: pulled
services:
  app:
    image: `+ref+`
    build: ./app
    command: ["sleep", "3600"]
`)
	if out := c.ok("compose", "-f", f, "pull"); !strings.Contains(out, "app\t"+ref+"@"+digest+"\tpresent") {
		t.Fatalf("pull: %s", out)
	}
	if got := imageDigests(t, c.env)[ref]; got != digest {
		t.Fatalf("the server's store has %q for %s, want %s", got, ref, digest)
	}
	c.ok("compose", "-f", f, "up", "-d")
	c.waitRunningIn("pulled", "app")
	c.ok("compose", "-f", f, "down")
}

func (c *cluster) waitRunningIn(ns, owner string) {
	c.t.Helper()
	eventually(c.t, 60*time.Second, owner+" to run", func() bool { return runningIn(c, ns, owner) != "" })
}

// processApp uses the keys that set up a container's process; each
// service prints what its process sees.
const processApp = `name: keys
services:
  box:
    image: demo/busybox:1
    command:
      - sh
      - -c
      - |
        trap 'echo got-usr1 > /out/stopped; exit 0' USR1
        echo pid1=$$(cat /proc/1/comm)
        touch /tmp/f; chown 65534 /tmp/f 2>/dev/null && echo chown-ok || echo chown-denied
        ping -c1 -W1 127.0.0.1 >/dev/null 2>&1 && echo ping-ok || echo ping-denied
        touch /rootfile 2>/dev/null && echo rootfs-writable || echo rootfs-readonly
        grep 'Max open files' /proc/self/limits
        echo somaxconn=$$(cat /proc/sys/net/core/somaxconn)
        grep db.legacy /etc/hosts
        echo ready
        while :; do sleep 0.1; done
    cap_drop: [CHOWN]
    cap_add: [NET_RAW]
    read_only: true
    tmpfs: ["/tmp:size=1m"]
    volumes: ["./out:/out"]
    ulimits:
      nofile: {soft: 300, hard: 400}
    sysctls:
      net.core.somaxconn: "777"
    extra_hosts: ["db.legacy=10.1.2.3"]
    init: true
    stop_signal: SIGUSR1
  who:
    image: demo/busybox:1
    command: ["sh", "-c", "echo uid=$$(id -u) gid=$$(id -g) host=$$(hostname); exec sleep 3600"]
    user: nobody
    hostname: who.internal
  stubborn:
    image: demo/busybox:1
    command: ["sh", "-c", "trap 'echo ignoring TERM' TERM; echo ready; while :; do sleep 0.1; done"]
    stop_grace_period: 1s
  sick:
    image: demo/busybox:1
    command: ["sleep", "3600"]
    healthcheck:
      test: ["CMD", "false"]
      interval: 200ms
      retries: 1
      start_period: 1s
  everywhere:
    image: demo/busybox:1
    command: ["sleep", "3600"]
    deploy:
      mode: global
  db:
    image: demo/busybox:1
    command: ["httpd", "-f", "-p", "5432", "-h", "/www"]
    expose: ["5432"]
    networks:
      default:
        aliases: [database]
`

// TestComposeProcessKeys: cap_add/cap_drop, read_only, ulimits, sysctls,
// extra_hosts, init, stop_signal, user, hostname, stop_grace_period,
// healthcheck start_period, deploy.mode global and network aliases, each
// seen from inside the running container (or in how it is stopped and
// restarted). A file applied again after a restart changes nothing.
func TestComposeProcessKeys(t *testing.T) {
	c := startCluster(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	if err := os.Mkdir(out, 0o777); err != nil {
		t.Fatal(err)
	}
	f := writeCompose(t, dir, processApp)
	upAt := time.Now()
	c.ok("compose", "-f", f, "up", "-d")

	var logs string
	eventually(t, 60*time.Second, "box and who to report", func() bool {
		// Until the controller has made their instances, logs has none to read.
		out, _, code := c.run("compose", "-f", f, "logs", "box", "who")
		logs = out
		return code == 0 && strings.Contains(logs, "ready") && strings.Contains(logs, "uid=")
	})
	for _, want := range []string{
		"pid1=init",                             // init
		"chown-denied",                          // cap_drop: CHOWN
		"ping-ok",                               // cap_add: NET_RAW (berth's default set lacks it)
		"rootfs-readonly",                       // read_only
		"somaxconn=777",                         // sysctls
		"10.1.2.3\tdb.legacy",                   // extra_hosts
		"uid=65534 gid=65534 host=who.internal", // user by name, hostname
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("want %q in the services' output:\n%s", want, logs)
		}
	}
	if !regexp.MustCompile(`Max open files +300 +400`).MatchString(logs) {
		t.Errorf("ulimits: nofile 300/400 not in:\n%s", logs)
	}

	// aliases: another service reaches db by its alias.
	c.waitRunningIn("keys", "db")
	eventually(t, 20*time.Second, "who to reach db as database", func() bool {
		out, _, code := c.run("compose", "-f", f, "exec", "who", "sh", "-c", "timeout 2 wget -qO- http://database:5432/ >/dev/null && echo reached")
		return code == 0 && strings.Contains(out, "reached")
	})

	// deploy.mode global: one instance on the one node.
	var everywhere api.Service
	if err := json.Unmarshal([]byte(c.ok("get", "service", "everywhere", "-n", "keys", "-o", "json")), &everywhere); err != nil || everywhere.Spec.Mode != api.ModeGlobal {
		t.Errorf("everywhere's mode: %q %v", everywhere.Spec.Mode, err)
	}
	c.waitRunningIn("keys", "everywhere")

	// start_period 1s: a check that never passes restarts the container
	// after about a second, not after the 10s berth grants by default
	// (counted here from before up, so from before the container started).
	eventually(t, time.Until(upAt.Add(9*time.Second)), "sick to be restarted for failing its check", func() bool {
		for _, in := range c.instancesIn("keys") {
			if in.Spec.Owner.Name == "sick" && in.Status.Restarts > 0 {
				return true
			}
		}
		return false
	})

	// A restart rolls box; applying the file again then changes nothing,
	// and box's old container got SIGUSR1 (passed on by its init).
	before := runningIn(c, "keys", "box")
	c.ok("compose", "-f", f, "restart", "box")
	eventually(t, 30*time.Second, "box's new instance", func() bool {
		now := runningIn(c, "keys", "box")
		return now != "" && now != before
	})
	eventually(t, 15*time.Second, "box's stop signal to be handled", func() bool {
		b, _ := os.ReadFile(filepath.Join(out, "stopped"))
		return string(b) == "got-usr1\n"
	})
	if up := c.ok("compose", "-f", f, "up", "-d"); !strings.Contains(up, "service keys/box unchanged") {
		t.Fatalf("up after restart: %s", up)
	}

	// stop_grace_period 1s: a container that handles SIGTERM and carries
	// on is killed after a second, not after the default 10s.
	start := time.Now()
	c.ok("compose", "-f", f, "down")
	eventually(t, 30*time.Second, "the project's containers to go", func() bool { return c.projectContainers("keys") == 0 })
	if took := time.Since(start); took > 8*time.Second {
		t.Errorf("down took %v with stubborn's stop_grace_period of 1s", took)
	}
}

// TestComposeSecretsAndConfigs: the project's secrets (from a file and
// from the environment) and configs (inline) become berth Secrets and
// Configs mounted as files where Compose puts them, with the modes asked;
// an external secret is used as it is; down removes the project's own
// and leaves the external one.
func TestComposeSecretsAndConfigs(t *testing.T) {
	c := startCluster(t)
	// The agent keeps instances' data on a tmpfs in its data dir.
	t.Cleanup(func() { _ = syscall.Unmount(filepath.Join(c.dataDir, "data"), syscall.MNT_DETACH) })
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "db_password.txt"), []byte("s3cret-from-file"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.ok("-n", "vault", "secret", "create", "shared-token", "--from-literal", "token=t-external")
	f := writeCompose(t, dir, `name: vault
services:
  app:
    image: demo/busybox:1
    command:
      - sh
      - -c
      - |
        for f in /run/secrets/db_password /run/secrets/api.key /etc/shared.token /etc/app/banner.txt; do
          echo "$$f $$(stat -c %a $$f) $$(cat $$f)"
        done
        echo done
        exec sleep 3600
    secrets:
      - db_password
      - source: api_key
        target: api.key
        mode: 0440
      - source: shared
        target: /etc/shared.token
    configs:
      - source: banner
        target: /etc/app/banner.txt
secrets:
  db_password:
    file: ./db_password.txt
  api_key:
    environment: API_KEY
  shared:
    external: true
    name: shared-token
configs:
  banner:
    content: welcome to ${TITLE}
`)
	cmd := exec.Command(berthBin, "--data-dir", c.dataDir, "compose", "-f", f, "up", "-d")
	cmd.Env = append(os.Environ(), "API_KEY=k-from-env", "TITLE=the vault")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "secret vault/db-password created") ||
		!strings.Contains(string(out), "config vault/banner created") {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	var logs string
	eventually(t, 30*time.Second, "app to print its files", func() bool {
		// Until the controller has made app's instance, logs has none to read.
		out, _, code := c.run("compose", "-f", f, "logs", "app")
		logs = out
		return code == 0 && strings.Contains(logs, "done")
	})
	for _, want := range []string{
		"/run/secrets/db_password 400 s3cret-from-file",
		"/run/secrets/api.key 440 k-from-env",
		"/etc/shared.token 400 t-external",
		"/etc/app/banner.txt 444 welcome to the vault",
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("want %q in app's output:\n%s", want, logs)
		}
	}
	if got := c.ok("get", "secrets", "-n", "vault"); strings.Contains(got, "s3cret") {
		t.Fatalf("a secret's value shows through get: %s", got)
	}

	out := c.ok("compose", "-f", f, "down")
	for _, want := range []string{"secret vault/db-password removed", "secret vault/api-key removed", "config vault/banner removed"} {
		if !strings.Contains(out, want) {
			t.Errorf("down: want %q in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "shared-token") {
		t.Errorf("down removed the external secret:\n%s", out)
	}
	if got := c.ok("get", "secrets", "-n", "vault"); !strings.Contains(got, "shared-token") || strings.Contains(got, "db-password") {
		t.Errorf("secrets after down: %s", got)
	}
}

// TestComposeNetworksIsolated: a project's several networks are isolated
// from each other: proxy (front) reaches app (front and back), app
// reaches db (back), and proxy does not reach db, by name or address.
func TestComposeNetworksIsolated(t *testing.T) {
	c := startCluster(t)
	f := writeCompose(t, t.TempDir(), `name: tiers
services:
  proxy:
    image: demo/busybox:1
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    networks: [front]
  app:
    image: demo/busybox:1
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    expose: ["80"]
    networks: [front, back]
  db:
    image: demo/busybox:1
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    expose: ["80"]
    networks: [back]
networks:
  front: {}
  back: {}
`)
	c.ok("compose", "-f", f, "up", "-d")
	for _, s := range []string{"proxy", "app", "db"} {
		c.waitRunningIn("tiers", s)
	}
	reaches := func(from, to string) bool {
		out, _, code := c.run("compose", "-f", f, "exec", from, "sh", "-c", "timeout 2 wget -qO- http://"+to+"/ >/dev/null && echo reached")
		return code == 0 && strings.Contains(out, "reached")
	}
	eventually(t, 30*time.Second, "proxy to reach app", func() bool { return reaches("proxy", "app") })
	eventually(t, 30*time.Second, "app to reach db", func() bool { return reaches("app", "db") })
	var dbIP string
	for _, in := range c.instancesIn("tiers") {
		if in.Spec.Owner.Name == "db" {
			dbIP = in.Status.IP
		}
	}
	eventually(t, 30*time.Second, "proxy to be cut off from db", func() bool { return !reaches("proxy", "db") })
	if reaches("proxy", dbIP) {
		t.Errorf("proxy reaches db's own address %s", dbIP)
	}
	if !reaches("proxy", "app") || !reaches("app", "db") {
		t.Errorf("isolating proxy from db cut what shares a network")
	}
	c.ok("compose", "-f", f, "down")
}
