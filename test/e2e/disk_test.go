package e2e

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/runtime"
)

// fillerYAML is a job that writes n files of 1 MiB to its root
// filesystem, one every pause, then sleeps: a container filling its disk.
// It runs once: its failed instance stays to be read.
func fillerYAML(name, resources string, n int, pause string) string {
	return fmt.Sprintf(`kind: Job
name: %s
completions: 1
backoffLimit: 0
template:
  image: demo/busybox:1
  command: [sh, -c, "i=0; while [ $i -lt %d ]; do dd if=/dev/zero of=/fill.$i bs=1048576 count=1 2>/dev/null; i=$((i+1)); sleep %s; done; sleep 1d"]
  resources: {%s}
  restart: never
`, name, n, pause, resources)
}

// stoppedFor waits for owner's instance to fail with reason, and returns it.
func (c *cluster) stoppedFor(owner, reason string, timeout time.Duration) api.Instance {
	c.t.Helper()
	var got api.Instance
	eventually(c.t, timeout, owner+" stopped with "+reason, func() bool {
		for _, in := range c.ownedBy(owner) {
			if in.Status.Phase == api.PhaseFailed {
				got = in
				return true
			}
		}
		return false
	})
	if got.Status.Reason != reason {
		c.t.Fatalf("%s failed with reason %q (%s), want %s", owner, got.Status.Reason, got.Status.Message, reason)
	}
	return got
}

// writableLayer is how much an instance's container wrote to its root
// filesystem, measured on the host.
func (c *cluster) writableLayer(in api.Instance) int64 {
	c.t.Helper()
	n, err := runtime.DiskUsage(filepath.Join(c.dataDir, "containers", in.Status.ContainerID, "upper"))
	if err != nil {
		c.t.Fatal(err)
	}
	return n
}

// TestDiskLimitStopsTheWriter runs a container with resources.disk: 8Mi
// that would write 64 MiB: the agent stops it with DiskLimitExceeded,
// shown in its instance's status, long before it wrote it all.
func TestDiskLimitStopsTheWriter(t *testing.T) {
	c := startCluster(t, "--no-network")
	if out, errOut, code := c.applyYAML(fillerYAML("filler", "disk: 8Mi", 64, "0.05")); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	in := c.stoppedFor("filler", "DiskLimitExceeded", 60*time.Second)
	if !strings.Contains(in.Status.Message, "8Mi") {
		t.Errorf("message %q does not name the limit", in.Status.Message)
	}
	used := c.writableLayer(in)
	t.Logf("stopped with %d MiB written: %s", used>>20, in.Status.Message)
	if used <= 8<<20 || used >= 48<<20 {
		t.Errorf("the writable layer holds %d MiB: want over the 8 MiB limit (it was stopped for that) and well under the 64 MiB it would write", used>>20)
	}
	// So do the events.
	eventually(t, 10*time.Second, "a DiskLimitExceeded event", func() bool {
		out := c.ok("events")
		return strings.Contains(out, "DiskLimitExceeded") && strings.Contains(out, in.Metadata.Name)
	})
	// A restarted berth up still says why: the exit alone does not tell.
	c.kill()
	c.start()
	if out, errOut, code := c.applyYAML("kind: Job\nname: after\ncompletions: 1\ntemplate: {image: demo/busybox:1, command: [\"true\"]}\n"); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	// The agent reports every instance on its first pass, before it runs
	// the new job.
	eventually(t, 60*time.Second, "the job after the restart to succeed", func() bool {
		for _, in := range c.ownedBy("after") {
			if in.Status.Phase == api.PhaseSucceeded {
				return true
			}
		}
		return false
	})
	for _, again := range c.ownedBy("filler") {
		if again.Status.Reason != "DiskLimitExceeded" || again.Status.Message != in.Status.Message {
			t.Errorf("after the restart: %s %q (%s), want DiskLimitExceeded as before", again.Status.Phase, again.Status.Reason, again.Status.Message)
		}
	}
	// A bad limit is refused at the API, naming the field.
	if _, errOut, code := c.applyYAML(fillerYAML("tiny", "disk: 4Ki", 1, "1")); code == 0 || !strings.Contains(errOut, "resources.disk") {
		t.Errorf("disk: 4Ki: exit %d, %q; want a refusal naming resources.disk", code, errOut)
	}
}

