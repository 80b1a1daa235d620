package e2e

import (
	"bufio"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestLogsFollowWaitsForInstances follows the logs of a service that has
// no instance yet (scaled to zero): berth logs -f says it waits, and
// prints the lines of the instance that comes once the service is scaled
// up, as kubectl logs -f waits for a deployment's pod.
func TestLogsFollowWaitsForInstances(t *testing.T) {
	c := startCluster(t, "--no-network")
	c.ok("run", "--name", "later", "--replicas", "0", "demo/busybox:1", "sh", "-c", "echo hello from later; exec sleep 1d")

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	cmd := exec.CommandContext(ctx, berthBin, "--data-dir", c.dataDir, "logs", "-f", "later")
	stdout, err := cmd.StdoutPipe()
	check(t, err)
	errb := &lockedBuffer{}
	cmd.Stderr = errb
	check(t, cmd.Start())
	exited := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		exited <- cmd.Wait()
	}()
	eventually(t, 20*time.Second, "logs -f to say it waits", func() bool {
		select {
		case err := <-exited:
			t.Fatalf("logs -f of a service without instances exited: %v; stderr %q", err, errb.String())
		default:
		}
		return strings.Contains(errb.String(), "no instances yet: waiting")
	})

	c.ok("scale", "later=1")
	deadline := time.After(60 * time.Second)
	for {
		select {
		case line := <-lines:
			if strings.Contains(line, "hello from later") {
				if !strings.HasPrefix(line, "[later-") {
					t.Errorf("line %q: want it prefixed with its instance", line)
				}
				return
			}
		case err := <-exited:
			t.Fatalf("logs -f exited before the instance's line: %v; stderr %q", err, errb.String())
		case <-deadline:
			t.Fatalf("no line of the new instance within 60s; stderr %q", errb.String())
		}
	}
}
