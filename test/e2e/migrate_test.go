package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// counts are the numbers an instance's counter logged, in order.
func counts(t *testing.T, l *lan.LAN, inst string) []int {
	t.Helper()
	out, err := l.Admin("logs", inst)
	check(t, err)
	var ns []int
	for _, f := range strings.Fields(out) {
		n, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("the counter logged %q", f)
		}
		ns = append(ns, n)
	}
	return ns
}

// otherNode is the agent of l other than node.
func otherNode(l *lan.LAN, node string) string {
	for _, a := range l.Agents {
		if a.Name != node {
			return a.Name
		}
	}
	return ""
}

// instanceNamed is the instance of that name, as the API has it now.
func instanceNamed(t *testing.T, l *lan.LAN, name string) api.Instance {
	t.Helper()
	insts, err := l.Instances()
	check(t, err)
	for _, in := range insts {
		if in.Metadata.Name == name {
			return in
		}
	}
	t.Fatalf("no instance %s", name)
	return api.Instance{}
}

// fileCounterYAML is a counter that also appends to a file of its
// writable layer, which it keeps open.
const fileCounterYAML = `kind: Service
name: counter
replicas: 1
template:
  image: demo/busybox:1
  runtime: runc
  command: ["sh", "-c", "exec 3>>/root/count; i=0; while :; do i=$((i+1)); echo $i; echo $i >&3; usleep 10000; done"]
  resources: {cpu: 0.1, memory: 32Mi}
`

// TestMigrateCounter: berth migrate moves a counter (runc) to the other
// node; it counts on from where it was, under the same instance name,
// and runs on the target alone. The file it keeps open in its writable
// layer moves with it and goes on growing.
func TestMigrateCounter(t *testing.T) {
	l := startLANOf(t, 1, 2)
	check(t, l.Apply(fileCounterYAML))
	inst := waitHealthy(t, l, "counter", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := otherNode(l, from)
	eventually(t, 10*time.Second, "the counter to count", func() bool { return len(counts(t, l, name)) >= 20 })
	before := counts(t, l, name)

	out, err := l.Admin("migrate", name, "--to", to)
	check(t, err)
	t.Logf("%s", strings.TrimSpace(out))
	if !strings.Contains(out, "migrated from "+from+" to "+to) || !strings.Contains(out, "sent node to node") || !regexp.MustCompile(`prepare \S+ \(before the freeze\), dump [1-9]\S*, transfer \S+, restore [1-9]\S*, switch \S+`).MatchString(out) {
		t.Fatalf("migrate printed %q, want where it went and its stages", out)
	}
	moved := instanceNamed(t, l, name)
	if moved.Spec.Node != to || moved.Status.Phase != api.PhaseRunning || moved.Metadata.UID != inst.Metadata.UID {
		t.Fatalf("after migrate the instance is on %q, %s, uid %s (was %s)", moved.Spec.Node, moved.Status.Phase, moved.Metadata.UID, inst.Metadata.UID)
	}
	eventually(t, 10*time.Second, "the moved counter to count", func() bool { return len(counts(t, l, name)) >= 10 })
	after := counts(t, l, name)
	last := before[len(before)-1]
	if after[0] <= last {
		t.Fatalf("the moved counter began at %d, at or below %d which it had reached before: it was reset", after[0], last)
	}
	for i := 1; i < len(after); i++ {
		if after[i] != after[i-1]+1 {
			t.Fatalf("the moved counter skipped from %d to %d", after[i-1], after[i])
		}
	}
	eventually(t, 10*time.Second, "the source to let go of it", func() bool {
		return runningOf(t, l.Host(from), "counter") == 0 && runningOf(t, l.Host(to), "counter") == 1
	})
	eventually(t, 10*time.Second, "the source's container to be removed", func() bool {
		cs, err := l.Host(from).Containers()
		check(t, err)
		return len(cs) == 0
	})
	t.Logf("counter at %d before the move, %d first after it", last, after[0])
	out, err = l.Admin("exec", name, "--", "cat", "/root/count")
	check(t, err)
	file := strings.Fields(out)
	if len(file) < len(before)+len(after) || file[0] != "1" {
		t.Fatalf("after the move /root/count holds %d numbers from %q, want every one since 1", len(file), file[:min(3, len(file))])
	}
	for i, f := range file {
		if f != strconv.Itoa(i+1) {
			t.Fatalf("after the move /root/count has %q where %d belongs", f, i+1)
		}
	}

	// What cannot be done is refused, naming why, and moves nothing.
	for _, tc := range []struct{ to, want string }{{to, "already"}, {"nowhere", "nowhere"}} {
		if _, err := l.Admin("migrate", name, "--to", tc.to); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("migrate --to %s: %v, want an error saying %q", tc.to, err, tc.want)
		}
	}
	if _, err := l.Admin("migrate"); err == nil {
		t.Errorf("migrate without an instance succeeded")
	}
	// A named volume's data stays on its node: such an instance is not
	// moved live (a drain restarts it instead), and its service cannot
	// ask for live migration.
	check(t, l.Apply(volumeYAML))
	vol := waitHealthy(t, l, "vol", 1, 60*time.Second)[0]
	if _, err := l.Admin("migrate", vol.Metadata.Name); err == nil || !strings.Contains(err.Error(), "named volume data is node-local") {
		t.Errorf("migrate of an instance with a named volume: %v, want a refusal naming the volume", err)
	}
	if err := l.Apply(strings.Replace(volumeYAML, "runtime: runc", "runtime: runc\n  migration: live", 1)); err == nil || !strings.Contains(err.Error(), "named volume data") {
		t.Errorf("migration: live with a named volume: %v, want a refusal naming the volume", err)
	}
	if got := instanceNamed(t, l, vol.Metadata.Name); got.Spec.Node != vol.Spec.Node {
		t.Errorf("the instance with a volume moved to %s", got.Spec.Node)
	}
}