// TestDiskReserveStopsTheLargestWriter runs berth up on a 256 MiB tmpfs
// with --disk-reserve 100Mi, and a container with no disk limit that
// would write 200 MiB: the agent stops it with DiskPressure before the
// filesystem fills.
func TestDiskReserveStopsTheLargestWriter(t *testing.T) {
	e := newEnv(t)
	if err := syscall.Mount("tmpfs", e.dataDir, "tmpfs", 0, "size=256m,mode=0711"); err != nil {
		t.Fatalf("mount a tmpfs data dir: %v", err)
	}
	// Registered first, so it runs last: after berth up and its containers.
	t.Cleanup(func() { _ = syscall.Unmount(e.dataDir, syscall.MNT_DETACH) })
	c := startClusterIn(t, e, "--no-network", "--disk-reserve", "100Mi")
	free := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(e.dataDir, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Bavail) * st.Bsize
	}
	if f := free(); f < 130<<20 {
		t.Fatalf("only %d MiB free on the tmpfs before the test", f>>20)
	}
	if out, errOut, code := c.applyYAML(fillerYAML("hog", "cpu: 0.5", 200, "0.02")); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	in := c.stoppedFor("hog", "DiskPressure", 60*time.Second)
	used, left := c.writableLayer(in), free()
	t.Logf("stopped with %d MiB written and %d MiB free: %s", used>>20, left>>20, in.Status.Message)
	if used >= 190<<20 || left < 16<<20 {
		t.Errorf("the writer got to %d MiB and left %d MiB free: want it stopped near the 100 MiB reserve", used>>20, left>>20)
	}
}

// TestDiskReserveFlagIsChecked refuses a bad --disk-reserve by name, on
// both commands that run an agent.
func TestDiskReserveFlagIsChecked(t *testing.T) {
	e := &env{t: t, dataDir: t.TempDir()}
	for _, args := range [][]string{
		{"up", "--disk-reserve", "150%"},
		{"agent", "--server", "https://127.0.0.1:1", "--disk-reserve", "lots"},
	} {
		_, errOut, code := e.run(args...)
		if code == 0 || !strings.Contains(errOut, "--disk-reserve") {
			t.Errorf("berth %s: exit %d, %q; want a refusal naming --disk-reserve", strings.Join(args, " "), code, errOut)
		}
	}
}

// volumeFillerYAML is a job with disk: 8Mi that writes n files of 1 MiB
// into dir, one every 50 ms, then sleeps; volume is its volumes' YAML.
func volumeFillerYAML(name, dir, volume string, n int) string {
	return fmt.Sprintf(`kind: Job
name: %s
completions: 1
backoffLimit: 0
template:
  image: demo/busybox:1
  command: [sh, -c, "i=0; while [ $i -lt %d ]; do dd if=/dev/zero of=%s/fill.$i bs=1048576 count=1 2>/dev/null; i=$((i+1)); sleep 0.05; done; sleep 1d"]
  resources: {disk: 8Mi}
  restart: never
  volumes: [%s]
`, name, n, dir, volume)
}

// TestDiskLimitCountsVolumes: resources.disk covers what an instance
// writes to its named volume and to its tmpfs volume, not only its
// writable layer; a hostPath, the host's own directory, is not counted.
func TestDiskLimitCountsVolumes(t *testing.T) {
	host := t.TempDir()
	c := startCluster(t, "--no-network")
	for _, spec := range []string{
		volumeFillerYAML("named", "/data", "{name: fill, path: /data}", 64),
		volumeFillerYAML("tmp", "/cache", "{tmpfs: {size: 64Mi}, path: /cache}", 64),
		volumeFillerYAML("host", "/host", "{hostPath: "+host+", path: /host}", 16),
	} {
		if out, errOut, code := c.applyYAML(spec); code != 0 {
			t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
		}
	}
	for _, owner := range []string{"named", "tmp"} {
		in := c.stoppedFor(owner, "DiskLimitExceeded", 60*time.Second)
		if !strings.Contains(in.Status.Message, "volumes") || !strings.Contains(in.Status.Message, "8Mi") {
			t.Errorf("%s: message %q does not say the volumes count toward the 8Mi limit", owner, in.Status.Message)
		}
		if used := c.writableLayer(in); used >= 1<<20 {
			t.Errorf("%s: the writable layer holds %d bytes: the volume, not the layer, should have filled", owner, used)
		}
	}
	// The hostPath writer wrote twice its limit and keeps running: watched
	// for three disk passes after its last write.
	eventually(t, 30*time.Second, "16 MiB written to the hostPath", func() bool {
		ents, _ := filepath.Glob(filepath.Join(host, "fill.*"))
		return len(ents) == 16
	})
	deadline := time.Now().Add(3 * agent.DefaultDiskInterval)
	for time.Now().Before(deadline) {
		if len(c.running("host")) != 1 {
			t.Fatalf("the hostPath writer was stopped: %+v", c.ownedBy("host"))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
