// Command checkpoint measures the downtime of moving a small running
// process through a checkpoint file: `berth container checkpoint --export`
// then `restore --import` (runc under berth's shim) beside `podman
// container checkpoint --export` and `restore --import`, both with the
// same CRIU and a busybox counter. Downtime is from the start of the
// checkpoint to the end of the restore, the container's removal between
// them excluded. It prints figures and asserts nothing. Run it as root.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/berth-dev/berth/bench/internal/harness"
)

const counter = "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"

func main() {
	bin := harness.BerthFlag()
	runs := flag.Int("n", 5, "checkpoint/restore rounds per tool")
	flag.Parse()
	harness.Exit(bench(*bin, *runs))
}

func bench(bin string, runs int) error {
	ws, err := harness.NewWorkspace(bin, "berth-bench-checkpoint-")
	if err != nil {
		return err
	}
	defer ws.Close()
	bin, work, rootfs := ws.Bin, ws.Work, ws.Rootfs
	data := filepath.Join(work, "data")
	berth := func(args ...string) error { return harness.Run(bin, append([]string{"--data-dir", data}, args...)...) }
	if err := berth("image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
		return err
	}
	name := fmt.Sprintf("bench-ckpt-%d", os.Getpid())
	file := filepath.Join(work, "ckpt.tar.gz")
	var b []time.Duration
	for range runs {
		d, err := round(
			func() error {
				return berth("container", "run", "-d", "--runtime", "runc", "--name", name, "bench/busybox:1", "sh", "-c", counter)
			},
			func() error { return berth("container", "checkpoint", "--export", file, name) },
			func() error { return berth("container", "rm", name) },
			func() error { return berth("container", "restore", "--import", file, name) },
		)
		_ = berth("container", "rm", "--force", name)
		if err != nil {
			return fmt.Errorf("berth: %w", err)
		}
		b = append(b, d)
	}
	row("berth container checkpoint --export + restore --import (runc)", b)

	if _, err := exec.LookPath("podman"); err != nil {
		fmt.Println("podman: not installed, skipped")
		return nil
	}
	img := "localhost/" + name + ":1"
	if err := harness.PodmanImport(rootfs, img); err != nil {
		return err
	}
	defer func() { _ = harness.Run("podman", "rmi", "-f", img) }()
	var p []time.Duration
	for range runs {
		d, err := round(
			func() error {
				return harness.Run("podman", slices.Concat([]string{"run", "-d", "--network", "none"}, harness.PodmanRunArgs, []string{"--name", name, img, "sh", "-c", counter})...)
			},
			func() error {
				return harness.Run("podman", "--runtime", "runc", "container", "checkpoint", "--export", file, name)
			},
			func() error { return harness.Run("podman", "rm", name) },
			func() error {
				return harness.Run("podman", "--runtime", "runc", "container", "restore", "--import", file)
			},
		)
		_ = harness.Run("podman", "rm", "-f", name)
		if err != nil {
			// A figure for berth is still a figure: say why podman has none.
			fmt.Println("podman: no figure:", err)
			return nil
		}
		p = append(p, d)
	}
	row("podman container checkpoint --export + restore --import (runc)", p)
	return nil
}

// round starts the counter, lets it count, and times checkpoint + restore.
func round(start, checkpoint, remove, restore func() error) (time.Duration, error) {
	if err := start(); err != nil {
		return 0, err
	}
	time.Sleep(200 * time.Millisecond) // let it count; nothing is measured here
	t0 := time.Now()
	if err := checkpoint(); err != nil {
		return 0, err
	}
	dump := time.Since(t0)
	if err := remove(); err != nil {
		return 0, err
	}
	t1 := time.Now()
	if err := restore(); err != nil {
		return 0, err
	}
	return dump + time.Since(t1), nil
}

func row(what string, ds []time.Duration) {
	slices.Sort(ds)
	fmt.Printf("%-62s median %6.0f ms  min %6.0f ms  max %6.0f ms  (%d runs)\n", what,
		ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
