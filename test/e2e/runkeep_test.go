package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// TestRunKeepsServiceOnTransientStartFailure runs `berth run` against a
// server whose one node's agent the test plays, reporting through the API
// what an agent reports of a start that failed. A start backing off for a
// cause that may pass (StartBackOff: the servers out of the node's reach)
// is waited on, and at --timeout the run fails saying the service is
// kept, which it is; a start that cannot work (StartError: no such image)
// has the service removed at once.
func TestRunKeepsServiceOnTransientStartFailure(t *testing.T) {
	sa, _, _ := startServer(t, "127.0.0.49", false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	capy := api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000}
	if _, err := sa.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"},
		Spec: api.NodeSpec{Address: "127.0.0.1", Capacity: capy, CapacityLimit: capy}}); err != nil {
		t.Fatal(err)
	}
	heartbeat := func() error {
		_, err := sa.admin.Nodes().UpdateStatus(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"},
			Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}})
		return err
	}
	if err := heartbeat(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for ctx.Err() == nil {
			_ = heartbeat()
			time.Sleep(time.Second)
		}
	}()

	// run starts `berth run` of service name, and fails its instance's
	// start as the agent would, with reason and message.
	run := func(name, timeout, reason, message string) (string, int) {
		t.Helper()
		cmd := exec.Command(berthBin, "--server", sa.apiURL, "--token", sa.tok, "--ca-file", sa.caFile,
			"run", "--name", name, "--timeout", timeout, "--pull", "never", "demo/app:1", "sleep", "1d")
		var errb bytes.Buffer
		cmd.Stderr = &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		in := sa.instanceOf("default", name, "bound to n1", func(in *api.Instance) bool { return in.Spec.Node == "n1" })
		in.Status = api.InstanceStatus{Phase: api.PhaseStarting, Reason: reason, Message: message, RestartAt: time.Now().Add(time.Minute).UTC()}
		if _, err := sa.admin.Instances().UpdateStatus(ctx, in); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return errb.String(), code
	}

	start := time.Now()
	errOut, code := run("flaky", "4s", api.ReasonStartBackOff, "pull demo/app:1 from https://s1:7443: dial tcp: connection refused: unavailable")
	if code == 0 || !strings.Contains(errOut, "connection refused") || !strings.Contains(errOut, "the service is kept") || strings.Contains(errOut, "removed") {
		t.Errorf("run whose start backs off: exit %d, stderr %q; want a failure saying the service is kept", code, errOut)
	}
	if time.Since(start) < 4*time.Second {
		t.Errorf("run whose start backs off returned after %v, before its --timeout of 4s", time.Since(start))
	}
	if _, err := sa.admin.Services().Get(ctx, "default", "flaky"); err != nil {
		t.Errorf("the service whose start backs off: %v; want it kept", err)
	}

	errOut, code = run("broken", "60s", api.ReasonStartError, "pull demo/app:1 from https://s1:7443: not found")
	if code == 0 || !strings.Contains(errOut, "cannot start") || !strings.Contains(errOut, "the service was removed") {
		t.Errorf("run whose image does not exist: exit %d, stderr %q; want a failure saying the service was removed", code, errOut)
	}
	if _, err := sa.admin.Services().Get(ctx, "default", "broken"); !errdefs.IsNotFound(err) {
		t.Errorf("the service whose image does not exist: %v; want it removed", err)
	}
}
