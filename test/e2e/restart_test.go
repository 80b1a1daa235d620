package e2e

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// apiClient talks to the cluster's API over its socket, for what the CLI
// does not show: every instance ever made, seen through a watch.
func (c *cluster) apiClient() *client.Client {
	c.t.Helper()
	cl, err := client.New("unix://" + filepath.Join(c.dataDir, "berth.sock"))
	if err != nil {
		c.t.Fatal(err)
	}
	return cl
}

func jsonOut(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// instanceLog records every instance of owner the store shows, from now on,
// with each version of its status.
type instanceLog struct {
	mu      sync.Mutex
	seen    map[string][]api.InstanceStatus
	deleted int
}

func (c *cluster) watchInstances(owner string) *instanceLog {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c.t.Cleanup(cancel)
	events, err := c.apiClient().Instances().Watch(ctx, "default", 0)
	if err != nil {
		c.t.Fatal(err)
	}
	l := &instanceLog{seen: map[string][]api.InstanceStatus{}}
	go func() {
		for ev := range events {
			if ev.Err != nil || ev.Object == nil || ev.Object.Spec.Owner.Name != owner {
				continue
			}
			l.mu.Lock()
			l.seen[ev.Object.Metadata.Name] = append(l.seen[ev.Object.Metadata.Name], ev.Object.Status)
			if ev.Type == "Deleted" {
				l.deleted++
			}
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *instanceLog) names() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n := range l.seen {
		out = append(out, n)
	}
	return out
}

func (l *instanceLog) deletions() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.deleted
}

func (l *instanceLog) statuses(name string) []api.InstanceStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]api.InstanceStatus(nil), l.seen[name]...)
}

// An instance that exits under restart: never stays down: one instance is
// made, it stays Failed with its exit code, the service says so (status
// and an event), and its output stays readable.
func TestRestartNeverStaysDown(t *testing.T) {
	c := startCluster(t, "--no-network")
	seen := c.watchInstances("errs")
	c.ok("run", "--no-wait", "--name", "errs", "--restart", "never", "demo/busybox:1", "sh", "-c", "echo out; exit 4")
	var failed api.Instance
	eventually(t, 30*time.Second, "the instance to be Failed", func() bool {
		list := c.ownedBy("errs")
		if len(list) == 1 && list[0].Status.Phase == api.PhaseFailed {
			failed = list[0]
			return true
		}
		return false
	})
	if failed.Status.ExitCode != 4 {
		t.Errorf("exit code %d, want 4", failed.Status.ExitCode)
	}
	// Give a loop time to show itself: several controller resyncs.
	var svc api.Service
	eventually(t, 20*time.Second, "the service to report the exit", func() bool {
		if err := jsonOut(c.ok("get", "service", "errs", "-o", "json"), &svc); err != nil {
			t.Fatal(err)
		}
		return strings.Contains(svc.Status.Message, "not restarted (restart: never)")
	})
	if !strings.Contains(c.ok("get", "events"), "InstanceExited") {
		t.Errorf("no InstanceExited event:\n%s", c.ok("get", "events"))
	}
	// The controller has seen the exit and kept the instance (above); a
	// replacement loop made several a second, so a short window shows one.
	time.Sleep(3 * time.Second)
	if names := seen.names(); len(names) != 1 {
		t.Fatalf("%d instances made, want 1: %v", len(names), names)
	}
	if list := c.ownedBy("errs"); len(list) != 1 || list[0].Metadata.Name != failed.Metadata.Name || list[0].Status.Restarts != 0 {
		t.Fatalf("instances now: %+v", list)
	}
	if got := c.ok("get", "service", "errs"); !strings.Contains(got, "0/1") {
		t.Errorf("service READY not 0/1:\n%s", got)
	}
	if got := c.ok("logs", "errs"); !strings.Contains(got, "out") {
		t.Errorf("logs of the exited instance: %q", got)
	}
}

// on-failure with exit 0 is done: Succeeded, not replaced.
func TestRestartOnFailureSucceeds(t *testing.T) {
	c := startCluster(t, "--no-network")
	seen := c.watchInstances("done")
	c.ok("run", "--name", "done", "--restart", "on-failure", "demo/busybox:1", "sh", "-c", "echo finished")
	eventually(t, 30*time.Second, "the instance to be Succeeded", func() bool {
		list := c.ownedBy("done")
		return len(list) == 1 && list[0].Status.Phase == api.PhaseSucceeded
	})
	time.Sleep(3 * time.Second) // a window for a replacement loop to show itself
	if names := seen.names(); len(names) != 1 {
		t.Fatalf("%d instances made, want 1: %v", len(names), names)
	}
	if got := c.ok("logs", "done"); !strings.Contains(got, "finished") {
		t.Errorf("logs of the finished instance: %q", got)
	}
}

// A crash-looping instance restarts in place with a growing delay, which
// ps shows, and its last output stays readable.
func TestRestartBackoffGrows(t *testing.T) {
	c := startCluster(t, "--no-network")
	seen := c.watchInstances("crash")
	c.ok("run", "--no-wait", "--name", "crash", "demo/busybox:1", "sh", "-c", "echo crashing; exit 1")
	var name string
	eventually(t, 30*time.Second, "five restarts", func() bool {
		list := c.ownedBy("crash")
		if len(list) != 1 {
			return false
		}
		name = list[0].Metadata.Name
		return list[0].Status.Restarts >= 5
	})
	if names := seen.names(); len(names) != 1 {
		t.Fatalf("%d instances made, want 1 restarted in place: %v", len(names), names)
	}
	// Starts by attempt, from the watched statuses.
	started := map[int]time.Time{}
	for _, st := range seen.statuses(name) {
		if !st.StartedAt.IsZero() {
			started[st.Restarts] = st.StartedAt
		}
	}
	var gaps []time.Duration
	for a := 1; a <= 5; a++ {
		if started[a].IsZero() || started[a-1].IsZero() {
			continue
		}
		gaps = append(gaps, started[a].Sub(started[a-1]))
	}
	if len(gaps) < 3 {
		t.Fatalf("saw the starts of too few attempts: %v", started)
	}
	// 100 ms doubling: the last gap seen is at least twice the first.
	if first, last := gaps[0], gaps[len(gaps)-1]; last < 2*first || last < 400*time.Millisecond {
		t.Errorf("delays between restarts do not grow: %v", gaps)
	}
	eventually(t, 20*time.Second, "ps to show the backoff", func() bool {
		return strings.Contains(c.ok("ps"), "BackOff, restarting in")
	})
	if got := c.ok("logs", "crash"); !strings.Contains(got, "crashing") {
		t.Errorf("logs of the crash-looping instance: %q", got)
	}
}
