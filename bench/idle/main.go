// Command idle measures the idle CPU of `berth up` running -n instances
// with no health probes, beside Docker Swarm's daemons (dockerd and
// containerd) running as many replicas of the same image in the same
// invocation. Each side runs in a network namespace of its own (made
// here), one after the other, and is measured over -window once settled.
// Swarm runs as FIELD-NOTES describes: Debian's docker.io with the cgroupfs
// driver, and dnsrr endpoint mode (this kernel has no IPVS). It prints
// figures and asserts nothing. Run it as root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/bench/internal/harness"
)

func main() {
	bin := harness.BerthFlag()
	n := flag.Int("n", 200, "instances (and Swarm replicas) to run")
	window := flag.Duration("window", 30*time.Second, "how long idle CPU is measured")
	settle := flag.Duration("settle", 10*time.Second, "how long to wait once all run, before measuring")
	swarm := flag.Bool("swarm", true, "measure Docker Swarm too (needs dockerd: scripts/deps.sh bench)")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write berth up's CPU profile over the window to this file (go tool pprof reads it)")
	flag.Parse()
	harness.Exit(bench(*bin, *n, *window, *settle, *swarm))
}

// usage is the CPU a set of processes used over a window.
type usage struct {
	what  string
	procs int
	cpu   float64 // percent of one core
	rss   float64 // MiB, at the end
}

func bench(bin string, n int, window, settle time.Duration, swarm bool) error {
	ws, err := harness.NewWorkspace(bin, "berth-bench-idle-")
	if err != nil {
		return err
	}
	defer ws.Close()
	bin, work, rootfs := ws.Bin, ws.Work, ws.Rootfs
	var rows []usage
	b, err := berthIdle(bin, work, rootfs, n, window, settle)
	if err != nil {
		return fmt.Errorf("berth: %w", err)
	}
	rows = append(rows, b...)
	var swarmErr error
	if swarm {
		var s []usage
		s, swarmErr = swarmIdle(work, rootfs, n, window, settle)
		rows = append(rows, s...)
	}

	fmt.Printf("idle CPU with %d instances running sleep, no probes; %v window after %v settled\n\n", n, window, settle)
	// CPU seconds over the window too: on a shared machine the share of a
	// core moves with the load, the seconds are what each side spent.
	fmt.Printf("%-44s %6s %10s %10s %10s\n", "", "procs", "CPU %core", "CPU s", "RSS MiB")
	for _, r := range rows {
		fmt.Printf("%-44s %6d %10.2f %10.2f %10.1f\n", r.what, r.procs, r.cpu, r.cpu/100*window.Seconds(), r.rss)
	}
	switch {
	case !swarm:
		fmt.Println("\nDocker Swarm: not measured (-swarm=false)")
	case swarmErr != nil:
		fmt.Println("\nDocker Swarm: not measured:", swarmErr)
	default:
		fmt.Printf("\nberth up / (dockerd + containerd): %.2fx; with shims on both sides: %.2fx\n",
			rows[0].cpu/nonzero(rows[2].cpu), rows[1].cpu/nonzero(rows[3].cpu))
	}
	fmt.Println("goal: berth up idles at or below Docker Swarm's daemons")
	return nil
}

// cpuProfile is where berth up's CPU profile over the window goes, if set.
var cpuProfile string

// profile fetches berth up's CPU profile over window from its socket's
// /debug/pprof into cpuProfile; the profile's own cost is in the window.
func profile(data string, window time.Duration) error {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", filepath.Join(data, "berth.sock"))
	}}}
	resp, err := hc.Get(fmt.Sprintf("http://berth/debug/pprof/profile?seconds=%d", int(window.Seconds())))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(cpuProfile)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func nonzero(f float64) float64 { return max(f, 0.001) }

