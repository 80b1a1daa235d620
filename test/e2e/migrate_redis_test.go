package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

var (
	redisClientOnce sync.Once
	redisClientBin  string
	redisClientErr  error
)

// redisImage builds demo/redis:1 in e's data dir: busybox, the host's
// Redis (redis-server, redis-cli) and internal/testing/redisclient as
// /redisclient.
func (e *env) redisImage() {
	e.t.Helper()
	runtimetest.RequireRedis(e.t)
	redisClientOnce.Do(func() {
		dir, err := os.MkdirTemp("", "berth-redisclient-")
		if err != nil {
			redisClientErr = err
			return
		}
		redisClientBin = filepath.Join(dir, "redisclient")
		build := exec.Command("go", "build", "-o", redisClientBin, "../../internal/testing/redisclient")
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := build.CombinedOutput(); err != nil {
			redisClientErr = fmt.Errorf("build redisclient: %w: %s", err, out)
		}
	})
	check(e.t, redisClientErr)
	rootfs := e.t.TempDir()
	check(e.t, runtimetest.WriteRedisRootfs(rootfs))
	b, err := os.ReadFile(redisClientBin)
	check(e.t, err)
	check(e.t, os.WriteFile(filepath.Join(rootfs, "redisclient"), b, 0o755))
	e.ok("image", "build", rootfs, "--tag", "demo/redis:1")
}

// redisYAML: Redis behind a VIP, migrated live, nothing on disk.
const redisYAML = `kind: Service
name: redis
replicas: 1
template:
  image: demo/redis:1
  runtime: runc
  migration: live
  command: ["/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no",
            "--enable-debug-command", "local"]
  ports: [{name: redis, container: 6379}]
  health: {tcp: {port: 6379}, interval: 300ms, timeout: 1s, failures: 3}
  resources: {cpu: 0.5, memory: 384Mi}
`

// redisClientYAML GETs a key through the VIP every millisecond.
const redisClientYAML = `kind: Service
name: rclient
replicas: 1
template:
  image: demo/redis:1
  command: ["/redisclient", "-addr", "redis.default.berth:6379", "-key", "key:4242"]
  resources: {cpu: 0.2, memory: 32Mi}
`

// redisKeys and redisValueSize make 100 MB of keys.
const (
	redisKeys      = 100000
	redisValueSize = 1000
)

// redisCLI runs redis-cli in the instance's own container.
func redisCLI(t *testing.T, l *lan.LAN, inst string, args ...string) string {
	t.Helper()
	out, err := l.Admin(append([]string{"exec", inst, "--", "redis-cli"}, args...)...)
	check(t, err)
	return strings.TrimSpace(out)
}

// TestMigrateRedis: Redis holding 100 MB of keys moves to the other agent
// while a client GETs a key through the service's VIP every millisecond.
// Every key is there after (the same DBSIZE and DEBUG DIGEST of the
// whole data set); the client never gets a wrong or missing value, only
// a pause and a reconnect (established connections are closed at the
// dump); the instance never runs on both nodes.
func TestMigrateRedis(t *testing.T) { migrateRedis(t) }

// TestMigrateRedisPostCopy: the same move with --post-copy: Redis runs on
// the target before its 100 MB have come, and every key is there after,
// the client only paused; the memory followed (the answer says so).
func TestMigrateRedisPostCopy(t *testing.T) {
	m := migrateRedis(t, "--post-copy")
	if !m.PostCopy || m.Stages.PostCopy <= 0 {
		t.Errorf("migrate --post-copy: postCopy %v, the memory followed in %v", m.PostCopy, m.Stages.PostCopy)
	}
}

// executingOf counts h's running containers of owner's instances whose
// processes can run: not those held by a dump (stopped by ptrace), nor
// those killed whose first process only waits for its others to be
// reaped (PF_EXITING), as a post-copy's source is until CRIU lets go of
// them. The runtime counts those running until their shim sees them exit.
func executingOf(h *lan.Host, owner string) (int, error) {
	list, err := h.Containers()
	n := 0
	for _, c := range list {
		if c.State != "running" || !strings.HasPrefix(c.Labels["berth.instance"], "default/"+owner+"-") {
			continue
		}
		b, serr := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.Pid))
		if serr != nil {
			continue // gone
		}
		// After "(comm)": state, then ppid, pgrp, session, tty_nr, tpgid, flags.
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) < 7 {
			continue
		}
		const pfExiting = 0x4
		flags, _ := strconv.ParseUint(f[6], 10, 64)
		if f[0] == "t" || f[0] == "T" || f[0] == "Z" || flags&pfExiting != 0 {
			continue
		}
		n++
	}
	return n, err
}

