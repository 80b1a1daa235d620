// Command cluster measures berth's orchestration on one node: `berth run`
// to Running, self-heal after a container is killed, and the idle memory
// of `berth up`, beside `podman run -d` of the same image in the same
// invocation. It prints figures and asserts nothing.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/bench/internal/harness"
)

var (
	upArgs = flag.String("up-args", "", "extra flags for berth up, e.g. --no-network")
	upLog  = flag.String("up-log", "", "write berth up's output to this file")
	stages = flag.Bool("stages", false, "print when each API run's instance was first seen, bound and Running")
	userns = flag.Bool("userns", true, "time service apply to Running with userns: true too, run by run beside the plain one")
)

func main() {
	bin := harness.BerthFlag()
	runs := flag.Int("n", 100, "berth run measurements")
	heals := flag.Int("heals", 30, "self-heal measurements")
	peerRuns := flag.Int("podman", 20, "podman run measurements (0 to skip)")
	flag.Parse()
	harness.Exit(bench(*bin, *runs, *heals, *peerRuns))
}

// figures are what one invocation measures.
type figures struct {
	runs                         int
	cli, viaAPI, viaAPIUserNS    []time.Duration
	heal, pod                    []time.Duration
	podErr                       error
	idleRSS, busyRSS, idleRSSEnd float64
}

func bench(bin string, runs, heals, peerRuns int) error {
	ws, err := harness.NewWorkspace(bin, "berth-bench-cluster-")
	if err != nil {
		return err
	}
	defer ws.Close()
	bin, rootfs := ws.Bin, ws.Rootfs
	data := filepath.Join(ws.Work, "data")
	if _, err := harness.Berth(bin, data, "image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
		return err
	}
	o := harness.Options{Args: strings.Fields(*upArgs)}
	if *upLog != "" {
		f, err := os.Create(*upLog)
		if err != nil {
			return err
		}
		defer f.Close()
		o.Log = f
	}
	up, err := harness.Start(bin, data, o)
	if err != nil {
		return err
	}
	defer up.Stop()
	time.Sleep(time.Second) // let the node settle before its idle memory is read
	f := figures{runs: runs, idleRSS: rssMiB(up.Cmd.Process.Pid)}
	if err := measure(up, &f, heals); err != nil {
		return err
	}
	if peerRuns > 0 {
		f.pod, f.podErr = podmanRuns(rootfs, peerRuns)
	}
	report(&f)
	return nil
}

// measure times berth run through the CLI and service applies through
// the API (with userns, one of each in turn, so the machine's noise falls
// on both alike) to Running, then self-heals, reading berth up's memory
// busy and idle again.
func measure(up *harness.Up, f *figures, heals int) error {
	ctx, c := context.Background(), up.Client
	for i := range f.runs {
		t0 := time.Now()
		if _, err := up.Berth("run", "--name", fmt.Sprintf("cli-%d", i), "bench/busybox:1", "sleep", "3600"); err != nil {
			return err
		}
		f.cli = append(f.cli, time.Since(t0))
	}
	for i := range f.runs {
		d, err := apiRun(ctx, c, fmt.Sprintf("api-%d", i), false)
		if err != nil {
			return err
		}
		f.viaAPI = append(f.viaAPI, d)
		if !*userns {
			continue
		}
		if d, err = apiRun(ctx, c, fmt.Sprintf("uns-%d", i), true); err != nil {
			return err
		}
		f.viaAPIUserNS = append(f.viaAPIUserNS, d)
	}
	f.busyRSS = rssMiB(up.Cmd.Process.Pid)

	// Self-heal: kill -9 a container's main process, time until its instance runs again.
	for i := range heals {
		d, err := selfHeal(ctx, c, fmt.Sprintf("api-%d", i%f.runs))
		if err != nil {
			return err
		}
		f.heal = append(f.heal, d)
	}
	for i := range f.runs {
		_ = c.Delete(ctx, api.KindService, "default", fmt.Sprintf("cli-%d", i), 0)
		_ = c.Delete(ctx, api.KindService, "default", fmt.Sprintf("api-%d", i), 0)
		_ = c.Delete(ctx, api.KindService, "default", fmt.Sprintf("uns-%d", i), 0)
	}
	time.Sleep(3 * time.Second)
	f.idleRSSEnd = rssMiB(up.Cmd.Process.Pid)
	return nil
}

