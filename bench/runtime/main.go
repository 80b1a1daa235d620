// Command runtime measures container start-to-exit latency of /bin/true:
// berth's built-in executor beside runc and crun on the same rootfs, in one
// invocation, with ratios. It prints figures and asserts nothing.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func main() {
	n := flag.Int("n", 50, "runs per executor")
	views := flag.String("views", "", "comma-separated views of berth's binary to compare for the built-in executor (direct, overlay, memfd); default: berth's own choice")
	berth := flag.String("berth", "", "berth binary to run the shims from (default: this benchmark's own binary)")
	executors := flag.String("executors", "berth,runc,crun", "comma-separated executors to time")
	peers := flag.Bool("peers", true, "time runc and crun run directly too")
	userns := flag.Bool("userns", true, "time each executor with userns: true too, run by run beside it without")
	loop := flag.String("peer-loop", "", "internal: time runs of this OCI runtime and print them as JSON")
	bundle := flag.String("bundle", "", "internal: bundle directory for -peer-loop")
	state := flag.String("state", "", "internal: state directory for -peer-loop")
	flag.Parse()
	if *loop != "" {
		d, err := peerLoop(*loop, *bundle, *state, *n)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_ = json.NewEncoder(os.Stdout).Encode(d)
		return
	}
	if err := run(*n, *views, *berth, strings.Split(*executors, ","), *peers, *userns); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type result struct {
	name string
	d    []time.Duration
}

// variant is one way berth starts the container: a view of its binary
// (a runtime each) and with or without a user namespace.
type variant struct {
	r      *runtime.Runtime
	view   string
	userns bool
}

