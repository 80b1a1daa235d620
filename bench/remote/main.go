// Command remote measures berth's remote operations: `berth exec
// INSTANCE true` from start to exit, on the local node (berth up, the CLI
// on its socket) and on a remote one (a client in the server's network
// namespace, the instance on an agent in another, over TLS and the
// node's tunnel), beside `podman exec` of the same image; and `berth logs
// -f` throughput to the remote client from a container printing as fast
// as it can, with the container's own write rate alone and while a
// reader that never reads follows it. It prints figures and asserts
// nothing. Run it as root. -against BIN runs the remote execs of another
// binary's CLI alternately with -berth's, against the same servers and
// agent, for an A/B in one invocation on a busy machine; -remote-only
// measures the remote exec alone.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// against and remoteOnly are the -against and -remote-only flags.
var (
	against    string
	remoteOnly bool
)

func main() {
	bin := flag.String("berth", "bin/berth", "the berth binary to measure")
	runs := flag.Int("n", 100, "exec runs per setup")
	lines := flag.Int("lines", 300000, "lines the logs container prints")
	flag.StringVar(&against, "against", "", "another berth binary whose CLI the remote exec runs alternate with -berth's, against the same servers and agent (an A/B in one invocation)")
	flag.BoolVar(&remoteOnly, "remote-only", false, "measure the remote exec only")
	flag.Parse()
	ctx, cancel := context.WithCancel(context.Background())
	go endOnSignals(cancel)
	err := bench(ctx, *bin, *runs, *lines)
	interrupted := ctx.Err() != nil
	cancel()
	switch {
	case interrupted:
		fmt.Fprintln(os.Stderr, "bench: interrupted; everything it made is taken down")
		os.Exit(130)
	case err != nil:
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// endOnSignals calls cancel on an interrupt (Ctrl-C), a SIGTERM, a hangup,
// or output piped to a reader that went away (| head: SIGPIPE, which
// would otherwise kill the bench at its next line, and again at every
// line after), so that the runs end and the deferred cleanup takes down
// the LAN, the servers, berth up and the containers. A second interrupt,
// SIGTERM or hangup ends the bench at once.
func endOnSignals(cancel func()) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
	ended := false
	for s := range sigs {
		if ended && s != syscall.SIGPIPE {
			fmt.Fprintln(os.Stderr, "bench: interrupted again; leaving without cleaning up")
			os.Exit(130)
		}
		ended = true
		cancel()
	}
}

// bench runs every measurement. Whatever it made (berth up, the LAN, the
// podman container, the work dir) is taken down by its defers on every
// way out: an error, ctx ending, or a panic.
func bench(ctx context.Context, bin string, runs, lines int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, rootfs, err := runtimetest.BusyboxWorkdir("berth-bench-remote-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	if !remoteOnly {
		local, err := localExec(ctx, bin, work, rootfs, runs)
		if err != nil {
			return fmt.Errorf("local: %w", err)
		}
		row(fmt.Sprintf("berth exec true, local node (berth up) (%d)", runs), local.wall)
		cpuRow("  CPU time", local)
	}

	l := lan.New(lan.Config{
		Berth: bin, Dir: filepath.Join(work, "lan"), Name: fmt.Sprintf("berth-bench-remote-%d", os.Getpid()),
		Servers: 1, Agents: 1, Context: ctx,
		Before: func(s *lan.Host) error {
			_, err := s.Run("image", "build", rootfs, "--tag", "bench/busybox:1")
			return err
		},
	})
	defer l.Close()
	if err := os.MkdirAll(filepath.Join(work, "lan"), 0o755); err != nil {
		return err
	}
	if err := l.Start(); err != nil {
		return err
	}
	remote, err := remoteExec(ctx, l, runs)
	if err != nil {
		return fmt.Errorf("remote: %w", err)
	}
	row(fmt.Sprintf("berth exec true, remote node (TLS, tunnel) (%d)", runs), remote.wall)
	cpuRow("  CPU time", remote)
	quotaRow(fmt.Sprintf("  the container's CPU (quota %s CPU)", sleeperCPU), remote, runs)
	if against != "" {
		row(fmt.Sprintf("  the same, CLI of %s (%d, alternating)", filepath.Base(against), runs), remote.againstWall)
		fmt.Printf("%-52s CLI p50 %s  p99 %s\n", "  CPU time", ms(pct(remote.againstCPU, 50)), ms(pct(remote.againstCPU, 99)))
		fmt.Printf("%-52s p50 %.2fx, p99 %.2fx\n", "  -berth / -against", ratio(pct(remote.wall, 50), pct(remote.againstWall, 50)), ratio(pct(remote.wall, 99), pct(remote.againstWall, 99)))
	}
	if remoteOnly {
		return nil
	}

	pod, err := podmanExec(ctx, work, rootfs, runs)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		fmt.Printf("%-52s not measured: %v\n", "podman exec true", err)
	} else {
		row(fmt.Sprintf("podman exec --runtime runc true (%d)", runs), pod)
		fmt.Printf("berth exec remote / podman exec: p50 %.2fx, p99 %.2fx\n\n", ratio(pct(remote.wall, 50), pct(pod, 50)), ratio(pct(remote.wall, 99), pct(pod, 99)))
	}

	return logsThroughput(ctx, l, lines)
}

