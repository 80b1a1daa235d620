package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testing/unixapi"
)

// serveCluster runs an API server and the controller on a fresh data dir,
// with ready nodes named as given.
func serveCluster(t *testing.T, nodes ...string) (*globals, *store.Store) {
	t.Helper()
	srv := unixapi.Serve(t, apiserver.Config{})
	st := srv.Store
	ctx, cancel := context.WithCancel(context.Background())
	for _, name := range nodes {
		n := &api.Node{Metadata: api.Metadata{Name: name}, Spec: api.NodeSpec{
			Capacity: api.NodeCapacity{MilliCPU: 4000, Memory: 8 << 30, Pids: 10000}}}
		if err := st.Create(ctx, n); err != nil {
			t.Fatal(err)
		}
		n.Status.Condition = api.NodeReady
		if err := st.UpdateStatus(ctx, n, 0); err != nil {
			t.Fatal(err)
		}
		if err := st.KeepNodeAlive(ctx, name, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	m := controller.NewManager(st, controller.Options{Logger: slog.New(slog.DiscardHandler), Resync: 50 * time.Millisecond})
	go func() { done <- m.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &globals{dataDir: srv.Dir}, st
}

func runNode(t *testing.T, g *globals, args ...string) (string, error) {
	t.Helper()
	cmd := &cobra.Command{Use: "berth", SilenceUsage: true, SilenceErrors: true}
	cmd.PersistentFlags().StringVarP(&g.output, "output", "o", "", "")
	cmd.AddCommand(newNodeCmd(g))
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append([]string{"node"}, args...))
	err := cmd.ExecuteContext(t.Context())
	return out.String(), err
}

// row is the node ls line of node, split into columns.
func row(t *testing.T, out, node string) []string {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == node {
			return f
		}
	}
	t.Fatalf("no row for %s in:\n%s", node, out)
	return nil
}

func TestNodeCommands(t *testing.T) {
	g, st := serveCluster(t, "n1", "n2")
	ctx := t.Context()
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 2,
		Template:  api.Template{Image: "demo/busybox:1"},
		Placement: api.Placement{AntiAffinity: true}}}
	if err := st.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	// One instance on each node, placed by the controller.
	changes := st.Watch(ctx, api.KindInstance, "", 0)
	deadline := time.After(20 * time.Second)
	for {
		out, err := runNode(t, g, "ls")
		if err != nil {
			t.Fatal(err)
		}
		if row(t, out, "n1")[3] == "1" && row(t, out, "n2")[3] == "1" {
			if !strings.Contains(out, "SCHEDULING") || row(t, out, "n1")[2] != "Ready" {
				t.Fatalf("node ls:\n%s", out)
			}
			break
		}
		select {
		case _, ok := <-changes:
			if !ok {
				t.Fatal("the instance watch ended")
			}
		case <-deadline:
			t.Fatalf("instances not placed on both nodes:\n%s", out)
		}
	}

	out, err := runNode(t, g, "cordon", "n2")
	if err != nil || strings.TrimSpace(out) != "node/n2 cordoned" {
		t.Fatalf("cordon: %q %v", out, err)
	}
	out, _ = runNode(t, g, "ls")
	if got := row(t, out, "n2")[2]; got != "Cordoned" {
		t.Errorf("n2 after cordon: %s", got)
	}

	// Draining n2 moves nothing anywhere (anti-affinity, n1 is taken):
	// the instance goes, its replacement waits, and the drain finishes.
	out, err = runNode(t, g, "drain", "n2", "--wait", "--timeout", "20s", "--interval", "20ms")
	if err != nil {
		t.Fatalf("drain --wait: %v\n%s", err, out)
	}
	if !strings.HasSuffix(out, "node/n2 drained\n") {
		t.Errorf("drain --wait printed:\n%s", out)
	}
	out, _ = runNode(t, g, "ls", "-o", "wide")
	if f := row(t, out, "n2"); f[2] != "Cordoned" || f[3] != "0" {
		t.Errorf("n2 after its drain: %v", f)
	}

	// n2 is drained, so its slot is free: n1 may drain.
	if out, err = runNode(t, g, "drain", "n1"); err != nil || !strings.HasPrefix(out, "node/n1 dr") {
		t.Fatalf("drain n1: %q %v", out, err)
	}
	t.Logf("drain n1 printed %q", out)
	if out, err := runNode(t, g, "uncordon", "n2"); err != nil || strings.TrimSpace(out) != "node/n2 uncordoned" {
		t.Fatalf("uncordon: %q %v", out, err)
	}
	// n1's instance moves to n2, uncordoned; n1's drain then finishes.
	if out, err = runNode(t, g, "drain", "n1", "--wait", "--timeout", "20s", "--interval", "20ms"); err != nil {
		t.Fatalf("drain n1 --wait: %v\n%s", err, out)
	}
	out, _ = runNode(t, g, "ls")
	if f := row(t, out, "n1"); f[2] != "Cordoned" || f[3] != "0" {
		t.Errorf("n1 after its drain: %v", f)
	}
	// The drain ends once n1 is empty; the replacement lands on n2 in the
	// scheduler's next pass, so wait for it.
	for deadline := time.Now().Add(20 * time.Second); ; {
		out, _ = runNode(t, g, "ls")
		f := row(t, out, "n2")
		if f[2] == "Ready" && f[3] == "1" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n2 after n1's drain: %v", f)
		}
		time.Sleep(20 * time.Millisecond)
	}

	out, err = runNode(t, g, "ls", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var nodes []api.Node
	if err := json.Unmarshal([]byte(out), &nodes); err != nil || len(nodes) != 2 || !nodes[0].Spec.Unschedulable {
		t.Errorf("ls -o json: %v %+v", err, nodes)
	}
}