// berthIdle runs berth up with n instances and measures it, and it with its shims.
func berthIdle(bin, work, rootfs string, n int, window, settle time.Duration) ([]usage, error) {
	data := filepath.Join(work, "berth")
	if _, err := harness.Berth(bin, data, "image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
		return nil, err
	}
	up, err := harness.Start(bin, data, harness.Options{Netns: netnsName("berth")})
	if err != nil {
		return nil, err
	}
	defer func() {
		up.Stop()
		unmountUnder(data)
	}()
	ctx, c := context.Background(), up.Client
	svc := api.RunService("idle", "bench/busybox:1", []string{"sleep", "1d"})
	svc.Spec.Replicas = n
	if _, _, err := c.Apply(ctx, svc); err != nil {
		return nil, err
	}
	t0 := time.Now()
	err = until(10*time.Minute, fmt.Sprintf("%d instances Running", n), func() bool {
		insts, _, err := c.Instances().List(ctx, "default")
		running := 0
		for _, in := range insts {
			if in.Status.Phase == api.PhaseRunning {
				running++
			}
		}
		return err == nil && running == n
	})
	if err != nil {
		return nil, err
	}
	fmt.Printf("berth: %d instances Running in %v\n", n, time.Since(t0).Round(time.Millisecond))
	time.Sleep(settle)
	self := []int{up.Cmd.Process.Pid}
	all := append(self, childrenOf(up.Cmd.Process.Pid)...)
	profiled := make(chan error, 1)
	if cpuProfile != "" {
		go func() { profiled <- profile(data, window) }()
	}
	got := measure(window, self, all)
	if cpuProfile != "" {
		if err := <-profiled; err != nil {
			return nil, fmt.Errorf("cpu profile: %w", err)
		}
		fmt.Println("berth up's CPU profile:", cpuProfile)
	}
	return []usage{
		{what: "berth up", procs: 1, cpu: got[0], rss: rssMiB(self)},
		{what: "berth up + its container shims", procs: len(all), cpu: got[1], rss: rssMiB(all)},
	}, nil
}

// swarmIdle runs a one-node Swarm with n replicas and measures dockerd
// and containerd, and them with their shims.
//
// Long because it is the peer's whole setup and measurement (dockerd in a
// namespace of its own, swarm, the services, the idle window), kept beside
// berthIdle so the two read alike.
func swarmIdle(work, rootfs string, n int, window, settle time.Duration) ([]usage, error) {
	for _, b := range []string{"dockerd", "docker", "containerd"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s is not installed (scripts/deps.sh bench installs docker.io)", b)
		}
	}
	dir := filepath.Join(work, "docker")
	for _, d := range []string{"data", "exec"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			return nil, err
		}
	}
	ns, err := makeNetns("docker")
	if err != nil {
		return nil, err
	}
	defer deleteNetns(ns)
	// Swarm wants an address that is not loopback to advertise: a veth
	// pair (no dummy module on every kernel) with a documentation
	// address, both ends in the namespace made here.
	for _, args := range [][]string{
		{"-n", ns, "link", "add", "d0", "type", "veth", "peer", "name", "d1"},
		{"-n", ns, "addr", "add", "192.0.2.1/24", "dev", "d0"},
		{"-n", ns, "link", "set", "d0", "up"},
		{"-n", ns, "link", "set", "d1", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	sock := "unix://" + filepath.Join(dir, "docker.sock")
	cgroupParent := fmt.Sprintf("/berth-bench-docker-%d", os.Getpid())
	log, err := os.Create(filepath.Join(work, "dockerd.log"))
	if err != nil {
		return nil, err
	}
	defer log.Close()
	d := exec.Command("nsenter", "--net=/run/netns/"+ns, "dockerd",
		"--data-root", filepath.Join(dir, "data"), "--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"), "-H", sock,
		"--exec-opt", "native.cgroupdriver=cgroupfs", "--cgroup-parent", cgroupParent)
	d.Stdout, d.Stderr = log, log
	d.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := d.Start(); err != nil {
		return nil, err
	}
	docker := func(args ...string) (string, error) {
		out, err := exec.Command("docker", append([]string{"-H", sock}, args...)...).CombinedOutput()
		if err != nil {
			return string(out), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	defer func() {
		_, _ = docker("service", "rm", "idle")
		_ = until(5*time.Minute, "swarm containers to go", func() bool {
			out, err := docker("ps", "-aq")
			return err == nil && strings.TrimSpace(out) == ""
		})
		_, _ = docker("swarm", "leave", "--force")
		_ = d.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _, _ = d.Process.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = d.Process.Kill()
			<-done
		}
		unmountUnder(dir)
		removeCgroups(cgroupParent)
	}()
	if err := until(60*time.Second, "dockerd to answer", func() bool { _, err := docker("info"); return err == nil }); err != nil {
		return nil, fmt.Errorf("%w (log in %s)", err, log.Name())
	}
	if _, err := docker("swarm", "init", "--advertise-addr", "192.0.2.1"); err != nil {
		return nil, err
	}
	tar := exec.Command("tar", "-C", rootfs, "-c", ".")
	imp := exec.Command("docker", "-H", sock, "import", "-", "bench/busybox:1")
	imp.Stdin, err = tar.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := tar.Start(); err != nil {
		return nil, err
	}
	if out, err := imp.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("docker import: %w: %s", err, out)
	}
	_ = tar.Wait()
	t0 := time.Now()
	if _, err := docker("service", "create", "--detach", "--name", "idle", "--replicas", strconv.Itoa(n),
		"--endpoint-mode", "dnsrr", "--no-resolve-image", "bench/busybox:1", "sleep", "1d"); err != nil {
		return nil, err
	}
	want := fmt.Sprintf("%d/%d", n, n)
	if err := until(20*time.Minute, "swarm replicas "+want, func() bool {
		out, err := docker("service", "ls", "--filter", "name=idle", "--format", "{{.Replicas}}")
		return err == nil && strings.TrimSpace(out) == want
	}); err != nil {
		return nil, err
	}
	fmt.Printf("swarm: %d replicas running in %v\n", n, time.Since(t0).Round(time.Millisecond))
	time.Sleep(settle)
	// nsenter execs dockerd: the pid is dockerd's own; containerd is its child.
	daemons := append([]int{d.Process.Pid}, childrenOf(d.Process.Pid)...)
	all := append(daemons, shimsOf(filepath.Join(dir, "exec"))...)
	got := measure(window, daemons, all)
	return []usage{
		{what: "dockerd + containerd (swarm)", procs: len(daemons), cpu: got[0], rss: rssMiB(daemons)},
		{what: "dockerd + containerd + container shims", procs: len(all), cpu: got[1], rss: rssMiB(all)},
	}, nil
}