// localExec times berth exec through berth up's socket.
func localExec(ctx context.Context, bin, work, rootfs string, runs int) (execFigures, error) {
	data := filepath.Join(work, "up")
	berth := func(args ...string) error {
		out, err := exec.CommandContext(ctx, bin, append([]string{"--data-dir", data}, args...)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("berth %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return nil
	}
	if err := berth("image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
		return execFigures{}, err
	}
	up := exec.Command(bin, "--data-dir", data, "up", "--no-network")
	up.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := up.Start(); err != nil {
		return execFigures{}, err
	}
	defer func() {
		_ = up.Process.Kill()
		_, _ = up.Process.Wait()
		out, _ := exec.Command(bin, "--data-dir", data, "container", "ps", "-a", "-q").Output()
		for _, id := range strings.Fields(string(out)) {
			_ = exec.Command(bin, "--data-dir", data, "container", "rm", "-f", id).Run()
		}
	}()
	if err := waitFor(ctx, 30*time.Second, func() bool { return berth("get", "nodes") == nil }); err != nil {
		return execFigures{}, err
	}
	if err := berth("run", "--name", "sleeper", "bench/busybox:1", "sleep", "1d"); err != nil {
		return execFigures{}, err
	}
	if err := waitFor(ctx, 30*time.Second, func() bool { return berth("exec", "sleeper", "true") == nil }); err != nil {
		return execFigures{}, err
	}
	pids := []int{up.Process.Pid}
	return measureExec(ctx, runs, pids, func() (time.Duration, error) {
		cmd := exec.CommandContext(ctx, bin, "--data-dir", data, "exec", "sleeper", "true")
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("berth exec: %w: %s", err, out)
		}
		return cmdCPU(cmd), nil
	})
}

// measureExec times exec runs and takes the CPU time of the processes
// pids (servers, agents) over them.
func measureExec(ctx context.Context, runs int, pids []int, f func() (time.Duration, error)) (execFigures, error) {
	var before time.Duration
	for _, p := range pids {
		before += procCPU(p)
	}
	wall, cpu, err := timeCPU(ctx, runs, f)
	if err != nil {
		return execFigures{}, err
	}
	var after time.Duration
	for _, p := range pids {
		after += procCPU(p)
	}
	return execFigures{wall: wall, cliCPU: cpu, nodeCPU: (after - before) / time.Duration(runs+2)}, nil
}

// sleeperCPU is the remote sleeper's CPU quota. It is a whole CPU so
// that, like the local sleeper and podman's container, which have no
// limit, the remote row times the exec and not the quota: each exec is
// charged about 2 ms to the container, and a 0.05-CPU one (5 ms per
// 100 ms period) made back-to-back execs wait out whole periods.
const sleeperCPU = "1"

func remoteExec(ctx context.Context, l *lan.LAN, runs int) (execFigures, error) {
	if err := l.Apply("kind: Service\nname: sleeper\nreplicas: 1\ntemplate:\n  image: bench/busybox:1\n  command: [sleep, 1d]\n  resources: {cpu: " + sleeperCPU + ", memory: 16Mi}\n"); err != nil {
		return execFigures{}, err
	}
	insts, err := l.WaitHealthy("sleeper", 1, time.Minute)
	if err != nil {
		return execFigures{}, err
	}
	name := insts[0].Metadata.Name
	pids := []int{l.Servers[0].Pid(), l.Agents[0].Pid()}
	cpid, cerr := containerPid(l.Agents[0], name)
	before, berr := readQuota(cpid)
	run := func(cli string) (time.Duration, error) {
		cmd := l.AdminCommand(ctx, "exec", name, "true")
		if cli != "" {
			// nsenter --net=NETNS BERTH ...: the same command line, another CLI.
			cmd.Args[2] = cli
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("berth exec %s true: %w: %s", name, err, out)
		}
		return cmdCPU(cmd), nil
	}
	// With -against, each run of the closure below is two execs, each
	// timed on its own.
	var ownWall, ownCPU, againstWall, againstCPU []time.Duration
	timed := func(cli string, wall, cpu *[]time.Duration) error {
		t0 := time.Now()
		c, err := run(cli)
		*wall, *cpu = append(*wall, time.Since(t0)), append(*cpu, c)
		return err
	}
	i := 0
	f, err := measureExec(ctx, runs, pids, func() (time.Duration, error) {
		i++
		if against == "" {
			return run("")
		}
		// Each goes first in every other pair: a run pays for what the
		// one before it left the server and agent to do.
		first, second := func() error { return timed("", &ownWall, &ownCPU) }, func() error { return timed(against, &againstWall, &againstCPU) }
		if i%2 == 0 {
			first, second = second, first
		}
		if err := first(); err != nil {
			return 0, err
		}
		return 0, second()
	})
	if len(againstWall) > 2 { // as timeCPU, without the two warm-up runs
		f.wall, f.cliCPU = ownWall[2:], ownCPU[2:]
		f.againstWall, f.againstCPU = againstWall[2:], againstCPU[2:]
		f.nodeCPU /= 2 // two execs a run
	}
	after, aerr := readQuota(cpid)
	if err := errors.Join(cerr, berr, aerr); err != nil {
		f.quotaErr = err
	} else {
		f.quota = after.sub(before)
	}
	return f, err
}

// containerPid is the host pid of the main container of the agent's
// instance name.
func containerPid(agent *lan.Host, name string) (int, error) {
	list, err := agent.Containers()
	if err != nil {
		return 0, err
	}
	for _, c := range list {
		if c.State == "running" && c.Labels["berth.instance"] == "default/"+name {
			return c.Pid, nil
		}
	}
	return 0, fmt.Errorf("no running container of instance %s on %s", name, agent.Name)
}

// quotaFigures are what a container's CPU cgroup counted: the CPU time
// charged to it, and the quota periods it was throttled in. An exec's
// process joins the container's cgroups, so what it costs there comes
// out of the container's CPU quota: a 0.05-CPU container would get 5 ms
// in every 100 ms period, and once they are spent an exec waits for the
// next period.
type quotaFigures struct {
	usage, throttledTime time.Duration
	periods, throttled   int64
}

func (a quotaFigures) sub(b quotaFigures) quotaFigures {
	return quotaFigures{usage: a.usage - b.usage, throttledTime: a.throttledTime - b.throttledTime,
		periods: a.periods - b.periods, throttled: a.throttled - b.throttled}
}

// readQuota reads the CPU cgroup of process pid from /proc/PID/cgroup:
// the v1 cpu and cpuacct hierarchies where they are, else cgroup v2's.
func readQuota(pid int) (quotaFigures, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return quotaFigures{}, err
	}
	var cpuDir, acctDir, v2Dir string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		ctrls := strings.Split(f[1], ",")
		switch {
		case f[1] == "":
			v2Dir = filepath.Join("/sys/fs/cgroup", f[2])
		case slices.Contains(ctrls, "cpu"):
			cpuDir = filepath.Join("/sys/fs/cgroup", f[1], f[2])
			if slices.Contains(ctrls, "cpuacct") {
				acctDir = cpuDir
			}
		case slices.Contains(ctrls, "cpuacct"):
			acctDir = filepath.Join("/sys/fs/cgroup", f[1], f[2])
		}
	}
	if cpuDir == "" {
		// cgroup v2: usage and throttling both in cpu.stat, in microseconds.
		st, err := cpuStat(v2Dir)
		return quotaFigures{usage: time.Duration(st["usage_usec"]) * time.Microsecond, periods: st["nr_periods"],
			throttled: st["nr_throttled"], throttledTime: time.Duration(st["throttled_usec"]) * time.Microsecond}, err
	}
	st, err := cpuStat(cpuDir)
	if err != nil {
		return quotaFigures{}, err
	}
	u, err := os.ReadFile(filepath.Join(acctDir, "cpuacct.usage"))
	if err != nil {
		return quotaFigures{}, err
	}
	usage, err := strconv.ParseInt(strings.TrimSpace(string(u)), 10, 64)
	return quotaFigures{usage: time.Duration(usage), periods: st["nr_periods"], throttled: st["nr_throttled"],
		throttledTime: time.Duration(st["throttled_time"])}, err
}

