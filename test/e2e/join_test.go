package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// process is a berth process a test started; done closes when it exits.
type process struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

// stop sends SIGTERM and waits for the process to exit.
func (p *process) stop(t *testing.T) {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the process did not stop on SIGTERM")
	}
}

// startProcess starts berth with args in its own session, collecting its
// output, and stops it when the test ends, logging its output if the
// test failed.
func startProcess(t *testing.T, what string, args ...string) *process {
	t.Helper()
	out := &lockedBuffer{}
	cmd := exec.Command(berthBin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s's output:\n%s", what, out)
		}
	})
	return &process{cmd: cmd, out: out, done: done}
}

// TestAgentJoinsWithTokenThenUsesItsCertificate starts one `berth
// server` and one `berth agent` that joins with the join token the server
// printed on its first start: the node becomes Ready and runs an
// instance, its saved certificate writes nothing but its own node, a
// restarted agent needs no token, and a revoked token joins nobody.
func TestAgentJoinsWithTokenThenUsesItsCertificate(t *testing.T) {
	testenv.RequireRoot(t)
	// The agent's data dir; its containers outlive the agent by design
	// and go when the test ends.
	e := newAgentEnv(t)
	e.demoImage()
	srvDir := t.TempDir()
	host := "127.0.0.41"
	apiAddr := freeAddr(t, host)
	apiURL := "https://" + apiAddr
	// Node certificates last 6s here, so that the agent must renew its own
	// (after 4s) for the node to stay Ready.
	srv := startProcess(t, "berth server", "--data-dir", srvDir, "server", "-v", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, host), "--node-cert-ttl", "6s")

	// The server prints the agent's command line: where the token is, and
	// the pin; never the token's secret.
	hint := regexp.MustCompile(`berth agent --server (\S+) --token \$\(cat (\S+)\) --ca-pin (sha256:[0-9a-f]+)`)
	var m []string
	eventually(t, 30*time.Second, "the server's join hint", func() bool {
		m = hint.FindStringSubmatch(srv.out.String())
		return m != nil
	})
	if m[1] != apiURL {
		t.Fatalf("hint names server %s, want %s", m[1], apiURL)
	}
	pin := m[3]
	joinFile := filepath.Join(srvDir, "join-token")
	if m[2] != joinFile {
		t.Fatalf("hint names the token file %s, want %s", m[2], joinFile)
	}
	fi, err := os.Stat(joinFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("join token file: %v, %v; want mode 0600", fi, err)
	}
	b, _ := os.ReadFile(joinFile)
	token := strings.TrimSpace(string(b))
	if !strings.HasPrefix(token, "berth_") || strings.Contains(srv.out.String(), token) {
		t.Fatalf("join token file holds %q; the server must not print it", token)
	}

	adminToken, err := os.ReadFile(filepath.Join(srvDir, "tls", "token"))
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(srvDir, "tls", "ca.crt")
	admin, err := client.New(apiURL, client.WithToken(strings.TrimSpace(string(adminToken))), client.WithCAFile(caFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	agentArgs := []string{"--data-dir", e.dataDir, "agent", "-v", "--server", apiURL, "--name", "n1",
		"--address", "127.0.0.1", "--no-network", "--label", "zone=a"}
	agent := startProcess(t, "berth agent", append(agentArgs, "--token", token, "--ca-pin", pin)...)
	ready := func(what string) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() bool {
			n, err := admin.Nodes().Get(ctx, "", "n1")
			return err == nil && n.Status.Condition == api.NodeReady && time.Since(n.Status.LastHeartbeat) < 5*time.Second
		})
	}
	ready("node n1 Ready")

	// The agent keeps its certificate, the key private.
	credDir := filepath.Join(e.dataDir, "node")
	if fi, err := os.Stat(filepath.Join(credDir, client.NodeKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key: %v, %v; want mode 0600", fi, err)
	}
	serial := func() (string, time.Time) {
		t.Helper()
		nc, err := client.LoadNodeCredentials(credDir)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := nodecert.ParseCertificate(nc.Certificate)
		if err != nil {
			t.Fatal(err)
		}
		return leaf.SerialNumber.String(), leaf.NotAfter
	}
	first, firstEnd := serial()
	if life := time.Until(firstEnd); life > 6*time.Second {
		t.Fatalf("node certificate lasts %v, want the server's 6s", life)
	}
	// The agent renews before the end and stays Ready past it.
	eventually(t, 10*time.Second, "a renewed node certificate", func() bool {
		s, _ := serial()
		return s != first
	})
	time.Sleep(time.Until(firstEnd) + time.Second)
	ready("node n1 Ready past its first certificate's end")

	// An instance runs on the node, its status written by the agent with
	// its certificate.
	if out, errOut, code := e.run("--server", apiURL, "--token", strings.TrimSpace(string(adminToken)), "--ca-file", caFile,
		"run", "--name", "web", "demo/busybox:1", "sleep", "1d"); code != 0 {
		t.Fatalf("berth run: exit %d: %s%s", code, out, errOut)
	}
	eventually(t, 20*time.Second, "web running on n1", func() bool {
		list, _, err := admin.Instances().List(ctx, "")
		if err != nil {
			return false
		}
		for _, in := range list {
			if in.Spec.Owner.Name == "web" && in.Spec.Node == "n1" && in.Status.Phase == api.PhaseRunning {
				return true
			}
		}
		return false
	})

	// The node's certificate reads the cluster and writes its own node,
	// but not another node's status, nor anything an admin writes.
	nc, err := client.LoadNodeCredentials(credDir)
	if err != nil {
		t.Fatal(err)
	}
	node, err := client.New(apiURL, client.WithNodeCredentials(nc))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := node.Services().List(ctx, ""); err != nil {
		t.Errorf("node lists services: %v", err)
	}
	own := &api.Node{Metadata: api.Metadata{Name: "n1"},
		Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}}
	if _, err := node.Nodes().UpdateStatus(ctx, own); err != nil {
		t.Errorf("node writes its own status: %v", err)
	}
	other := &api.Node{Metadata: api.Metadata{Name: "n2"},
		Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}}
	if _, err := node.Nodes().UpdateStatus(ctx, other); !errdefs.IsForbidden(err) {
		t.Errorf("node n1 writes node n2's status: %v, want 403 Forbidden", err)
	}
	svc := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "evil"},
		Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/busybox:1"}}}
	if _, err := node.Services().Apply(ctx, svc); !errdefs.IsForbidden(err) {
		t.Errorf("node n1 creates a service: %v, want 403 Forbidden", err)
	}

	// The node reports its labels under node.berth/; an admin's label
	// and cordon survive the agent's next registration.
	n1, err := admin.Nodes().Get(ctx, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	if n1.Metadata.Labels["node.berth/zone"] != "a" || n1.Metadata.Labels["zone"] != "" {
		t.Fatalf("node labels %v, want the agent's zone=a as node.berth/zone", n1.Metadata.Labels)
	}
	if n1.Spec.CapacityLimit.MilliCPU == 0 || n1.Spec.CapacityLimit != n1.Spec.Capacity {
		t.Fatalf("capacity limit %+v after the first registration, want the capacity %+v", n1.Spec.CapacityLimit, n1.Spec.Capacity)
	}
	n1.Metadata.Labels["rack"] = "r1"
	n1.Metadata.Revision = 0
	if _, err := admin.Nodes().Apply(ctx, n1); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Nodes().Cordon(ctx, "n1"); err != nil {
		t.Fatal(err)
	}

	// Restarted without a token, the agent uses its saved certificate.
	agent.stop(t)
	again := startProcess(t, "restarted berth agent", agentArgs...)
	eventually(t, 20*time.Second, "the restarted agent on its certificate", func() bool {
		return strings.Contains(again.out.String(), "node n1 joined the cluster")
	})
	ready("node n1 Ready after the restart")
	if n1, err := admin.Nodes().Get(ctx, "", "n1"); err != nil || n1.Metadata.Labels["rack"] != "r1" || !n1.Spec.Unschedulable {
		t.Fatalf("after the agent registered again: %v %v, %v; want the admin's rack=r1 and cordon kept", n1.Metadata.Labels, n1.Spec.Unschedulable, err)
	}

	// A revoked token joins nobody (this agent trusts the CA by its file).
	if out, errOut, code := e.run("--server", apiURL, "--token", strings.TrimSpace(string(adminToken)), "--ca-file", caFile,
		"token", "revoke", token); code != 0 {
		t.Fatalf("berth token revoke: exit %d: %s%s", code, out, errOut)
	}
	second := t.TempDir()
	actx, acancel := context.WithTimeout(ctx, 20*time.Second)
	defer acancel()
	res, err := exec.CommandContext(actx, berthBin, "--data-dir", second, "agent", "--server", apiURL, "--name", "n2",
		"--address", "127.0.0.1", "--no-network", "--token", token, "--ca-file", caFile).CombinedOutput()
	if err == nil || actx.Err() != nil || !strings.Contains(string(res), "revoked") {
		t.Errorf("second agent with the revoked token: %v: %s; want it refused as revoked", err, res)
	}
	if _, err := os.Stat(filepath.Join(second, "node", client.NodeCertFile)); !os.IsNotExist(err) {
		t.Errorf("second agent saved a certificate: %v", err)
	}
	if _, err := admin.Nodes().Get(ctx, "", "n2"); !errdefs.IsNotFound(err) {
		t.Errorf("node n2: %v, want not found", err)
	}

	// A one-use token from the CLI.
	adminCLI := []string{"--server", apiURL, "--token", strings.TrimSpace(string(adminToken)), "--ca-file", caFile}
	out, errOut, code := e.run(append(adminCLI, "token", "create", "--uses", "1", "--ttl", "1h")...)
	once := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(once, "berth_") {
		t.Fatalf("berth token create --uses 1: exit %d: %s%s", code, out, errOut)
	}
	join := func(name, pin string) (string, time.Duration, error) {
		t.Helper()
		actx, acancel := context.WithTimeout(ctx, 20*time.Second)
		defer acancel()
		start := time.Now()
		res, err := exec.CommandContext(actx, berthBin, "--data-dir", t.TempDir(), "agent", "--server", apiURL, "--name", name,
			"--address", "127.0.0.1", "--no-network", "--token", once, "--ca-pin", pin).CombinedOutput()
		if actx.Err() != nil {
			t.Fatalf("agent joining as %s still runs after 20s: %s", name, res)
		}
		return string(res), time.Since(start), err
	}
	// A wrong pin fails at once, naming both pins, and uses nothing up.
	wrong := "sha256:" + strings.Repeat("0", 64)
	got, took, err := join("n3", wrong)
	if err == nil || took > 10*time.Second || !strings.Contains(got, "expected "+wrong) || !strings.Contains(got, pin) {
		t.Errorf("agent with a wrong --ca-pin: %v after %v: %s; want a non-zero exit within 10s naming both pins", err, took, got)
	}
	// n1 is taken, even once stopped and revoked: its name joins nobody
	// until an admin removes the node.
	again.stop(t)
	if out, errOut, code := e.run(append(adminCLI, "node", "revoke", "n1")...); code != 0 || !strings.Contains(out, "node/n1 revoked") {
		t.Fatalf("berth node revoke n1: exit %d: %s%s", code, out, errOut)
	}
	if nc, err := client.LoadNodeCredentials(credDir); err != nil {
		t.Fatal(err)
	} else if n, _ := client.New(apiURL, client.WithNodeCredentials(nc)); n != nil {
		if _, _, err := n.Nodes().List(ctx, ""); !errdefs.IsUnauthorized(err) {
			t.Errorf("the revoked certificate lists nodes: %v, want 401", err)
		}
	}
	if res, _, err := join("n1", pin); err == nil || !strings.Contains(res, "remove it first") {
		t.Errorf("join as n1 while the node exists: %v: %s; want it refused", err, res)
	}
	if out, errOut, code := e.run(append(adminCLI, "node", "rm", "n1")...); code != 0 || !strings.Contains(out, "node/n1 removed") {
		t.Fatalf("berth node rm n1: exit %d: %s%s", code, out, errOut)
	}
	for _, group := range []string{"node", "token"} {
		if out, errOut, code := e.run(append(adminCLI, group, "frobnicate")...); code == 0 || !strings.Contains(errOut, "unknown command") {
			t.Errorf("berth %s frobnicate: exit %d: %s%s; want an unknown command error", group, code, out, errOut)
		}
	}
	// Removed, the name joins again, with the token's one use.
	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	third := exec.CommandContext(tctx, berthBin, "--data-dir", t.TempDir(), "agent", "--server", apiURL, "--name", "n1",
		"--address", "127.0.0.1", "--no-network", "--token", once, "--ca-pin", pin)
	if err := third.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { tcancel(); _ = third.Wait() }()
	ready("n1 joined again once removed")
	if res, _, err := join("n4", pin); err == nil || !strings.Contains(res, "used up") {
		t.Errorf("second join with a one-use token: %v: %s; want it refused as used up", err, res)
	}
	out, _, _ = e.run(append(adminCLI, "token", "ls")...)
	if !strings.Contains(out, "1/1") || !strings.Contains(out, "used up") {
		t.Errorf("berth token ls does not show the token used up:\n%s", out)
	}
	// The first token, of any number of uses, counts its one join (a use
	// key of its own, not a rewrite of the token's record).
	firstID, _, _ := strings.Cut(strings.TrimPrefix(token, "berth_"), ".")
	if !regexp.MustCompile(`(?m)^` + firstID + `\s+revoked\s+\S+(\s+\S+)?\s+1\s`).MatchString(out) {
		t.Errorf("berth token ls does not show the first token (%s) revoked after 1 join:\n%s", firstID, out)
	}
}

// readToken reads the join token a server keeps in path.
func readToken(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("join token file: %v", err)
	}
	return strings.TrimSpace(string(b))
}