// migrateRedis moves Redis with 100 MB of keys (berth migrate -o json
// with flags) and checks what TestMigrateRedis says, and that the marks
// of the answer place the client's pause: it was answered again only
// after the restore; it returns the answer.
func migrateRedis(t *testing.T, flags ...string) api.Migration {
	l := startLANWith(t, 1, 2, (*env).redisImage)
	check(t, l.Apply(redisYAML))
	inst := waitHealthy(t, l, "redis", 1, 60*time.Second)[0]
	name, from := inst.Metadata.Name, inst.Spec.Node
	to := otherNode(l, from)
	if got := redisCLI(t, l, name, "DEBUG", "POPULATE", strconv.Itoa(redisKeys), "key", strconv.Itoa(redisValueSize)); got != "OK" {
		t.Fatalf("DEBUG POPULATE: %q", got)
	}
	size0, digest0 := redisCLI(t, l, name, "DBSIZE"), redisCLI(t, l, name, "DEBUG", "DIGEST")
	if size0 != strconv.Itoa(redisKeys) {
		t.Fatalf("DBSIZE %s after filling, want %d", size0, redisKeys)
	}

	check(t, l.Apply(redisClientYAML))
	client := waitHealthy(t, l, "rclient", 1, 60*time.Second)[0]
	cexec := func(args ...string) string {
		out, err := l.Host(client.Spec.Node).Run(append([]string{"container", "exec", client.Status.ContainerID}, args...)...)
		check(t, err)
		return out
	}
	oksSince := func(since time.Time) int {
		n := 0
		for _, ln := range strings.Split(cexec("sh", "-c", "cat /tmp/poll 2>/dev/null; true"), "\n") {
			if f := strings.Fields(ln); len(f) >= 2 && f[0] == "OK" {
				if at, _ := strconv.ParseInt(f[1], 10, 64); at > since.UnixNano() {
					n++
				}
			}
		}
		return n
	}
	eventually(t, 30*time.Second, "GETs through the VIP", func() bool { return oksSince(time.Time{}) >= 50 })

	// Never on both: a target seen running, then the source seen running
	// after it, would be two at once (in that order, two reads cannot
	// straddle the move).
	var both atomic.Int32
	stopWatch := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stopWatch:
				return
			default:
			}
			onTo, err1 := executingOf(l.Host(to), "redis")
			onFrom, err2 := executingOf(l.Host(from), "redis")
			if err1 == nil && err2 == nil && onTo > 0 && onFrom > 0 {
				both.Add(1)
			}
		}
	}()
	out, err := l.Admin(append([]string{"migrate", name, "--to", to, "-o", "json"}, flags...)...)
	migrated := time.Now()
	close(stopWatch)
	<-watched
	check(t, err)
	t.Logf("%s", strings.TrimSpace(out))
	var m api.Migration
	check(t, json.Unmarshal([]byte(out), &m))
	if m.FrozenAt.IsZero() || !m.FrozenAt.Before(m.RestoredAt) || m.SwitchedAt.Before(m.RestoredAt) {
		t.Errorf("migrate -o json: frozen at %v, restored at %v, switched at %v: want them in that order", m.FrozenAt, m.RestoredAt, m.SwitchedAt)
	}
	if eager := len(flags) == 0; m.Direct != eager || (eager && m.Bytes < redisKeys*redisValueSize) {
		t.Errorf("migrate -o json: direct %v, %d bytes sent; want direct %v, and every key's bytes for an eager move", m.Direct, m.Bytes, eager)
	}
	if n := both.Load(); n > 0 {
		t.Errorf("redis ran on %s and %s at once (%d times seen)", from, to, n)
	}
	if moved := instanceNamed(t, l, name); moved.Spec.Node != to {
		t.Fatalf("after migrate the instance is on %s, want %s", moved.Spec.Node, to)
	}
	if size, digest := redisCLI(t, l, name, "DBSIZE"), redisCLI(t, l, name, "DEBUG", "DIGEST"); size != size0 || digest != digest0 {
		t.Errorf("after the move DBSIZE %s DIGEST %s, before %s %s", size, digest, size0, digest0)
	}
	eventually(t, 30*time.Second, "GETs through the VIP from the moved instance", func() bool { return oksSince(migrated) >= 50 })
	// The client is its container's process: it runs on while its lines are read.

	var prevOK, gap, gapEnd int64
	oks, errs := 0, 0
	for _, ln := range strings.Split(strings.TrimSpace(cexec("cat", "/tmp/poll")), "\n") {
		f := strings.Fields(ln)
		if len(f) < 2 {
			continue
		}
		at, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "OK":
			if prevOK != 0 && at-prevOK > gap {
				gap, gapEnd = at-prevOK, at
			}
			prevOK = at
			oks++
		case "ERR":
			if prevOK != 0 { // before the first answer, the VIP was not there yet
				errs++
			}
		default:
			t.Errorf("the client got a wrong or missing value: %q", ln)
		}
	}
	pause := time.Duration(gap)
	t.Logf("100 MB Redis %s -> %s: longest pause between GETs through the VIP %v (%d answers, %d failed requests before the reconnect)",
		from, to, pause.Round(time.Millisecond), oks, errs)
	// Bounded: the move's own time on a loaded machine, not a lost server.
	if pause > 30*time.Second {
		t.Errorf("the client waited %v between answers", pause)
	}
	if end := time.Unix(0, gapEnd); end.Before(m.RestoredAt) {
		t.Errorf("the client's longest pause ended at %v, before the restore at %v: the answer's marks do not place the downtime", end, m.RestoredAt)
	} else {
		t.Logf("the client answered again %v after the freeze, %v after the restore", end.Sub(m.FrozenAt).Round(time.Millisecond), end.Sub(m.RestoredAt).Round(time.Millisecond))
	}
	if n := runningOf(t, l.Host(from), "redis"); n != 0 {
		t.Errorf("%d redis containers still run on %s", n, from)
	}
	return m
}