// cpuStat reads the "key value" lines of dir/cpu.stat.
func cpuStat(dir string) (map[string]int64, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return nil, err
	}
	m := map[string]int64{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, " "); ok {
			m[k], _ = strconv.ParseInt(v, 10, 64)
		}
	}
	return m, nil
}

func podmanExec(ctx context.Context, work, rootfs string, runs int) ([]time.Duration, error) {
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, errors.New("podman is not installed")
	}
	tarball := filepath.Join(work, "rootfs.tar")
	if out, err := exec.CommandContext(ctx, "tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("tar: %w: %s", err, out)
	}
	const image = "localhost/berth-bench-remote:1"
	if out, err := exec.CommandContext(ctx, "podman", "import", tarball, image).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("podman import: %w: %s", err, out)
	}
	defer func() { _ = exec.Command("podman", "rmi", "-f", image).Run() }()
	out, err := exec.CommandContext(ctx, "podman", "run", "-d", "--runtime", "runc", "--network", "none",
		"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", image, "sleep", "1d").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("podman run: %w: %s", err, out)
	}
	id := strings.TrimSpace(string(out))
	defer func() { _ = exec.Command("podman", "rm", "-f", "-t", "0", id).Run() }()
	return timeRuns(ctx, runs, func() error {
		if out, err := exec.CommandContext(ctx, "podman", "exec", id, "true").CombinedOutput(); err != nil {
			return fmt.Errorf("podman exec: %w: %s", err, out)
		}
		return nil
	})
}