// report prints the figures.
func report(f *figures) {
	fmt.Printf("one node, %d runs of each; every figure from this invocation\n\n", f.runs)
	fmt.Printf("%-46s %9s %9s %9s\n", "", "p50", "p99", "max")
	row := func(name string, d []time.Duration) {
		fmt.Printf("%-46s %9s %9s %9s\n", name, harness.MS(harness.Pct(d, 50)), harness.MS(harness.Pct(d, 99)), harness.MS(slices.Max(d)))
	}
	row("berth run (CLI) to Running", f.cli)
	row("service apply (API) to Running", f.viaAPI)
	if len(f.viaAPIUserNS) > 0 {
		row("service apply (API), userns: true, to Running", f.viaAPIUserNS)
	}
	row(fmt.Sprintf("self-heal: kill -9 to Running again (%d)", len(f.heal)), f.heal)
	if f.podErr != nil {
		fmt.Printf("%-46s %s\n", "podman run -d", "not measured: "+f.podErr.Error())
	} else if len(f.pod) > 0 {
		row(fmt.Sprintf("podman run -d --runtime runc (%d)", len(f.pod)), f.pod)
		fmt.Printf("\nberth run (CLI) / podman run -d: p50 %.2fx, p99 %.2fx\n",
			harness.Ratio(harness.Pct(f.cli, 50), harness.Pct(f.pod, 50)), harness.Ratio(harness.Pct(f.cli, 99), harness.Pct(f.pod, 99)))
	}
	fmt.Printf("\nberth up RSS: idle %.1f MiB; with %d services running %.1f MiB; idle again %.1f MiB\n", f.idleRSS, 2*f.runs, f.busyRSS, f.idleRSSEnd)
	fmt.Println("goals: run to Running p99 <= 50 ms, self-heal <= 100 ms, idle RSS <= 80 MB")
}

func apiRun(ctx context.Context, c *client.Client, name string, userns bool) (time.Duration, error) {
	svc := api.RunService(name, "bench/busybox:1", []string{"sleep", "3600"})
	svc.Spec.Template.UserNS = userns
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// A watch from now is in step with the store at once; one from an older
	// revision would first be caught up by etcd's periodic sync.
	events, err := c.Instances().Watch(wctx, "default", 0)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if _, err := c.Services().Apply(ctx, svc); err != nil {
		return 0, err
	}
	var made, bound time.Duration
	for ev := range events {
		if ev.Err != nil {
			return 0, ev.Err
		}
		if ev.Object.Spec.Owner.Name != name {
			continue
		}
		if made == 0 {
			made = time.Since(t0)
		}
		if bound == 0 && ev.Object.Spec.Node != "" {
			bound = time.Since(t0)
		}
		if ev.Object.Status.Phase == api.PhaseRunning {
			d := time.Since(t0)
			if *stages {
				fmt.Printf("%s: seen %s bound %s running %s\n", name, harness.MS(made), harness.MS(bound), harness.MS(d))
			}
			return d, nil
		}
	}
	return 0, fmt.Errorf("service %s never ran", name)
}

func selfHeal(ctx context.Context, c *client.Client, name string) (time.Duration, error) {
	list, _, err := c.Instances().List(ctx, "default")
	if err != nil {
		return 0, err
	}
	var target *api.Instance
	for _, in := range list {
		if in.Spec.Owner.Name == name && in.Status.Phase == api.PhaseRunning {
			target = in
		}
	}
	if target == nil {
		return 0, fmt.Errorf("no running instance of %s", name)
	}
	pid, err := containerPid(target.Status.ContainerID)
	if err != nil {
		return 0, err
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	events, err := c.Instances().Watch(wctx, "default", 0)
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return 0, err
	}
	for ev := range events {
		if ev.Err != nil {
			return 0, ev.Err
		}
		in := ev.Object
		if in.Metadata.Name == target.Metadata.Name && in.Status.Phase == api.PhaseRunning && in.Status.Restarts > target.Status.Restarts {
			return time.Since(t0), nil
		}
	}
	return 0, fmt.Errorf("%s did not heal", name)
}

// containerPid finds the host pid of a container's main process from its
// shim's state file, by scanning the data dirs of this bench.
func containerPid(id string) (int, error) {
	matches, _ := filepath.Glob(filepath.Join(os.TempDir(), "berth-bench-cluster-*", "data", "containers", id, "state.json"))
	if len(matches) == 0 {
		return 0, fmt.Errorf("container %s: no state file", id)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.Index(s, `"pid":`)
	if i < 0 {
		return 0, fmt.Errorf("container %s: no pid in state", id)
	}
	rest := strings.TrimLeft(s[i+6:], " ")
	end := strings.IndexAny(rest, ",}")
	return strconv.Atoi(strings.TrimSpace(rest[:end]))
}

func podmanRuns(rootfs string, n int) ([]time.Duration, error) {
	if _, err := exec.LookPath("podman"); err != nil {
		return nil, errors.New("podman is not installed")
	}
	if err := harness.PodmanImport(rootfs, "localhost/berth-bench:1"); err != nil {
		return nil, err
	}
	var d []time.Duration
	var ids []string
	defer func() {
		if len(ids) > 0 {
			_ = exec.Command("podman", append([]string{"rm", "-f", "-t", "0"}, ids...)...).Run()
		}
		_ = exec.Command("podman", "rmi", "-f", "localhost/berth-bench:1").Run()
	}()
	for i := range n + 2 {
		t0 := time.Now()
		out, err := exec.Command("podman", slices.Concat([]string{"run", "-d", "--network", "none"}, harness.PodmanRunArgs,
			[]string{"localhost/berth-bench:1", "sleep", "3600"})...).CombinedOutput()
		el := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("podman run: %w: %s", err, strings.TrimSpace(string(out)))
		}
		ids = append(ids, strings.TrimSpace(string(out)))
		if i >= 2 {
			d = append(d, el)
		}
	}
	return d, nil
}

func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