// volumeYAML: a runc service keeping data in a named volume.
const volumeYAML = `kind: Service
name: vol
replicas: 1
template:
  image: demo/busybox:1
  runtime: runc
  command: ["sh", "-c", "date >> /data/log; exec sleep 1d"]
  volumes: [{name: data, path: /data}]
  resources: {cpu: 0.1, memory: 16Mi}
`

var (
	memserverOnce sync.Once
	memserverBin  string
	memserverErr  error
)

// memImage builds demo/memserver:1 in e's data dir: busybox and
// internal/testing/memserver as /memserver.
func (e *env) memImage() {
	e.t.Helper()
	memserverOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-memserver-")
		if err != nil {
			memserverErr = err
			return
		}
		memserverBin = filepath.Join(dir, "memserver")
		build := exec.Command("go", "build", "-o", memserverBin, "../../internal/testing/memserver")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			memserverErr = fmt.Errorf("build memserver: %w: %s", err, out)
		}
	})
	check(e.t, memserverErr)
	rootfs := runtimetest.BusyboxRootfs(e.t)
	b, err := os.ReadFile(memserverBin)
	check(e.t, err)
	check(e.t, os.WriteFile(filepath.Join(rootfs, "memserver"), b, 0o755))
	e.ok("image", "build", rootfs, "--tag", "demo/memserver:1")
}

// memYAML is a memserver holding 100 MiB, migrated live, behind a VIP.
const memYAML = `kind: Service
name: mem
replicas: 1
template:
  image: demo/memserver:1
  runtime: runc
  migration: live
  command: ["/memserver", "-mb", "100"]
  ports: [{name: http, container: 80}]
  health: {http: {port: 80, path: /}, interval: 300ms, timeout: 1s, failures: 3}
  resources: {cpu: 0.5, memory: 256Mi}
`

// memClientYAML polls from a node the tests leave alone.
const memClientYAML = `kind: Service
name: client
replicas: 1
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.1, memory: 16Mi}
`