// timeRuns times f runs times, after two warm-up runs, until ctx ends.
func timeRuns(ctx context.Context, runs int, f func() error) ([]time.Duration, error) {
	d, _, err := timeCPU(ctx, runs, func() (time.Duration, error) { return 0, f() })
	return d, err
}

// timeCPU is timeRuns for an f that also returns the CPU time its
// command took: each run's wall time, and each run's CPU time.
func timeCPU(ctx context.Context, runs int, f func() (time.Duration, error)) (wall, cpu []time.Duration, err error) {
	for i := range runs + 2 {
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		t0 := time.Now()
		c, err := f()
		if err != nil {
			return nil, nil, err
		}
		if i >= 2 {
			wall = append(wall, time.Since(t0))
			cpu = append(cpu, c)
		}
	}
	return wall, cpu, nil
}

// cmdCPU is the CPU time (user and system) a finished command took.
func cmdCPU(cmd *exec.Cmd) time.Duration {
	if cmd.ProcessState == nil {
		return 0
	}
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// procCPU is the CPU time process pid and its reaped children (the exec
// stages) have taken so far, from /proc/PID/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // after "pid (comm) ": state is f[0]
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		var n int64
		fmt.Sscan(f[i], &n)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}

// execFigures are one setup's exec measurements.
type execFigures struct {
	wall, cliCPU []time.Duration
	// nodeCPU is the CPU time the server(s) and agent took per exec,
	// with the exec stages they ran.
	nodeCPU time.Duration
	// quota is what the container's CPU cgroup counted over the runs
	// (remote only), or quotaErr why it could not be read.
	quota    quotaFigures
	quotaErr error
	// againstWall and againstCPU are the runs of -against's CLI (remote
	// only), each just before one of -berth's.
	againstWall, againstCPU []time.Duration
}

