// Command migrate measures live migration (berth migrate) between two
// agents on a LAN of network namespaces: a busybox counter and Redis
// holding 100 MB of keys, each moved back and forth -n times. It prints
// the total migration time, the downtime berth reports (final dump to
// restored) and its stages, the bytes of images sent; for the counter
// the downtime its output shows (from the last number logged before the
// freeze to the next, logged by the restored container, which must be
// one more), and for Redis the longest pause between answers seen by a
// client GETting through its service's VIP every 1 ms, as a timeline from
// the freeze (the client's last answer, berth's own marks from the
// migration's answer, the client's first failure and first answer after),
// which says which part of the pause is whose. Beside it, in the
// same invocation, podman moves the same containers through a checkpoint
// file (`podman container checkpoint --export`, then `restore --import`,
// runc, the same CRIU): downtime from the start of the checkpoint to the
// end of the restore and, for the counter, as its output shows it, the
// container's removal between them excluded. It asserts nothing. Run it
// as root.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/bench/internal/harness"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

func main() {
	bin := harness.BerthFlag()
	runs := flag.Int("n", 3, "moves per workload")
	flag.BoolVar(&postCopy, "post-copy", false, "move with berth migrate --post-copy (the memory follows the restore)")
	only := flag.String("only", "", "move only this workload (counter or redis)")
	peers := flag.Bool("podman", true, "also move the same containers with podman")
	flag.Parse()
	harness.Exit(bench(*bin, *runs, *only, *peers))
}

const (
	counter = "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"
	// 100,000 keys of 1,000 bytes, made by the server itself.
	populate = "DEBUG POPULATE 100000 key 1000"
)

var redisArgs = []string{"/usr/bin/redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no", "--enable-debug-command", "local"}

// services are the workloads' services, by name.
var services = map[string]string{"counter": `kind: Service
name: counter
replicas: 1
template:
  image: bench/redis:1
  runtime: runc
  command: ["sh", "-c", "` + counter + `"]
  resources: {cpu: 0.1, memory: 32Mi}
`, "redis": `kind: Service
name: redis
replicas: 1
template:
  image: bench/redis:1
  runtime: runc
  command: ["` + strings.Join(redisArgs, `", "`) + `"]
  ports: [{name: redis, container: 6379}]
  health: {tcp: {port: 6379}, interval: 300ms, timeout: 1s, failures: 3}
  resources: {cpu: 0.5, memory: 384Mi}
`}

// client GETs a key through the VIP every 1 ms (internal/testing/redisclient).
const client = `kind: Service
name: client
replicas: 1
template:
  image: bench/redis:1
  command: ["/redisclient", "-addr", "redis.default.berth:6379", "-key", "key:4242"]
  resources: {cpu: 0.2, memory: 32Mi}
`

// postCopy moves the instances with --post-copy.
var postCopy bool

// workloads are the containers moved, in order; only names one.
func workloads(only string) []string {
	if only != "" {
		return []string{only}
	}
	return []string{"counter", "redis"}
}

func bench(bin string, runs int, only string, peers bool) error {
	if only != "" && only != "counter" && only != "redis" {
		return fmt.Errorf("-only %q: want counter or redis", only)
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "berth-bench-migrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	if err := runtimetest.WriteRedisRootfs(rootfs); err != nil {
		return err
	}
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "redisclient"), "./internal/testing/redisclient")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build redisclient: %w: %s", err, out)
	}
	if err := berthMoves(bin, work, rootfs, runs, workloads(only)); err != nil {
		return err
	}
	if !peers {
		return nil
	}
	return podmanMoves(work, rootfs, runs, workloads(only))
}