// memState asks the memserver instance, from inside its own container,
// for its counter and its memory's sum.
func memState(t *testing.T, l *lan.LAN, inst string) (count int, sum string) {
	t.Helper()
	out, err := l.Admin("exec", inst, "--", "sh", "-c", "wget -qO- http://127.0.0.1/ && wget -qO- http://127.0.0.1/sum")
	check(t, err)
	f := strings.Fields(out)
	if len(f) != 3 {
		t.Fatalf("memserver answered %q", out)
	}
	count, err = strconv.Atoi(f[0])
	check(t, err)
	return count, f[2]
}

// TestMigrateMemoryThroughVIP: a server holding 100 MiB is migrated while
// a client polls it through its service's VIP. Its memory is the same
// after (by checksum), its counter goes on, the client's answers never
// go back, and the pause the client sees is reported.
func TestMigrateMemoryThroughVIP(t *testing.T) {
	l := startLANWith(t, 1, 2, (*env).memImage)
	check(t, l.Apply(memYAML))
	check(t, l.Apply(memClientYAML))
	inst := waitHealthy(t, l, "mem", 1, 60*time.Second)[0]
	client := waitHealthy(t, l, "client", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := otherNode(l, from)
	count0, sum0 := memState(t, l, name)

	// The client polls the VIP until told to stop, one line per request
	// ("COUNT UNIXNANO", or FAIL) into a file the test reads.
	cexec := func(args ...string) string {
		out, err := l.Host(client.Spec.Node).Run(append([]string{"container", "exec", client.Status.ContainerID}, args...)...)
		check(t, err)
		return out
	}
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		_, _ = l.Host(client.Spec.Node).Run("container", "exec", client.Status.ContainerID, "sh", "-c",
			"while [ ! -e /tmp/stop ]; do timeout 2 wget -qO- http://mem.default.berth/ >>/tmp/poll 2>/dev/null || echo FAIL >>/tmp/poll; usleep 2000; done")
	}()
	t.Cleanup(func() { <-polled })
	defer cexec("touch", "/tmp/stop")
	answersSince := func(since time.Time) int {
		n := 0
		// Until the first request ends, there is no file.
		for _, ln := range strings.Split(cexec("sh", "-c", "cat /tmp/poll 2>/dev/null; true"), "\n") {
			if f := strings.Fields(ln); len(f) == 2 {
				if at, _ := strconv.ParseInt(f[1], 10, 64); at > since.UnixNano() {
					n++
				}
			}
		}
		return n
	}
	eventually(t, 20*time.Second, "answers through the VIP", func() bool { return answersSince(time.Time{}) >= 10 })

	out, err := l.Admin("migrate", name, "--to", to)
	check(t, err)
	migrated := time.Now()
	t.Logf("%s", strings.TrimSpace(out))
	moved := instanceNamed(t, l, name)
	if moved.Spec.Node != to || moved.Status.Phase != api.PhaseRunning {
		t.Fatalf("after migrate: instance %s on %s, %s, want it on %s", name, moved.Spec.Node, moved.Status.Phase, to)
	}
	eventually(t, 30*time.Second, "answers through the VIP from the moved instance", func() bool { return answersSince(migrated) >= 10 })
	cexec("touch", "/tmp/stop")
	lines := strings.Split(strings.TrimSpace(cexec("cat", "/tmp/poll")), "\n")

	count1, sum1 := memState(t, l, name)
	if sum1 != sum0 {
		t.Errorf("memory sum %s after the move, %s before", sum1, sum0)
	}
	if count1 < count0 {
		t.Errorf("counter %d after the move, %d before: it started over", count1, count0)
	}
	// Through the VIP: the counter never goes back; the longest time
	// between two answers is the pause clients saw.
	var prevCount int
	var prevAt, gap int64
	answers, fails := 0, 0
	for _, ln := range lines {
		f := strings.Fields(ln)
		if len(f) != 2 {
			fails++
			continue
		}
		c, _ := strconv.Atoi(f[0])
		at, _ := strconv.ParseInt(f[1], 10, 64)
		if c < prevCount {
			t.Errorf("through the VIP the counter went back from %d to %d", prevCount, c)
		}
		if prevAt != 0 {
			gap = max(gap, at-prevAt)
		}
		prevCount, prevAt = c, at
		answers++
	}
	if answers < 10 {
		t.Fatalf("the client got %d answers (%d failed): %q", answers, fails, lines)
	}
	t.Logf("100 MiB memserver %s -> %s: longest pause between answers through the VIP %v (%d answers, %d failed requests)",
		from, to, time.Duration(gap).Round(time.Millisecond), answers, fails)
	if runningOf(t, l.Host(from), "mem") != 0 {
		t.Errorf("the instance still runs on %s", from)
	}
}