func run(n int, views, berth string, executors []string, peers, userns bool) error {
	work, rootfs, err := runtimetest.BusyboxWorkdir("berth-bench-runtime-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	// With userns an OCI runtime reaches the bundles as an unprivileged id.
	if err := os.Chmod(work, 0o711); err != nil {
		return err
	}
	var opts []runtime.Option
	if berth != "" {
		opts = append(opts, runtime.WithBinary(berth))
	}
	fmt.Printf("start-to-exit of /bin/true in a fresh container, %d runs each (after 3 warm-up runs)\n\n", n)
	var results []result
	for _, ex := range executors {
		res, err := executorRuns(ex, views, userns, work, rootfs, n, opts)
		if err != nil {
			return err
		}
		results = append(results, res...)
	}
	if views != "" {
		fmt.Println()
	}
	if peers {
		for _, peer := range []string{"runc", "crun"} {
			d, err := peerRuns(work, rootfs, peer, n)
			if err != nil {
				return fmt.Errorf("%s: %w", peer, err)
			}
			results = append(results, result{peer + " run (direct)", d})
		}
	}
	report(results, peers, userns)
	return nil
}

// executorRuns times berth's starts with executor ex: with each view of
// the binary (the built-in executor's), and with a user namespace too.
func executorRuns(ex, views string, userns bool, work, rootfs string, n int, opts []runtime.Option) ([]result, error) {
	vs := []string{""}
	if ex == runtime.ExecutorBuiltin && views != "" {
		vs = strings.Split(views, ",")
	}
	var vars []variant
	for _, v := range vs {
		// Each view gets a runtime of its own: the view is chosen when one is made.
		if err := os.Setenv(runtime.ExeViewEnv, v); err != nil {
			return nil, err
		}
		r, err := runtime.New(filepath.Join(work, "state-"+ex+"-"+v), opts...)
		if err != nil {
			return nil, err
		}
		vars = append(vars, variant{r: r, view: v})
		if userns {
			vars = append(vars, variant{r: r, view: v, userns: true})
		}
	}
	// The variants take turns, run by run, so that the machine's noise falls on each alike.
	exit, full, first, err := berthLoop(vars, rootfs, ex, n)
	if err != nil {
		return nil, fmt.Errorf("berth/%s: %w", ex, err)
	}
	var results []result
	for i, v := range vars {
		if v.view != "" && !v.userns {
			// The view is made in a runtime's first start.
			fmt.Printf("first start with the %s view of the binary: %s\n", v.view, ms(first[i]))
		}
		name := ex + " executor"
		if v.view != "" {
			name += ", " + v.view + " exe"
		}
		if v.userns {
			name += ", userns"
		}
		results = append(results, result{"berth (" + name + "), to exit", exit[i]}, result{"berth (" + name + "), incl. cleanup", full[i]})
	}
	return results, nil
}

// report prints the percentiles, and with the peers measured, berth's
// ratios to them.
func report(results []result, peers, userns bool) {
	fmt.Printf("%-52s %9s %9s %9s\n", "", "p50", "p95", "mean")
	for _, res := range results {
		fmt.Printf("%-52s %9s %9s %9s\n", res.name, ms(pct(res.d, 50)), ms(pct(res.d, 95)), ms(mean(res.d)))
	}
	if !peers || len(results) < 4 {
		return
	}
	base := results[1].d // berth built-in, including cleanup: what a user waits for
	if userns && len(results) > 3 {
		fmt.Println()
		fmt.Printf("berth built-in with userns / without (to exit):   p50 %.2fx   p95 %.2fx\n",
			ratio(pct(results[2].d, 50), pct(results[0].d, 50)), ratio(pct(results[2].d, 95), pct(results[0].d, 95)))
	}
	fmt.Println()
	for _, peer := range results[len(results)-2:] {
		fmt.Printf("berth built-in (incl. cleanup) / %-14s p50 %.2fx   p95 %.2fx\n", peer.name+":",
			ratio(pct(base, 50), pct(peer.d, 50)), ratio(pct(base, 95), pct(peer.d, 95)))
	}
}

func berthLoop(vars []variant, rootfs, ex string, n int) (exit, full [][]time.Duration, first []time.Duration, err error) {
	ctx := context.Background()
	exit, full, first = make([][]time.Duration, len(vars)), make([][]time.Duration, len(vars)), make([]time.Duration, len(vars))
	for i := range n + 3 {
		for k, v := range vars {
			r := v.r
			id := fmt.Sprintf("bench-%s-%d-%d", ex, k, i)
			t0 := time.Now()
			c := runtime.Config{ID: id, LowerDirs: []string{rootfs}, Args: []string{"/bin/true"}, Executor: ex, UserNS: v.userns}
			if _, err := r.Run(ctx, c); err != nil {
				return nil, nil, nil, err
			}
			st, err := r.Wait(ctx, id)
			if err != nil {
				return nil, nil, nil, err
			}
			t1 := time.Now()
			if err := r.Delete(ctx, id, false); err != nil {
				return nil, nil, nil, err
			}
			t2 := time.Now()
			if st.ExitCode != 0 {
				return nil, nil, nil, fmt.Errorf("%s exited %d", id, st.ExitCode)
			}
			if i == 0 {
				first[k] = t1.Sub(t0)
			}
			if i >= 3 {
				exit[k] = append(exit[k], t1.Sub(t0))
				full[k] = append(full[k], t2.Sub(t0))
			}
		}
	}
	return exit, full, first, nil
}

// peerRuns times "<peer> run" of the same rootfs with the same OCI spec
// berth would use. crun refuses a hybrid cgroup host, so its loop runs in
// a mount namespace where the empty cgroup2 mount is gone.
func peerRuns(work, rootfs, peer string, n int) ([]time.Duration, error) {
	if _, err := exec.LookPath(peer); err != nil {
		return nil, err
	}
	bundle := filepath.Join(work, peer+"-bundle")
	if err := os.MkdirAll(bundle, 0o755); err != nil {
		return nil, err
	}
	for _, f := range []string{"hostname", "hosts", "resolv.conf"} {
		if err := os.WriteFile(filepath.Join(bundle, f), []byte("\n"), 0o644); err != nil {
			return nil, err
		}
	}
	s, err := runtime.Spec(&runtime.Config{ID: "bench-" + peer, Args: []string{"/bin/true"}, LowerDirs: []string{rootfs}}, rootfs, bundle)
	if err != nil {
		return nil, err
	}
	s.Root.Readonly = true // the rootfs is shared by every run
	b, err := json.Marshal(s)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), b, 0o644); err != nil {
		return nil, err
	}
	state := filepath.Join(work, peer+"-state")
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	args := []string{self, "-peer-loop", peer, "-bundle", bundle, "-state", state, "-n", fmt.Sprint(n)}
	var cmd *exec.Cmd
	if peer == "crun" && hybridCgroups() {
		cmd = exec.Command("unshare", append([]string{"--mount", "--propagation", "private", "sh", "-c",
			`umount -l /sys/fs/cgroup/unified; exec "$@"`, "sh"}, args...)...)
	} else {
		cmd = exec.Command(args[0], args[1:]...)
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, err
	}
	var d []time.Duration
	return d, json.Unmarshal(out, &d)
}

func peerLoop(peer, bundle, state string, n int) ([]time.Duration, error) {
	var d []time.Duration
	for i := range n + 3 {
		id := fmt.Sprintf("bench-%s-%d", peer, i)
		cmd := exec.Command(peer, "--root", state, "run", "--bundle", bundle, id)
		t0 := time.Now()
		out, err := cmd.CombinedOutput()
		el := time.Since(t0)
		if err != nil {
			return nil, fmt.Errorf("%s run: %w: %s", peer, err, strings.TrimSpace(string(out)))
		}
		if i >= 3 {
			d = append(d, el)
		}
	}
	return d, nil
}

func hybridCgroups() bool {
	var st syscall.Statfs_t
	return syscall.Statfs("/sys/fs/cgroup/unified", &st) == nil && st.Type == 0x63677270
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(0, min(len(s)-1, i-1))]
}

func mean(d []time.Duration) time.Duration {
	var sum time.Duration
	for _, v := range d {
		sum += v
	}
	return sum / time.Duration(len(d))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 { return float64(a) / float64(b) }