func berthMoves(bin, work, rootfs string, runs int, owners []string) error {
	l := lan.New(lan.Config{
		Berth: bin, Dir: work, Name: fmt.Sprintf("berth-bench-mig-%d", os.Getpid()),
		Servers: 1, Agents: 2, Verbose: os.Getenv("BENCH_LOGS") != "",
		Before: func(s *lan.Host) error {
			_, err := s.Run("image", "build", rootfs, "--tag", "bench/redis:1")
			return err
		},
	})
	defer l.Close()
	if err := l.Start(); err != nil {
		return err
	}
	for _, owner := range owners {
		if err := l.Apply(services[owner]); err != nil {
			return err
		}
	}
	for _, owner := range owners {
		if _, err := l.WaitHealthy(owner, 1, 2*time.Minute); err != nil {
			return err
		}
	}
	var client api.Instance
	if slices.Contains(owners, "redis") {
		var err error
		if client, err = redisClient(l); err != nil {
			return err
		}
	}
	fmt.Println("berth migrate: 1 server and 2 agents, each in its own network namespace; images stream node to node (through the server where they cannot)")
	if postCopy {
		fmt.Println("berth migrate --post-copy: the memory follows the restore, relayed through the server")
	}
	for _, owner := range owners {
		if err := moves(l, owner, client, runs); err != nil {
			return err
		}
	}
	if os.Getenv("BENCH_LOGS") != "" {
		// The agents' own account of each move's steps.
		l.Logs(func(f string, args ...any) {
			for _, ln := range strings.Split(fmt.Sprintf(f, args...), "\n") {
				if strings.Contains(ln, "migration") {
					fmt.Fprintln(os.Stderr, ln)
				}
			}
		})
	}
	return nil
}

// redisClient fills Redis with its keys and starts the client that GETs
// one through the VIP every 1 ms.
func redisClient(l *lan.LAN) (api.Instance, error) {
	insts, err := l.WaitHealthy("redis", 1, time.Minute)
	if err != nil {
		return api.Instance{}, err
	}
	if out, err := l.Admin(append([]string{"exec", insts[0].Metadata.Name, "--", "redis-cli"}, strings.Fields(populate)...)...); err != nil || strings.TrimSpace(out) != "OK" {
		return api.Instance{}, fmt.Errorf("redis-cli %s: %q %v", populate, out, err)
	}
	if err := l.Apply(client); err != nil {
		return api.Instance{}, err
	}
	clients, err := l.WaitHealthy("client", 1, time.Minute)
	if err != nil {
		return api.Instance{}, err
	}
	return clients[0], nil
}

var stageNames = []string{"prepare (before the freeze)", "dump", "transfer", "restore", "switch (store move)", "post-copy (after the restore)"}