// TestMigrateRelayed: where the source's agent cannot reach the port the
// target offered (a firewall on the target refuses new connections from
// the source), the images go through the server instead, and the
// counter moves all the same, counting on.
func TestMigrateRelayed(t *testing.T) {
	l := startLANOf(t, 1, 2)
	check(t, l.Apply(fileCounterYAML))
	inst := waitHealthy(t, l, "counter", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := l.Host(otherNode(l, from))
	table := fmt.Sprintf("berth-e2e-relay-%d", os.Getpid())
	rules := fmt.Sprintf("table inet %s {\n chain in {\n  type filter hook input priority 0;\n  ip saddr %s ct state new tcp flags syn reject with tcp reset\n }\n}\n",
		table, l.Host(from).Addr)
	nft := exec.Command("nsenter", "--net="+to.Netns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(rules)
	if out, err := nft.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("nsenter", "--net="+to.Netns, "nft", "delete", "table", "inet", table).Run() })
	eventually(t, 10*time.Second, "the counter to count", func() bool { return len(counts(t, l, name)) >= 20 })
	before := counts(t, l, name)

	out, err := l.Admin("migrate", name, "--to", to.Name, "-o", "json")
	check(t, err)
	var m api.Migration
	check(t, json.Unmarshal([]byte(out), &m))
	if m.Direct || m.To != to.Name || m.Bytes == 0 {
		t.Fatalf("migrate with the target's port closed to the source: %s; want it relayed (direct false) to %s", out, to.Name)
	}
	eventually(t, 10*time.Second, "the moved counter to count", func() bool { return len(counts(t, l, name)) >= 10 })
	if after, last := counts(t, l, name), before[len(before)-1]; after[0] <= last {
		t.Fatalf("the moved counter began at %d, at or below %d which it had reached before: it was reset", after[0], last)
	}
}

// TestMigrateTargetDies: the target's agent is killed while the images
// stream in; the migration fails saying so, and the instance runs on its
// node with its memory and counter, nowhere else.
func TestMigrateTargetDies(t *testing.T) { migrateTargetDies(t) }

// TestMigrateTargetDiesPostCopy: the same with --post-copy, the target
// killed as its lazy-pages daemon waits for the restore: the source's
// page server is made to fail, and CRIU lets the processes run on there.
func TestMigrateTargetDiesPostCopy(t *testing.T) { migrateTargetDies(t, "--post-copy") }

