package runtime_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func TestCheckpointRestoreRunc(t *testing.T) { testCheckpointRestore(t, "runc") }
func TestCheckpointRestoreCrun(t *testing.T) { testCheckpointRestore(t, "crun") }

// counterArgs print 1, 2, 3... one every 10 ms, and append them to a
// file of the container's writable layer, which they keep open: a restore
// must bring that layer back.
var counterArgs = []string{"sh", "-c", "exec 3>>/root/count; i=0; while :; do i=$((i+1)); echo $i; echo $i >&3; usleep 10000; done"}

// testCheckpointRestore checkpoints a counter (after a pre-dump, as a
// migration does) and restores it: the count goes on from where it was,
// and the time between the last number before and the first after is
// about the downtime.
func testCheckpointRestore(t *testing.T, executor string) {
	ctx := context.Background()
	id := fmt.Sprintf("ckpt-%s", executor)
	r := startCounter(t, executor, id, counterArgs, runtime.Resources{MemoryBytes: 48 << 20, CPUs: 0.1}, 20)

	mountsBefore, devBefore := inContainer(t, r, id, mountsCmd), inContainer(t, r, id, devCmd)
	flagsBefore := inContainer(t, r, id, mountFlagsCmd)

	images := t.TempDir()
	pre, final := filepath.Join(images, "pre"), filepath.Join(images, "final")
	switch err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{ImageDir: pre, PreDump: true}); {
	case errors.Is(err, runtime.ErrNoDirtyTracking):
		t.Logf("no pre-dump: %v", err)
		pre = ""
	case errors.Is(err, runtime.ErrCannotCheckpoint) && executor == "crun":
		// Debian's crun is built without CRIU: the refusal must say so.
		if !strings.Contains(err.Error(), "without CRIU support") {
			t.Fatalf("crun refusal does not say why: %v", err)
		}
		return
	case err != nil:
		t.Fatal(err)
	}
	if st, _ := r.State(ctx, id); st.State != runtime.Running {
		t.Fatalf("after a pre-dump the container is %s, want running", st.State)
	}
	begin := time.Now()
	if err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{ImageDir: final, ParentDir: pre}); err != nil {
		t.Fatal(err)
	}
	if st, _ := r.Wait(ctx, id); st.State == runtime.Running {
		t.Fatalf("after the dump the container still runs")
	}
	before := counts(t, r, id)
	if _, err := r.Restore(ctx, id, final); err != nil {
		if b, e := os.ReadFile(filepath.Join(final, "restore.log")); e == nil {
			t.Log(string(b[max(0, len(b)-3000):]))
		}
		t.Fatal(err)
	}
	downtime := time.Since(begin)
	dumpCRIU, restoreCRIU := runtime.CRIUTook(final, "dump.log"), runtime.CRIUTook(final, "restore.log")
	t.Logf("%s: dump + restore downtime %v, of which CRIU %v + %v", executor, downtime, dumpCRIU, restoreCRIU)
	if dumpCRIU <= 0 || restoreCRIU <= 0 || dumpCRIU+restoreCRIU > downtime {
		t.Errorf("CRIU's own times %v + %v do not fit in the downtime %v", dumpCRIU, restoreCRIU, downtime)
	}
	// CRIU read what it knows of the kernel from its cache rather than
	// probing it again (up to 1.5 s of each on a host whose /run is on disk).
	for _, name := range []string{"dump.log", "restore.log"} {
		if b, err := os.ReadFile(filepath.Join(final, name)); err != nil || !bytes.Contains(b, []byte("Loaded kdat cache")) {
			t.Errorf("CRIU's %s does not say it loaded its kernel cache (%v)", name, err)
		}
	}
	// The container came to CRIU frozen: CRIU did not sleep 100 ms
	// waiting for its freeze ("freezing processes: N attempts done").
	if b, _ := os.ReadFile(filepath.Join(final, "dump.log")); freezeWaits.Match(b) {
		t.Errorf("CRIU waited for the container's freeze: %s", freezeWaits.Find(b))
	}
	waitCount(t, r, id, 5)
	// The restored container is back in its limits.
	if st, err := r.Stats(ctx, id); err != nil || st.MemoryLimit != 48<<20 {
		t.Fatalf("restored container's memory limit %d (%v), want %d", st.MemoryLimit, err, 48<<20)
	}
	// CRIU, run at a raised priority, gave the restored process its own.
	if st, err := r.State(ctx, id); err != nil || niceOf(t, st.Pid) != "0" {
		t.Errorf("restored process %d runs at nice %s (%v), want 0", st.Pid, niceOf(t, st.Pid), err)
	}
	// CRIU restored it unthrottled, and its CPU quota is back after.
	if q := cpuQuota(t, r.CgroupPath(id)); q != "10000" && q != "10000 100000" {
		t.Errorf("restored container's CPU quota is %q, want 10000 µs per 100 ms", q)
	}
	after := counts(t, r, id)
	last, first := before[len(before)-1], after[0]
	if first.n != last.n+1 {
		t.Fatalf("after restore the count went %d -> %d, want %d", last.n, first.n, last.n+1)
	}
	// The restored process ran at once, not after some later event: its
	// output resumed within the downtime, give or take the container's
	// CPU quota (10 ms each 100 ms, so up to 90 ms throttled on either
	// side) and the time the log's reader took to see each line on a
	// busy machine.
	gap := first.at.Sub(last.at)
	t.Logf("gap between %d and %d: %v", last.n, first.n, gap)
	if gap > downtime+time.Second {
		t.Fatalf("gap between %d and %d is %v, over a second longer than the downtime %v", last.n, first.n, gap, downtime)
	}
	for i := 1; i < len(after); i++ {
		if after[i].n != after[i-1].n+1 {
			t.Fatalf("after restore the count skips %d -> %d", after[i-1].n, after[i].n)
		}
	}
	// The masked directories were left out of the images, not archived,
	// and are masked again: empty and read-only.
	if b, _ := os.ReadFile(filepath.Join(final, "dump.log")); !bytes.Contains(b, []byte("berth-masked mapping for ./proc/acpi")) {
		t.Errorf("the dump did not leave /proc/acpi out as a masked directory")
	}
	var masked bytes.Buffer
	if code, err := r.Exec(ctx, id, runtime.ExecProcess{Args: []string{"sh", "-c", "ls -A /proc/acpi; touch /proc/acpi/x"}, Stdout: &masked, Stderr: &masked}); err != nil || code == 0 || !strings.Contains(masked.String(), "Read-only") {
		t.Errorf("after restore /proc/acpi is not an empty read-only directory: exit %d, %v: %q", code, err, masked.String())
	}
	var file bytes.Buffer
	if _, err := r.Exec(ctx, id, runtime.ExecProcess{Args: []string{"head", "-n", "1", "/root/count"}, Stdout: &file}); err != nil || strings.TrimSpace(file.String()) != "1" {
		t.Fatalf("after restore /root/count begins %q (%v), want the 1 written before the dump", file.String(), err)
	}
	// /dev and an empty /dev/shm were left out too, not archived
	// (tmpfs-dev-*.img), and came back as they were; the masked
	// directories, /dev and /dev/shm are the tmpfs mounts they were, not
	// binds of a host directory.
	if tars, _ := filepath.Glob(filepath.Join(final, "tmpfs-dev-*")); len(tars) != 0 {
		t.Errorf("the dump archived tmpfs mounts: %v", tars)
	}
	if dev := inContainer(t, r, id, devCmd); dev != devBefore {
		t.Errorf("after restore /dev holds\n%s\nbefore the dump\n%s", dev, devBefore)
	}
	if m := inContainer(t, r, id, mountsCmd); m != mountsBefore {
		t.Errorf("after restore the tmpfs mounts are\n%s\nbefore the dump\n%s", m, mountsBefore)
	}
	// No mount came back with weaker flags than it had (/dev/null and
	// the files masked with it lost nosuid and noexec).
	if m := inContainer(t, r, id, mountFlagsCmd); m != flagsBefore {
		t.Errorf("after restore the mounts' flags are\n%s\nbefore the dump\n%s", m, flagsBefore)
	}
}