// moves moves owner's instance back and forth runs times and prints the
// figures; for Redis, with the pause client saw. Long because each move
// gathers its stages, the client's pause and its timeline marks, and
// the figures are printed together once all moves are done.
func moves(l *lan.LAN, owner string, client api.Instance, runs int) error {
	var total, down, pause, seen []time.Duration
	cpus := make([][]time.Duration, 3) // source agent, server, target agent
	direct := 0
	stages := map[string][]time.Duration{}
	marks := make([][]time.Duration, len(timelineRows))
	why := ""
	var bytes int64
	for range runs {
		insts, err := l.WaitHealthy(owner, 1, time.Minute)
		if err != nil {
			return err
		}
		in := insts[0]
		to := "n1"
		if in.Spec.Node == "n1" {
			to = "n2"
		}
		// The counter's output before the freeze, read until the dump
		// stops it.
		var before <-chan logLines
		if owner == "counter" {
			before = follow(l.Host(in.Spec.Node), in.Status.ContainerID)
		}
		from := in.Spec.Node
		cpu0 := []time.Duration{cpuTime(l.Host(from).Pid()), cpuTime(l.Servers[0].Pid()), cpuTime(l.Host(to).Pid())}
		t0 := time.Now()
		args := []string{"migrate", in.Metadata.Name, "--to", to, "-o", "json"}
		if postCopy {
			args = append(args, "--post-copy")
		}
		out, err := l.Admin(args...)
		if err != nil {
			if os.Getenv("BENCH_LOGS") != "" {
				l.Logs(func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) })
			}
			return err
		}
		for i, pid := range []int{l.Host(from).Pid(), l.Servers[0].Pid(), l.Host(to).Pid()} {
			cpus[i] = append(cpus[i], cpuTime(pid)-cpu0[i])
		}
		var m api.Migration
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			return fmt.Errorf("migrate -o json: %w: %s", err, out)
		}
		total, down, bytes = append(total, m.Duration), append(down, m.Downtime), m.Bytes
		if m.Direct {
			direct++
		}
		st := m.Stages
		for i, d := range []time.Duration{st.Prepare, st.Dump, st.Transfer, st.Restore, st.Switch, st.PostCopy} {
			stages[stageNames[i]] = append(stages[stageNames[i]], d)
		}
		if before != nil {
			gap, err := counterGap(<-before, l.Host(to), in.Status.ContainerID)
			if err != nil {
				return err
			}
			seen = append(seen, gap)
		}
		if owner == "redis" {
			p, err := clientPause(l, client, t0, m.SwitchedAt)
			if err != nil {
				return err
			}
			pause = append(pause, p.length())
			if !m.FrozenAt.IsZero() {
				for i, d := range timeline(m, p) {
					if d != nil {
						marks[i] = append(marks[i], *d)
					}
				}
				why = p.why
			}
		}
	}
	what := map[string]string{"counter": "busybox counter", "redis": "100 MB Redis"}[owner]
	row(what+": migration time", total)
	if len(seen) > 0 {
		row(what+": downtime seen (last line before, first after)", seen)
	}
	row(what+": downtime (final dump to restored)", down)
	for _, k := range stageNames {
		row(what+":   "+k, stages[k])
	}
	for i, who := range []string{"source agent", "server", "target agent"} {
		row(what+": CPU time of the "+who+" (and the children it waited for)", cpus[i])
	}
	if len(pause) > 0 {
		row(what+": longest pause seen through the VIP", pause)
	}
	if len(marks[0]) > 0 {
		fmt.Println(what + ": timeline of that pause, from the freeze:")
		for i, k := range timelineRows {
			if len(marks[i]) > 0 {
				signedRow(what+":   "+k, marks[i])
			}
		}
		if why != "" {
			fmt.Printf("%-62s %s\n", what+":   (last move's first failure)", why)
		}
	}
	fmt.Printf("%-62s %.1f MiB (%d of %d moves node to node)\n", what+": images sent", float64(bytes)/(1<<20), direct, runs)
	return nil
}

// line is one number the counter printed, at the time its log took it.
type line struct {
	n  int
	at time.Time
}

type logLines struct {
	lines []line
	err   error
}

// follow reads container id's log on h, with times, until the container
// stops.
func follow(h *lan.Host, id string) <-chan logLines {
	ch := make(chan logLines, 1)
	go func() {
		out, err := h.Run("container", "logs", "-f", "-t", id)
		ch <- logLines{parseLines(out), err}
	}()
	return ch
}

// parseLines reads "TIME N" lines (berth logs -t, podman logs -t).
func parseLines(out string) []line {
	var ls []line
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 2 {
			continue
		}
		at, err1 := time.Parse(time.RFC3339Nano, f[0])
		n, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			ls = append(ls, line{n, at})
		}
	}
	return ls
}