func migrateTargetDies(t *testing.T, flags ...string) {
	l := startLANWith(t, 1, 2, (*env).memImage)
	check(t, l.Apply(memYAML))
	inst := waitHealthy(t, l, "mem", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := l.Host(otherNode(l, from))
	count0, sum0 := memState(t, l, name)

	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = l.Admin(append([]string{"migrate", name, "--to", to.Name}, flags...)...)
		done <- err
	}()
	incoming := filepath.Join(to.DataDir, "containers", ".migrations", "in-"+inst.Metadata.UID)
	if len(flags) > 0 {
		// Post-copy: the few images come at once; the daemon's socket
		// says the restore is about to begin.
		incoming = filepath.Join(incoming, "final", "lazy-pages.socket")
	}
	eventually(t, 30*time.Second, "the images to stream into "+to.Name, func() bool {
		_, err := os.Stat(incoming)
		return err == nil
	})
	check(t, to.Crash())
	var err error
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("migrate did not return after its target died")
	}
	if err == nil || !strings.Contains(err.Error(), "runs on node "+from+" again") {
		t.Fatalf("migrate to a dying node: %v, %q", err, out)
	}
	t.Logf("migrate said: %v", err)
	back := instanceNamed(t, l, name)
	if back.Spec.Node != from || back.Status.ContainerID != inst.Status.ContainerID {
		t.Fatalf("after the failed move the instance is on %q with container %q, want %s and %s", back.Spec.Node, back.Status.ContainerID, from, inst.Status.ContainerID)
	}
	eventually(t, 20*time.Second, "the instance to answer on "+from, func() bool {
		_, err := l.Admin("exec", name, "--", "wget", "-qO-", "http://127.0.0.1/")
		return err == nil
	})
	count1, sum1 := memState(t, l, name)
	if sum1 != sum0 || count1 < count0 {
		t.Errorf("after the failed move: count %d sum %s, before: count %d sum %s", count1, sum1, count0, sum0)
	}
	if n := runningOf(t, l.Host(from), "mem"); n != 1 {
		t.Errorf("%d containers of mem run on %s, want 1", n, from)
	}
	out, _ = l.Admin("events")
	if !strings.Contains(out, "MigrationFailed") {
		t.Errorf("no MigrationFailed event:\n%s", out)
	}
}

// liveCountersYAML: five counters that a drain with --migrate moves live.
const liveCountersYAML = `kind: Service
name: counter
replicas: 5
template:
  image: demo/busybox:1
  runtime: runc
  migration: live
  command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"]
  resources: {cpu: 0.1, memory: 32Mi}
---
kind: Service
name: plain
replicas: 1
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.1, memory: 16Mi}
`

// TestDrainMigrate: berth node drain --migrate moves the five counters
// of a node live (same instances, counting on) and restarts the
// instance of the built-in executor elsewhere, saying so.
func TestDrainMigrate(t *testing.T) {
	l := startLANOf(t, 1, 2)
	_, err := l.Admin("node", "cordon", "n2")
	check(t, err)
	check(t, l.Apply(liveCountersYAML))
	before := waitHealthy(t, l, "counter", 5, 60*time.Second)
	plain := waitHealthy(t, l, "plain", 1, 60*time.Second)[0]
	_, err = l.Admin("node", "uncordon", "n2")
	check(t, err)
	for _, in := range before {
		eventually(t, 10*time.Second, in.Metadata.Name+" to count", func() bool { return len(counts(t, l, in.Metadata.Name)) >= 5 })
	}

	out, err := l.Admin("node", "drain", "n1", "--migrate", "--wait", "--timeout", "2m")
	check(t, err)
	t.Logf("%s", strings.TrimSpace(out))
	after := waitHealthy(t, l, "counter", 5, 30*time.Second, "n1")
	names := map[string]bool{}
	for _, in := range before {
		names[in.Metadata.Name] = true
	}
	for _, in := range after {
		if !names[in.Metadata.Name] {
			t.Errorf("instance %s on %s is new: the drain restarted a counter instead of moving it", in.Metadata.Name, in.Spec.Node)
			continue
		}
		if c := counts(t, l, in.Metadata.Name); len(c) == 0 || c[0] <= 1 {
			t.Errorf("moved counter %s logged %v: it started over", in.Metadata.Name, c[:min(len(c), 3)])
		}
	}
	moved := waitHealthy(t, l, "plain", 1, 30*time.Second, "n1")[0]
	if moved.Metadata.Name == plain.Metadata.Name {
		t.Errorf("the built-in instance %s was not replaced", plain.Metadata.Name)
	}
	if runningOf(t, l.Host("n1"), "counter") != 0 {
		t.Errorf("counters still run on n1")
	}
	ev, err := l.Admin("events")
	check(t, err)
	if !strings.Contains(ev, "migrating") || !strings.Contains(ev, "restarted, not migrated live") || strings.Count(ev, "Migrated") < 5 {
		t.Errorf("events do not tell the moves and the restart:\n%s", ev)
	}
}