// mountFlagsCmd prints each of the container's mount points with its
// per-mount flags (rw/ro, nosuid, nodev, noexec...).
const mountFlagsCmd = "cut -d' ' -f5,6 /proc/self/mountinfo | sort"

// niceOf is the nice value of process pid.
func niceOf(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// After "(comm)", the 17th field is the nice value.
	f := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
	return f[16]
}

// cpuQuota reads the CPU quota of the cgroup at path (v1 or v2).
func cpuQuota(t *testing.T, path string) string {
	t.Helper()
	for _, f := range []string{"/sys/fs/cgroup/cpu" + path + "/cpu.cfs_quota_us", "/sys/fs/cgroup" + path + "/cpu.max"} {
		if b, err := os.ReadFile(f); err == nil {
			return strings.TrimSpace(string(b))
		}
	}
	t.Fatalf("no CPU quota file for cgroup %s", path)
	return ""
}

// mountsCmd prints the container's tmpfs mounts as mountinfo shows them
// (root, mount point, flags, type, source, options), less the ids.
const mountsCmd = "grep ' - tmpfs ' /proc/self/mountinfo | cut -d' ' -f4- | sort"

// devCmd prints what /dev and /dev/shm hold: names, types, modes, owners.
const devCmd = "ls -lnA /dev /dev/shm | sed -E 's/ [A-Z][a-z]{2} +[0-9]+ +[0-9:]+ / /; s/^([^ ]+) +[0-9]+ /\\1 /'"

// inContainer runs sh -c cmd in container id and returns its output.
func inContainer(t *testing.T, r *runtime.Runtime, id, cmd string) string {
	t.Helper()
	var out bytes.Buffer
	if code, err := r.Exec(context.Background(), id, runtime.ExecProcess{Args: []string{"sh", "-c", cmd}, Stdout: &out, Stderr: &out}); err != nil || code != 0 {
		t.Fatalf("%s in %s: exit %d, %v: %s", cmd, id, code, err, out.String())
	}
	return out.String()
}