// logsThroughput has a container print lines as fast as it can, twice:
// once followed by the remote client, once also followed by a reader
// that never reads. It prints the rate the client got the lines at, and
// the container's own write rate (from the times the node stamped on
// its first and last lines) in each case.
func logsThroughput(parent context.Context, l *lan.LAN, lines int) error {
	spec := func(name string) string {
		return fmt.Sprintf(`kind: Service
name: %s
replicas: 1
template:
  image: bench/busybox:1
  command: ["sh", "-c", "sleep 3; yes 'a log line of about forty bytes, numbered' | head -n %d; echo END; exec sleep 1d"]
  resources: {cpu: 0.5, memory: 64Mi}
`, name, lines)
	}
	for _, run := range []struct {
		name    string
		stalled bool
	}{{"spew", false}, {"spew-stalled", true}} {
		if err := l.Apply(spec(run.name)); err != nil {
			return err
		}
		insts, err := l.WaitHealthy(run.name, 1, time.Minute)
		if err != nil {
			return err
		}
		name := insts[0].Metadata.Name
		ctx, cancel := context.WithCancel(parent)
		if run.stalled {
			// Its stdout is a pipe nobody reads: it fills, and then the
			// stream stalls all the way back to the agent.
			stall := l.AdminCommand(ctx, "logs", "-f", name)
			if _, err := stall.StdoutPipe(); err != nil {
				cancel()
				return err
			}
			if err := stall.Start(); err != nil {
				cancel()
				return err
			}
			defer func() { _ = stall.Wait() }()
		}
		got, first, last, took, err := follow(ctx, l, name)
		cancel()
		if err != nil {
			return err
		}
		what := "logs -f to a remote client"
		if run.stalled {
			what += ", a stalled reader beside it"
		}
		fmt.Printf("%-52s %d of %d lines in %v: %.0f lines/s\n", what, got, lines+1, took.Round(time.Millisecond), float64(got)/took.Seconds())
		fmt.Printf("%-52s %.0f lines/s (first to last line, by the node's stamps)\n", "  the container's own writes", float64(lines+1)/last.Sub(first).Seconds())
		if run.stalled {
			continue
		}
		// The writer above is slower than the stream: read its lines again,
		// all written already, for what the stream itself carries.
		ctx, cancel = context.WithCancel(parent)
		got, _, _, took, err = follow(ctx, l, name)
		cancel()
		if err != nil {
			return err
		}
		fmt.Printf("%-52s %d lines in %v: %.0f lines/s\n", "logs -f of lines already written, to a remote client", got, took.Round(time.Millisecond), float64(got)/took.Seconds())
	}
	return nil
}

// follow runs logs -f --timestamps and counts lines until END, returning
// the count, the stamps of the first and last lines, and the time from
// the first line received to END.
func follow(ctx context.Context, l *lan.LAN, name string) (n int, first, last time.Time, took time.Duration, err error) {
	cmd := l.AdminCommand(ctx, "logs", "-f", "--timestamps", name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, first, last, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, first, last, 0, err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	sc := bufio.NewScanner(out)
	var t0 time.Time
	deadline := time.AfterFunc(2*time.Minute, func() { _ = cmd.Process.Kill() })
	defer deadline.Stop()
	for sc.Scan() {
		line := sc.Bytes()
		if n == 0 {
			t0 = time.Now()
			ts, _, _ := strings.Cut(string(line), " ")
			first, _ = time.Parse(time.RFC3339Nano, ts)
		}
		n++
		if strings.HasSuffix(string(line), " END") {
			last, _ = time.Parse(time.RFC3339Nano, strings.Fields(string(line))[0])
			return n, first, last, time.Since(t0), nil
		}
	}
	return n, first, last, time.Since(t0), fmt.Errorf("logs -f of %s ended after %d lines without END", name, n)
}

func waitFor(ctx context.Context, timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if err := ctx.Err(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return nil
}

// cpuRow prints the CPU time a run took: the CLI's own (p50, p99) and the
// server's and agent's per exec. On a shared machine wall times wander
// with the load; CPU times much less.
func cpuRow(what string, f execFigures) {
	fmt.Printf("%-52s CLI p50 %s  p99 %s; server and agent %s per exec\n", what, ms(pct(f.cliCPU, 50)), ms(pct(f.cliCPU, 99)), ms(f.nodeCPU))
}

// quotaRow prints what the execs cost the container's own CPU quota, and
// how often it throttled them.
func quotaRow(what string, f execFigures, runs int) {
	if f.quotaErr != nil {
		fmt.Printf("%-52s not read: %v\n", what, f.quotaErr)
		return
	}
	fmt.Printf("%-52s %s charged per exec; throttled in %d of %d periods, %s in all\n", what,
		ms(f.quota.usage/time.Duration(runs+2)), f.quota.throttled, f.quota.periods, ms(f.quota.throttledTime))
}

func row(what string, d []time.Duration) {
	fmt.Printf("%-52s p50 %s  p99 %s\n", what, ms(pct(d, 50)), ms(pct(d, 99)))
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
