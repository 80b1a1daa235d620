package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

const globalYAML = `kind: Service
name: every
mode: global
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.01, memory: 8Mi}
  files: [{secret: db, path: /run/secrets/db}]
placement:
  constraints: [{key: node.berth/zone, op: "!=", values: [none]}]
`

// A global service on one server and agents on loopback: one instance on
// every node; a node that joins gets one, a cordoned node and a drained
// one lose theirs, and a node the constraints leave out gets none. The
// secret the instances mount is on the nodes that run one, and on no
// other: never on the node left out, and gone from a drained one.
func TestGlobalServiceFollowsNodes(t *testing.T) {
	testenv.RequireRoot(t)
	srvDir := t.TempDir()
	host := "127.0.0.47"
	apiAddr := freeAddr(t, host)
	apiURL := "https://" + apiAddr
	srv := startProcess(t, "berth server", "--data-dir", srvDir, "server", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, host))
	joinFile := filepath.Join(srvDir, "join-token")
	tokenFile := filepath.Join(srvDir, "tls", "token")
	eventually(t, 30*time.Second, "the server's join token and admin token", func() bool {
		_, e1 := os.Stat(joinFile)
		_, e2 := os.Stat(tokenFile)
		return e1 == nil && e2 == nil && strings.Contains(srv.out.String(), "--ca-pin")
	})
	b, _ := os.ReadFile(joinFile)
	join := strings.TrimSpace(string(b))
	b, _ = os.ReadFile(tokenFile)
	adminToken := strings.TrimSpace(string(b))
	caFile := filepath.Join(srvDir, "tls", "ca.crt")
	admin, err := client.New(apiURL, client.WithToken(adminToken), client.WithCAFile(caFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 110*time.Second)
	defer cancel()
	cli := newAgentEnv(t)
	berth := func(args ...string) (string, string, int) {
		return cli.run(append([]string{"--server", apiURL, "--token", adminToken, "--ca-file", caFile}, args...)...)
	}
	dataDirs := map[string]string{}
	agent := func(name, zone string) {
		e := newAgentEnv(t)
		dataDirs[name] = filepath.Join(e.dataDir, "data")
		// The agent keeps its instances' data on a tmpfs there.
		t.Cleanup(func() { _ = unix.Unmount(dataDirs[name], unix.MNT_DETACH) })
		e.demoImage()
		startProcess(t, "berth agent "+name, "--data-dir", e.dataDir, "agent", "--server", apiURL, "--name", name,
			"--address", "127.0.0.1", "--no-network", "--label", "zone="+zone, "--token", join, "--ca-file", caFile)
		eventually(t, 30*time.Second, "node "+name+" Ready", func() bool {
			n, err := admin.Nodes().Get(ctx, "", name)
			return err == nil && n.Status.Condition == api.NodeReady
		})
	}
	// Which nodes run a running instance of the service.
	placed := func() map[string]int {
		out := map[string]int{}
		list, _, err := admin.Instances().List(ctx, "default")
		if err != nil {
			return nil
		}
		for _, in := range list {
			if in.Spec.Owner.Name == "every" && in.Status.Phase == api.PhaseRunning {
				out[in.Spec.Node]++
			}
		}
		return out
	}
	want := func(what string, nodes ...string) {
		t.Helper()
		var got map[string]int
		eventually(t, 40*time.Second, what, func() bool {
			got = placed()
			if len(got) != len(nodes) {
				return false
			}
			for _, n := range nodes {
				if got[n] != 1 {
					return false
				}
			}
			return true
		})
	}

	const plain = "global-s3cret-5d2a"
	if _, errOut, code := berth("secret", "create", "db", "--from-literal", "password="+plain); code != 0 {
		t.Fatalf("secret create: %s", errOut)
	}
	agent("n1", "a")
	agent("n2", "b")
	agent("n0", "none") // left out by the constraint
	f := filepath.Join(t.TempDir(), "every.yaml")
	if err := os.WriteFile(f, []byte(globalYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := berth("apply", "-f", f); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	want("one instance on n1 and n2", "n1", "n2")
	for _, n := range []string{"n1", "n2"} {
		if !treeHolds(t, dataDirs[n], plain) {
			t.Errorf("node %s runs a user of the secret but does not hold it", n)
		}
	}
	if treeHolds(t, dataDirs["n0"], plain) {
		t.Error("node n0 runs no user of the secret but holds it")
	}

	agent("n3", "c")
	want("the joining node n3 to get one", "n1", "n2", "n3")

	if _, errOut, code := berth("node", "cordon", "n2"); code != 0 {
		t.Fatalf("cordon: %s", errOut)
	}
	want("the cordoned node n2 to lose its instance", "n1", "n3")
	if _, errOut, code := berth("node", "drain", "n3"); code != 0 {
		t.Fatalf("drain: %s", errOut)
	}
	want("the drained node n3 to lose its instance", "n1")
	eventually(t, 30*time.Second, "the secret gone from drained n3", func() bool { return !treeHolds(t, dataDirs["n3"], plain) })
	if _, errOut, code := berth("node", "uncordon", "n2"); code != 0 {
		t.Fatalf("uncordon: %s", errOut)
	}
	want("the uncordoned node n2 to get one again", "n1", "n2")
	if out := placed(); out["n0"] != 0 {
		t.Errorf("node n0, outside the constraint, runs %d instances", out["n0"])
	}
}

// heartbeatInterval is the agents' heartbeat interval (the agent's
// default, which the LAN's agents keep).
const heartbeatInterval = 2 * time.Second

const globalLANYAML = `kind: Service
name: every
mode: global
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.01, memory: 8Mi}
---
kind: Service
name: solo
replicas: 1
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.01, memory: 8Mi}
  files: [{secret: solo, path: /run/secrets/solo, mode: 0400}]
placement:
  constraints: [{key: node.name, op: "==", values: [n2]}]
`

// A global service on the LAN of network namespaces (a server and three
// agents, each a machine of its own): one instance on each of the three
// nodes; a fourth node that joins gets one, bound to it and running
// within the agents' heartbeat interval of its join; a drained node
// loses its instance. Beside it, a service of one replica pinned to n2 mounts a
// secret: the secret's value is on n2 (its data tmpfs) and nowhere on the
// other nodes, and leaves n2 once the service is scaled to 0.
func TestGlobalServiceOnLAN(t *testing.T) {
	start := time.Now()
	l := startLANOf(t, 1, 3)
	t.Logf("LAN of 1 server and 3 agents ready after %v", time.Since(start).Round(time.Millisecond))
	const plain = "lan-s3cret-8c1f"
	_, err := l.Admin("secret", "create", "solo", "--from-literal", "password="+plain)
	check(t, err)
	check(t, l.Apply(globalLANYAML))

	// running lists owner's running instances by node.
	running := func(owner string) map[string][]api.Instance {
		list, err := l.Instances()
		check(t, err)
		out := map[string][]api.Instance{}
		for _, in := range list {
			if in.Spec.Owner.Name == owner && in.Status.Phase == api.PhaseRunning {
				out[in.Spec.Node] = append(out[in.Spec.Node], in)
			}
		}
		return out
	}
	want := func(what, owner string, nodes ...string) map[string][]api.Instance {
		t.Helper()
		var got map[string][]api.Instance
		eventually(t, 60*time.Second, what, func() bool {
			got = running(owner)
			if len(got) != len(nodes) {
				return false
			}
			for _, n := range nodes {
				if len(got[n]) != 1 {
					return false
				}
			}
			return true
		})
		return got
	}
	want("one instance of every on each of n1, n2, n3", "every", "n1", "n2", "n3")
	want("solo on n2", "solo", "n2")

	// The secret is on the node that runs its user, in the data tmpfs,
	// and nowhere in the data dirs of the others.
	if !treeHolds(t, filepath.Join(l.Host("n2").DataDir, "data"), plain) {
		t.Error("n2 runs the secret's user but its data tmpfs does not hold it")
	}
	for _, n := range []string{"n1", "n3"} {
		if treeHolds(t, l.Host(n).DataDir, plain) {
			t.Errorf("node %s runs no user of the secret but holds it", n)
		}
	}

	n4, err := l.AddAgent()
	check(t, err)
	var node api.Node
	eventually(t, 60*time.Second, "n4 Ready", func() bool {
		nodes, err := l.Nodes()
		check(t, err)
		for _, n := range nodes {
			if n.Metadata.Name == n4.Name && n.Status.Condition == api.NodeReady {
				node = n
				return true
			}
		}
		return false
	})
	got := want("n4 to get an instance of every", "every", "n1", "n2", "n3", "n4")
	in := got["n4"][0]
	// From the node's registration (before its first heartbeat made it
	// Ready) to its instance stored bound to it, and to that running.
	bound := in.Metadata.CreatedAt.Sub(node.Metadata.CreatedAt)
	started := in.Status.StartedAt.Sub(node.Metadata.CreatedAt)
	t.Logf("n4 joined: its instance bound after %v, running after %v (heartbeat interval %v)",
		bound.Round(time.Millisecond), started.Round(time.Millisecond), heartbeatInterval)
	if bound > heartbeatInterval || bound < 0 {
		t.Errorf("n4's instance bound %v after its join, want within the heartbeat interval %v", bound, heartbeatInterval)
	}
	// Running also takes the node's pull and start, which a loaded CI
	// machine can stretch: held to a looser bound than the placement.
	if started > 5*heartbeatInterval {
		t.Errorf("n4's instance running %v after its join, want within 5 heartbeat intervals (%v)", started, 5*heartbeatInterval)
	}
	if treeHolds(t, n4.DataDir, plain) {
		t.Error("n4 runs no user of the secret but holds it")
	}

	_, err = l.Admin("node", "drain", "n1", "--wait", "--timeout", "1m")
	check(t, err)
	want("the drained n1 to lose its instance", "every", "n2", "n3", "n4")
	eventually(t, 30*time.Second, "no container of every left running on n1", func() bool {
		return runningOf(t, l.Host("n1"), "every") == 0
	})

	_, err = l.Admin("scale", "solo=0")
	check(t, err)
	eventually(t, 30*time.Second, "the secret gone from n2 once its last user stopped", func() bool {
		return len(running("solo")) == 0 && !treeHolds(t, l.Host("n2").DataDir, plain)
	})
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