// counterGap is the downtime the counter's output shows: from the last
// number printed before the move (before) to the next one, printed by the
// container restored on h. That the next is one more than the last says
// the count went on where it was.
func counterGap(before logLines, h *lan.Host, id string) (time.Duration, error) {
	if len(before.lines) == 0 {
		return 0, fmt.Errorf("counter %s: no output before the move (%v)", id, before.err)
	}
	last := before.lines[len(before.lines)-1]
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := h.Run("container", "logs", "-t", id)
		if err != nil {
			return 0, err
		}
		if after := parseLines(out); len(after) > 0 {
			return nextGap(last, after)
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("counter %s: no output on %s in 30 s after the move", id, h.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nextGap is the time from last to the number after it in after, which
// must be there: a count that went back to 1 was not restored.
func nextGap(last line, after []line) (time.Duration, error) {
	for _, l := range after {
		if l.n == last.n+1 {
			return l.at.Sub(last.at), nil
		}
	}
	return 0, fmt.Errorf("counter: after the move it printed %d.., not %d: the count did not go on", after[0].n, last.n+1)
}

// pauseSeen is the longest pause between two answers the client saw
// after a move began: the answers before and after it, and the first
// failed request between them (zero when none failed) and why.
type pauseSeen struct {
	last, next, failed time.Time
	why                string
}

func (p pauseSeen) length() time.Duration { return p.next.Sub(p.last) }

// clientPause waits for the client's answers to come back after a move
// begun at since and over at settled (the switch), and returns the
// longest pause between two answers since. The answers counted are those
// after settled: a client slow to come back (a loaded host) would
// otherwise be read before its pause has ended.
func clientPause(l *lan.LAN, client api.Instance, since, settled time.Time) (pauseSeen, error) {
	host := l.Host(client.Spec.Node)
	deadline := time.Now().Add(time.Minute)
	for {
		out, err := host.Run("container", "exec", client.Status.ContainerID, "cat", "/tmp/poll")
		if err != nil {
			return pauseSeen{}, err
		}
		var p, cur pauseSeen
		after := 0
		for _, ln := range strings.Split(out, "\n") {
			f := strings.SplitN(ln, " ", 3)
			if len(f) < 2 {
				continue
			}
			ns, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				continue
			}
			at := time.Unix(0, ns)
			if f[0] != "OK" {
				if cur.failed.IsZero() && len(f) == 3 {
					cur.failed, cur.why = at, f[2]
				}
				continue
			}
			if !at.Before(since) && !cur.last.IsZero() {
				if cur.next = at; cur.length() > p.length() {
					p = cur
				}
				if at.After(settled) {
					after++
				}
			}
			cur = pauseSeen{last: at}
		}
		if after >= 100 {
			return p, nil
		}
		if time.Now().After(deadline) {
			return pauseSeen{}, fmt.Errorf("the client got %d answers in the minute after the move", after)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// timeline is one move as the client saw it beside berth's own marks,
// each from the freeze (negative: before it).
var timelineRows = []string{
	"client's last answer",
	"frozen (final dump begins)",
	"dump ended",
	"images received",
	"restored on the target",
	"switched (the VIP sends to the target)",
	"client's first failed request",
	"client's first answer after",
}

// timeline places the marks of move m and pause p in timelineRows' order;
// a mark that did not happen (no request failed) is nil.
func timeline(m api.Migration, p pauseSeen) []*time.Duration {
	f := m.FrozenAt
	at := func(d time.Duration) *time.Duration { return &d }
	var failed *time.Duration
	if !p.failed.IsZero() {
		failed = at(p.failed.Sub(f))
	}
	return []*time.Duration{at(p.last.Sub(f)), at(0), at(m.Stages.Dump), at(m.Stages.Dump + m.Stages.Transfer),
		at(m.RestoredAt.Sub(f)), at(m.SwitchedAt.Sub(f)), failed, at(p.next.Sub(f))}
}

// podmanMoves moves the same two containers with podman's checkpoint
// export and import.
func podmanMoves(work, rootfs string, runs int, owners []string) error {
	if _, err := exec.LookPath("podman"); err != nil {
		fmt.Println("podman: not installed, skipped")
		return nil
	}
	name := fmt.Sprintf("bench-mig-%d", os.Getpid())
	img := "localhost/" + name + ":1"
	if err := run("sh", "-c", fmt.Sprintf("tar -C %s -c . | podman import -q - %s >/dev/null", rootfs, img)); err != nil {
		return err
	}
	defer func() { _ = run("podman", "rmi", "-f", img) }()
	file := filepath.Join(work, "podman-ckpt.tar")
	fmt.Println("podman container checkpoint --export + restore --import (runc), the same containers")
	for _, owner := range owners {
		w := map[string]struct {
			what string
			args []string
		}{
			"counter": {"busybox counter", []string{"sh", "-c", counter}},
			"redis":   {"100 MB Redis", redisArgs},
		}[owner]
		var down, seen []time.Duration
		var bytes int64
		for range runs {
			d, gap, err := podmanMove(name, img, file, w.args, owner == "redis")
			if fi, serr := os.Stat(file); serr == nil {
				bytes = fi.Size()
			}
			_ = run("podman", "rm", "-f", "-t", "0", name)
			if err != nil {
				// A figure for berth is still a figure: say why podman has none.
				fmt.Println("podman: no figure:", err)
				return nil
			}
			down = append(down, d)
			if owner == "counter" {
				seen = append(seen, gap)
			}
		}
		if len(seen) > 0 {
			row(w.what+": podman downtime seen (last line before, first after)", seen)
		}
		row(w.what+": podman downtime (checkpoint to restored)", down)
		fmt.Printf("%-62s %.1f MiB\n", w.what+": podman checkpoint file", float64(bytes)/(1<<20))
	}
	return nil
}

// podmanMove runs a container, checkpoints it to file and restores it
// from there. It returns the downtime from the start of the checkpoint
// to the end of the restore and, for the counter, the time from its last
// line before to the next after; both less the container's removal
// between them, which a move to another host would not need.
func podmanMove(name, img, file string, args []string, fill bool) (down, gap time.Duration, err error) {
	// podman's default rlimits can exceed what this process may
	// grant: ask for small ones, below any hard limit.
	if err := run("podman", append([]string{"--runtime", "runc", "run", "-d", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", "--name", name, img}, args...)...); err != nil {
		return 0, 0, err
	}
	if fill {
		if err := waitRun(30*time.Second, "podman", "exec", name, "redis-cli", "PING"); err != nil {
			return 0, 0, err
		}
		if err := run("podman", append([]string{"exec", name, "redis-cli"}, strings.Fields(populate)...)...); err != nil {
			return 0, 0, err
		}
	}
	// Let it run, as berth's instances do before their moves; a
	// checkpoint right after the start took podman seconds more.
	time.Sleep(time.Second)
	t0 := time.Now()
	if err := run("podman", "--runtime", "runc", "container", "checkpoint", "--export", file, name); err != nil {
		return 0, 0, err
	}
	dump := time.Since(t0)
	var last line
	if !fill {
		out, err := output("podman", "logs", "-t", name)
		ls := parseLines(out)
		if err != nil || len(ls) == 0 {
			return 0, 0, fmt.Errorf("podman logs %s before the restore: no lines (%v)", name, err)
		}
		last = ls[len(ls)-1]
	}
	t1 := time.Now()
	if err := run("podman", "rm", name); err != nil {
		return 0, 0, err
	}
	removal := time.Since(t1)
	t2 := time.Now()
	if err := run("podman", "--runtime", "runc", "container", "restore", "--import", file); err != nil {
		return 0, 0, err
	}
	down = dump + time.Since(t2)
	if fill {
		return down, 0, nil
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := output("podman", "logs", "-t", name)
		if err != nil {
			return 0, 0, err
		}
		if g, err := nextGap(last, parseLines(out)); err == nil {
			return down, g - removal, nil
		} else if time.Now().After(deadline) {
			return 0, 0, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitRun runs the command until it succeeds, for up to timeout.
func waitRun(timeout time.Duration, name string, args ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		err := run(name, args...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// output runs the command and returns its stdout.
func output(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func row(what string, ds []time.Duration) {
	slices.Sort(ds)
	fmt.Printf("%-62s median %6.0f ms  min %6.0f ms  max %6.0f ms  (%d runs)\n", what,
		ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
}

// signedRow is row for times that may fall before zero.
func signedRow(what string, ds []time.Duration) {
	slices.Sort(ds)
	fmt.Printf("%-62s median %+6.0f ms  min %+6.0f ms  max %+6.0f ms  (%d runs)\n", what, ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
}

// cpuTime is the CPU time process pid and the children it waited for
// have used, user and system (/proc/PID/stat), 0 when it cannot be read.
func cpuTime(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The fields after the command's closing parenthesis, from the state (3rd).
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 15 {
		return 0
	}
	var ticks int64
	for _, v := range f[11:15] { // utime, stime, cutime, cstime
		n, _ := strconv.ParseInt(v, 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