// measure returns, for each set of pids, the CPU it used over window in
// percent of one core.
func measure(window time.Duration, sets ...[]int) []float64 {
	before := make([]float64, len(sets))
	for i, s := range sets {
		before[i] = cpuSeconds(s)
	}
	t0 := time.Now()
	time.Sleep(window)
	el := time.Since(t0).Seconds()
	out := make([]float64, len(sets))
	for i, s := range sets {
		out[i] = (cpuSeconds(s) - before[i]) / el * 100
	}
	return out
}

// clkTck is USER_HZ, the unit of /proc/PID/stat times on Linux.
const clkTck = 100

// cpuSeconds sums the user and system time of pids (all their threads).
func cpuSeconds(pids []int) float64 {
	var ticks uint64
	for _, pid := range pids {
		f := statFields(pid)
		if len(f) < 15 {
			continue
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		s, _ := strconv.ParseUint(f[12], 10, 64)
		ticks += u + s
	}
	return float64(ticks) / clkTck
}

// statFields are the fields of /proc/PID/stat after the command name
// (field 3, the state, first).
func statFields(pid int) []string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return nil
	}
	return strings.Fields(s[i+1:])
}

// processes lists the processes for which match holds.
func processes(match func(pid int) bool) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if p, err := strconv.Atoi(e.Name()); err == nil && match(p) {
			out = append(out, p)
		}
	}
	return out
}

// childrenOf lists the processes whose parent is pid.
func childrenOf(pid int) []int {
	return processes(func(p int) bool {
		f := statFields(p)
		return len(f) > 1 && f[1] == strconv.Itoa(pid)
	})
}

// shimsOf lists the containerd shims of the containerd whose state is under execRoot.
func shimsOf(execRoot string) []int {
	return processes(func(p int) bool {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		cmd := strings.ReplaceAll(string(b), "\x00", " ")
		return strings.Contains(cmd, "containerd-shim") && strings.Contains(cmd, execRoot)
	})
}

func rssMiB(pids []int) float64 {
	var total float64
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
				total += kb / 1024
			}
		}
	}
	return total
}

func until(timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out waiting for " + what)
		}
		time.Sleep(200 * time.Millisecond)
	}
	return nil
}

// netnsName names the network namespace of one side of the bench.
func netnsName(side string) string { return fmt.Sprintf("berth-bench-idle-%s-%d", side, os.Getpid()) }

func makeNetns(side string) (string, error) {
	name := netnsName(side)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %w: %s", name, err, out)
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		deleteNetns(name)
		return "", fmt.Errorf("loopback up in %s: %w: %s", name, err, out)
	}
	return name, nil
}

func deleteNetns(name string) { _ = exec.Command("ip", "netns", "del", name).Run() }

// unmountUnder detaches every mount below dir (pinned namespaces, overlays).
func unmountUnder(dir string) {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		f := strings.Fields(lines[i])
		if len(f) > 4 && strings.HasPrefix(f[4], dir+"/") {
			_ = syscall.Unmount(f[4], syscall.MNT_DETACH)
		}
	}
}

// removeCgroups removes the cgroup parent the Swarm's containers used, in
// every hierarchy (children first); they are empty once the containers are.
func removeCgroups(parent string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	roots = append(roots, "/sys/fs/cgroup")
	for _, r := range roots {
		dir := filepath.Join(r, parent)
		var dirs []string
		_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			_ = os.Remove(dirs[i])
		}
	}
}
