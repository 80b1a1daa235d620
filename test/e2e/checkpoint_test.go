package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/runtime"
)

// lastCount is the last number the counter container logged.
func (e *env) lastCount(name string) int {
	e.t.Helper()
	lines := strings.Fields(e.ok("container", "logs", name))
	if len(lines) == 0 {
		return 0
	}
	n, err := strconv.Atoi(lines[len(lines)-1])
	if err != nil {
		e.t.Fatalf("counter logged %q", lines[len(lines)-1])
	}
	return n
}

// TestContainerCheckpointRestore: a counter checkpointed with --export,
// removed, and restored with --import counts on from where it was, with
// the files of its writable layer.
func TestContainerCheckpointRestore(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	counter := "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"
	e.ok("container", "run", "-d", "--runtime", "runc", "--name", "ctr", "demo/busybox:1", "sh", "-c", counter)
	t.Cleanup(func() { e.run("container", "rm", "--force", "ctr") })
	eventually(t, 10*time.Second, "the counter to count", func() bool { return e.lastCount("ctr") >= 10 })

	// --leave-running dumps without stopping.
	e.ok("container", "checkpoint", "--leave-running", "ctr")
	if out := e.ok("container", "ps"); !strings.Contains(out, "running") {
		t.Fatalf("after checkpoint --leave-running:\n%s", out)
	}
	n := e.lastCount("ctr")
	eventually(t, 10*time.Second, "the counter to go on", func() bool { return e.lastCount("ctr") > n })

	// A file of its writable layer goes with the export.
	e.ok("container", "exec", "ctr", "sh", "-c", "echo kept > /root/kept")
	archive := filepath.Join(t.TempDir(), "ctr.tar.gz")
	if out := e.ok("container", "checkpoint", "--export", archive, "ctr"); !strings.Contains(out, archive) {
		t.Fatalf("checkpoint --export printed %q", out)
	}
	if out := e.ok("container", "ps", "-a"); strings.Contains(out, "running") {
		t.Fatalf("the checkpointed container still runs:\n%s", out)
	}
	last := e.lastCount("ctr")
	e.ok("container", "rm", "ctr")
	e.ok("container", "restore", "--import", archive, "ctr")
	eventually(t, 10*time.Second, "the restored counter to count", func() bool { return e.lastCount("ctr") > last+3 })
	first := strings.Fields(e.ok("container", "logs", "ctr"))[0]
	if first != strconv.Itoa(last+1) {
		t.Fatalf("restored counter began at %s, want %d (it was at %d)", first, last+1, last)
	}

	if out := e.ok("container", "exec", "ctr", "cat", "/root/kept"); strings.TrimSpace(out) != "kept" {
		t.Errorf("after restore --import /root/kept holds %q, want the kept written before the export", out)
	}

	// The restored container holds its image as a run one does.
	if _, errOut, code := e.run("image", "rm", "demo/busybox:1"); code == 0 || !strings.Contains(errOut, "ctr") {
		t.Errorf("image rm under a restored container: exit %d, %q", code, errOut)
	}

	// What cannot be done is refused, naming why.
	e.ok("container", "run", "-d", "--name", "plain", "demo/busybox:1", "sleep", "60")
	t.Cleanup(func() { e.run("container", "rm", "--force", "plain") })
	if _, errOut, code := e.run("container", "checkpoint", "plain"); code == 0 || !strings.Contains(errOut, "runc or crun") {
		t.Errorf("checkpoint of a built-in container: exit %d, %q", code, errOut)
	}
	if _, errOut, code := e.run("container", "restore", "nothing"); code == 0 || !strings.Contains(errOut, "no checkpoint") {
		t.Errorf("restore without a checkpoint: exit %d, %q", code, errOut)
	}
	if _, errOut, code := e.run("container", "restore", "--import", archive, "other"); code == 0 || !strings.Contains(errOut, `"ctr"`) {
		t.Errorf("restore --import under another name: exit %d, %q", code, errOut)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar.gz")
	if err := os.WriteFile(junk, []byte("not an archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.run("container", "restore", "--import", junk, "other"); code == 0 || !strings.Contains(errOut, junk) {
		t.Errorf("restore --import of a file that is no checkpoint: exit %d, %q", code, errOut)
	}
}

const counterYAML = `kind: Service
name: counter
replicas: 1
template:
  image: demo/busybox:1
  runtime: runc
  command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"]
  resources: {cpu: 0.1, memory: 32Mi}
`

// TestInstanceCheckpoint: berth checkpoint INSTANCE dumps a runc instance
// through the API and its node's agent, leaving it running; an instance of
// the built-in executor is refused, saying why.
func TestInstanceCheckpoint(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(counterYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	inst := c.waitRunning("counter", 1)[0]
	before := c.containers("counter")
	logged := func() []int {
		var ns []int
		for _, f := range strings.Fields(c.ok("logs", inst.Metadata.Name)) {
			n, err := strconv.Atoi(f)
			if err != nil {
				t.Fatalf("the counter logged %q", f)
			}
			ns = append(ns, n)
		}
		return ns
	}
	eventually(t, 10*time.Second, "the counter to count", func() bool { return len(logged()) > 0 })
	counted := logged()
	atCheckpoint := counted[len(counted)-1]
	archive := filepath.Join(t.TempDir(), "counter.tar.gz")
	if out := c.ok("checkpoint", inst.Metadata.Name, "--output", archive); !strings.Contains(out, archive) {
		t.Fatalf("checkpoint printed %q", out)
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id, _, err := runtime.ImportCheckpoint(f, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := before[id]; !ok {
		t.Fatalf("the checkpoint holds container %q, not one of the instance's %v", id, before)
	}
	// Left running: the same container, the same process, still counting.
	if after := c.containers("counter"); after[id] != before[id] {
		t.Fatalf("after checkpoint the instance's containers are %v, were %v", after, before)
	}
	// The event is written beside the checkpoint's stream.
	eventually(t, 10*time.Second, "the Checkpoint event", func() bool { return strings.Contains(c.ok("events"), "Checkpoint") })

	// berth restore puts it back to the checkpoint: the count goes back
	// to where it was then, and on from there.
	var later int
	eventually(t, 10*time.Second, "the counter to go well past the checkpoint", func() bool {
		n := logged()
		later = n[len(n)-1]
		return later > atCheckpoint+100
	})
	if out := c.ok("restore", inst.Metadata.Name, "--input", archive); !strings.Contains(out, "restored") {
		t.Fatalf("restore printed %q", out)
	}
	eventually(t, 10*time.Second, "the restored counter to count", func() bool { return len(logged()) > 0 })
	if first := logged()[0]; first <= atCheckpoint || first >= later {
		t.Fatalf("after restore the counter began at %d; it was at %d before the checkpoint and %d before the restore", first, atCheckpoint, later)
	}
	if out := c.ok("events"); !strings.Contains(out, "Restore") {
		t.Errorf("no Restore event:\n%s", out)
	}
	junk := filepath.Join(t.TempDir(), "junk.tar.gz")
	if err := os.WriteFile(junk, []byte("not a checkpoint"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := c.run("restore", inst.Metadata.Name, "-i", junk); code == 0 || !strings.Contains(errOut, junk) {
		t.Errorf("restore from a file that is no checkpoint: exit %d, %q", code, errOut)
	}
	if _, errOut, code := c.run("restore", inst.Metadata.Name); code == 0 || !strings.Contains(errOut, "--input") {
		t.Errorf("restore without --input: exit %d, %q", code, errOut)
	}

	if _, errOut, code := c.applyYAML(webYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	web := c.waitRunning("web", 3)[0]
	_, errOut, code := c.run("checkpoint", web.Metadata.Name, "-o", filepath.Join(t.TempDir(), "web.tar.gz"))
	if code == 0 || !strings.Contains(errOut, "runc") {
		t.Errorf("checkpoint of a built-in instance: exit %d, %q", code, errOut)
	}
	if _, errOut, code := c.run("checkpoint", inst.Metadata.Name); code == 0 || !strings.Contains(errOut, "--output") {
		t.Errorf("checkpoint without --output: exit %d, %q", code, errOut)
	}
}