// TestCheckpointDevContents: what a container put in its /dev (a
// directory, a link) and /dev/shm (a file) comes back after a restore.
// /dev is still left out of the images (its entries carried beside
// them); the /dev/shm that holds data is archived by CRIU.
func TestCheckpointDevContents(t *testing.T) {
	ctx := context.Background()
	id := "ckpt-dev"
	args := []string{"sh", "-c", "mkdir /dev/mine && ln -s /proc/self/fd/9 /dev/nine && echo kept >/dev/shm/a && " + counterArgs[2]}
	r := startCounter(t, "runc", id, args, runtime.Resources{}, 5)
	devBefore := inContainer(t, r, id, devCmd)
	images := t.TempDir()
	if err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{ImageDir: images}); err != nil {
		t.Fatal(err)
	}
	if tars, _ := filepath.Glob(filepath.Join(images, "tmpfs-dev-*")); len(tars) != 1 {
		t.Errorf("the dump archived %d tmpfs mounts (%v), want 1: /dev/shm", len(tars), tars)
	}
	if _, err := r.Restore(ctx, id, images); err != nil {
		t.Fatal(err)
	}
	if dev := inContainer(t, r, id, devCmd); dev != devBefore {
		t.Errorf("after restore /dev holds\n%s\nbefore the dump\n%s", dev, devBefore)
	}
	if got := inContainer(t, r, id, "cat /dev/shm/a"); got != "kept\n" {
		t.Errorf("after restore /dev/shm/a holds %q, want %q", got, "kept\n")
	}
}

var freezeWaits = regexp.MustCompile(`freezing processes: [1-9][0-9]* attempts done`)

// TestCheckpointFailureThaws: a dump that fails once the container is
// frozen (its images do not fit where they go) leaves it running.
func TestCheckpointFailureThaws(t *testing.T) {
	ctx := context.Background()
	id := "ckpt-full"
	r := startCounter(t, "runc", id, counterArgs, runtime.Resources{CPUs: 0.5}, 5)
	full := t.TempDir()
	if err := unix.Mount("tmpfs", full, "tmpfs", 0, "size=16k"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(full, unix.MNT_DETACH) })
	if err := r.Checkpoint(ctx, id, runtime.CheckpointOptions{ImageDir: full}); err == nil {
		t.Fatal("a dump into 16 KiB succeeded")
	}
	if st, _ := r.State(ctx, id); st.State != runtime.Running {
		t.Fatalf("after a failed dump the container is %s, want running", st.State)
	}
	// The quota lifted for the dump is back.
	if q := cpuQuota(t, r.CgroupPath(id)); q != "50000" && q != "50000 100000" {
		t.Errorf("after a failed dump the CPU quota is %q, want 50000 µs per 100 ms", q)
	}
	n := len(counts(t, r, id))
	waitCount(t, r, id, n+5)
}

type count struct {
	n  int
	at time.Time
}

// counts reads the numbers the counter logged, with their times.
func counts(t *testing.T, r *runtime.Runtime, id string) []count {
	t.Helper()
	var out bytes.Buffer
	if err := r.Logs(context.Background(), id, runtime.LogOptions{Timestamps: true}, &out, &out); err != nil {
		t.Fatal(err)
	}
	var cs []count
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		at, err1 := time.Parse(time.RFC3339Nano, f[0])
		n, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			cs = append(cs, count{n, at})
		}
	}
	return cs
}

// startCounter runs the counter (or args) as container id with executor
// and resources, once root, the executor and criu are at hand, and waits
// until it has logged n numbers.
func startCounter(t *testing.T, executor, id string, args []string, res runtime.Resources, n int) *runtime.Runtime {
	t.Helper()
	runtimetest.RequireRoot(t)
	requireBinary(t, executor)
	requireBinary(t, "criu")
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Run(context.Background(), runtime.Config{ID: id, LowerDirs: []string{rootfs}, Args: args, Executor: executor, Resources: res}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(context.Background(), id, true) })
	waitCount(t, r, id, n)
	return r
}

func waitCount(t *testing.T, r *runtime.Runtime, id string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(counts(t, r, id)) < n {
		if time.Now().After(deadline) {
			st, _ := r.State(context.Background(), id)
			t.Fatalf("%s logged fewer than %d numbers in 10s (state %s)", id, n, st.State)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestCheckpointBuiltinRefused(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	r, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := r.Run(ctx, runtime.Config{ID: "ckpt-builtin", LowerDirs: []string{rootfs}, Args: []string{"sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Delete(context.Background(), "ckpt-builtin", true) })
	err = r.Checkpoint(ctx, "ckpt-builtin", runtime.CheckpointOptions{ImageDir: t.TempDir()})
	if !errors.Is(err, runtime.ErrCannotCheckpoint) || !strings.Contains(err.Error(), "runc or crun") {
		t.Fatalf("checkpoint of a built-in container: %v, want ErrCannotCheckpoint naming runc or crun", err)
	}
	if st, _ := r.State(ctx, "ckpt-builtin"); st.State != runtime.Running {
		t.Fatalf("the refused checkpoint left the container %s", st.State)
	}
}
