package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// berth run of an image that does not exist fails and stores nothing.
func TestRunMissingImageLeavesNothing(t *testing.T) {
	c := startCluster(t, "--no-network")
	_, errOut, code := c.run("run", "--name", "ghost", "--timeout", "60s", "demo/nosuch:1", "sleep", "1")
	if code == 0 || !strings.Contains(errOut, "cannot start") || !strings.Contains(errOut, "removed") {
		t.Fatalf("run of a missing image: exit %d, stderr %q", code, errOut)
	}
	if _, _, code := c.run("get", "service", "ghost"); code == 0 {
		t.Fatal("the service of a run that failed is still stored")
	}
	eventually(t, 20*time.Second, "its instance to go", func() bool { return len(c.ownedBy("ghost")) == 0 })
}

// A cordoned node is said to be cordoned, not "not ready".
func TestCordonedNodeReported(t *testing.T) {
	c := startCluster(t, "--no-network")
	var nodes []api.Node
	if err := jsonOut(c.ok("get", "nodes", "-o", "json"), &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("nodes: %v %v", nodes, err)
	}
	node := nodes[0].Metadata.Name
	c.ok("node", "cordon", node)
	c.ok("run", "--no-wait", "--name", "waits", "demo/busybox:1", "sleep", "1d")
	var msg string
	eventually(t, 20*time.Second, "the instance to say why it waits", func() bool {
		list := c.ownedBy("waits")
		if len(list) == 1 {
			msg = list[0].Status.Message
		}
		return msg != ""
	})
	if !strings.Contains(msg, "cordoned") || strings.Contains(msg, "not ready") {
		t.Fatalf("unschedulable message on a cordoned node: %q", msg)
	}
	if out := c.ok("get", "nodes"); !strings.Contains(out, "Ready,SchedulingDisabled") {
		t.Fatalf("get nodes of a cordoned node:\n%s", out)
	}
}

// A fresh start records no NodeNotReady and no NodeReady event: the node
// was never down.
func TestFreshStartNoNodeWarnings(t *testing.T) {
	c := startCluster(t, "--no-network")
	// The agent's first heartbeats and a few controller passes.
	eventually(t, 20*time.Second, "the node to be Ready", func() bool {
		return strings.Contains(c.ok("get", "nodes"), "Ready")
	})
	c.ok("run", "--name", "probe", "demo/busybox:1", "sleep", "1d") // the control plane has acted since
	if ev := c.ok("get", "events"); strings.Contains(ev, "NodeNotReady") || strings.Contains(ev, "NodeReady") {
		t.Fatalf("events of a fresh start:\n%s", ev)
	}
}

// "berth is up" is said once the node has joined: the first command a
// user types after it lists the node.
func TestUpAnnouncedWithItsNode(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	up := exec.Command(berthBin, "--data-dir", e.dataDir, "up", "--no-network")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	up.Stdout, up.Stderr = w, w
	up.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := up.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() {
		_ = up.Process.Kill()
		_ = up.Wait()
		removeContainers(e)
	})
	said := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "berth is up") {
				said <- true
				break
			}
		}
		_, _ = io.Copy(io.Discard, r) // keep berth up's writes from blocking
	}()
	select {
	case <-said:
	case <-time.After(60 * time.Second):
		t.Fatal(`berth up did not say "berth is up" within 60 s`)
	}
	var nodes []api.Node
	if err := jsonOut(e.ok("get", "nodes", "-o", "json"), &nodes); err != nil || len(nodes) != 1 {
		t.Fatalf("nodes right after berth up said it is up: %v %v", nodes, err)
	}
}

// events -w -o json prints each event as a JSON document of its own, the
// ones listed first and then those that happen, which a JSON stream
// decoder reads one by one.
func TestEventsWatchJSON(t *testing.T) {
	c := startCluster(t, "--no-network")
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := exec.CommandContext(ctx, berthBin, "--data-dir", c.dataDir, "events", "-w", "-o", "json")
	out, err := w.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = w.Wait() }()
	got := make(chan api.Event)
	go func() {
		defer close(got)
		dec := json.NewDecoder(out)
		for {
			var e api.Event
			if err := dec.Decode(&e); err != nil {
				return
			}
			got <- e
		}
	}()
	c.ok("run", "--name", "watched", "demo/busybox:1", "sleep", "1d")
	deadline := time.After(60 * time.Second)
	for {
		select {
		case e, ok := <-got:
			if !ok {
				t.Fatal("events -w -o json ended, or printed something that is not a JSON event")
			}
			if strings.HasPrefix(e.Object.Name, "watched") {
				if e.Reason == "" || e.Metadata.Name == "" {
					t.Fatalf("event without reason or name: %+v", e)
				}
				return
			}
		case <-deadline:
			t.Fatal("no event about the new service's instance within 60 s from events -w -o json")
		}
	}
}
