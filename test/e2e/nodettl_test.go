package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestServerNodeTTL: `berth server --node-ttl` sets how soon a node whose
// heartbeats stop is NotReady (3 s here, where the default would take
// 10), and a value out of its bounds is refused, naming the flag.
func TestServerNodeTTL(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	for _, bad := range []string{"1s", "11m"} {
		_, errOut, code := e.run("server", "--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:1", "--node-ttl", bad)
		if code == 0 || !strings.Contains(errOut, "--node-ttl") {
			t.Errorf("berth server --node-ttl %s: exit %d, stderr %q; want non-zero naming --node-ttl", bad, code, errOut)
		}
	}

	const ttl = 3 * time.Second
	dir := t.TempDir()
	srvDir := filepath.Join(dir, "srv")
	apiAddr := freeAddr(t, "127.0.0.1")
	url := "https://" + apiAddr
	startProcess(t, "berth server", "--data-dir", srvDir, "server", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, "127.0.0.1"), "--node-ttl", ttl.String())
	token := filepath.Join(srvDir, "tls", "token")
	eventually(t, 30*time.Second, "the server's join token", func() bool {
		_, err1 := os.Stat(filepath.Join(srvDir, "join-token"))
		_, err2 := os.Stat(token)
		return err1 == nil && err2 == nil
	})
	ca := filepath.Join(srvDir, "tls", "ca.crt")
	fleet := startProcess(t, "berth sim agents", "--data-dir", filepath.Join(dir, "fleet"), "--server", url,
		"--token", readToken(t, filepath.Join(srvDir, "join-token")), "--ca-file", ca, "sim", "agents", "--count", "1", "--prefix", "ttl")
	admin := &env{t: t, dataDir: filepath.Join(dir, "cli")}
	node := func() api.Node {
		var n api.Node
		out := admin.ok("--server", url, "--token", readToken(t, token), "--ca-file", ca, "get", "node", "ttl-00000", "-o", "json")
		if err := json.Unmarshal([]byte(out), &n); err != nil {
			t.Fatalf("berth get node -o json: %v: %s", err, out)
		}
		return n
	}
	eventually(t, 60*time.Second, "the hollow node Ready", func() bool {
		return strings.Contains(fleet.out.String(), "hollow nodes registered") && node().Status.Condition == api.NodeReady
	})

	// Its machine dies: no goodbye, its heartbeats just stop.
	_ = fleet.cmd.Process.Signal(syscall.SIGKILL)
	<-fleet.done
	stopped := time.Now()
	eventually(t, 30*time.Second, "the node NotReady", func() bool { return node().Status.Condition == api.NodeNotReady })
	// Its last beat came up to a beat interval (a third of the TTL)
	// before the kill; the margin is for a busy machine.
	if took, limit := time.Since(stopped), ttl+3*time.Second; took > limit {
		t.Errorf("the node NotReady %v after its heartbeats stopped; want within --node-ttl %v and a margin, %v", took, ttl, limit)
	}
}

// TestNodeLossFoundAfterLeaderFailover: two hollow nodes beat through a
// server that leads neither etcd nor the controllers, and the server that
// leads both is killed. The nodes stay Ready through the failover (a new
// etcd leader gives every lease a whole TTL afresh, and the new
// controllers wait a TTL before they give up on a node), and a node that
// dies afterwards is found NotReady within the TTL and a margin.
func TestNodeLossFoundAfterLeaderFailover(t *testing.T) {
	testenv.RequireRoot(t)
	const ttl = 4 * time.Second
	c := startHACluster(t, "--node-ttl", ttl.String())
	victim, term, via, fleet := c.fleetBesideTheLeader(t)
	fleet("live")
	doomed := fleet("doomed")
	conditions := func() map[string]api.NodeCondition {
		out, errOut, code := c.run(via, "get", "nodes", "-o", "json")
		if code != 0 {
			t.Fatalf("get nodes through %s: exit %d: %s", via.name, code, errOut)
		}
		var nodes []api.Node
		if err := json.Unmarshal([]byte(out), &nodes); err != nil {
			t.Fatalf("get nodes -o json: %v: %s", err, out)
		}
		conds := map[string]api.NodeCondition{}
		for _, n := range nodes {
			conds[n.Metadata.Name] = n.Status.Condition
		}
		return conds
	}
	bothReady := func() bool {
		conds := conditions()
		return conds["live-00000"] == api.NodeReady && conds["doomed-00000"] == api.NodeReady
	}
	eventually(t, 60*time.Second, "both hollow nodes Ready", bothReady)

	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Wait()
	victim.killed = true
	var survivors []string
	for _, s := range c.servers {
		if !s.killed {
			survivors = append(survivors, "http://"+s.etcd)
		}
	}
	cl := c.etcd(survivors...)
	eventually(t, 30*time.Second, "a new controller leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t2, err := leader.Leader(ctx, cl, "/berth/leader/controller")
		return err == nil && t2.Identity != victim.name && t2.Revision > term.Revision
	})
	// Through the new controllers' wait and a TTL past it, no node is
	// taken for lost: their beats went on.
	for until := time.Now().Add(2 * ttl); time.Now().Before(until); time.Sleep(200 * time.Millisecond) {
		if !bothReady() {
			t.Fatalf("a node beating throughout is not Ready after the failover: %v", conditions())
		}
	}

	_ = doomed.cmd.Process.Signal(syscall.SIGKILL)
	<-doomed.done
	stopped := time.Now()
	eventually(t, 30*time.Second, "the dead node NotReady", func() bool { return conditions()["doomed-00000"] == api.NodeNotReady })
	t.Logf("after the failover, a dead node NotReady %v after its heartbeats stopped (TTL %v)", time.Since(stopped).Round(time.Millisecond), ttl)
	if took, limit := time.Since(stopped), ttl+4*time.Second; took > limit {
		t.Errorf("the dead node NotReady %v after its heartbeats stopped; want within the TTL %v and a margin, %v", took, ttl, limit)
	}
	if conds := conditions(); conds["live-00000"] != api.NodeReady {
		t.Errorf("the live node is %s, want Ready", conds["live-00000"])
	}
}

// TestNodeLostWithTheLeaderGivenUpWithinTTL: a hollow node dies with the
// server that leads etcd and the controllers. Its heartbeats went through
// another server, which sees them stop for a TTL and says so (its lapsed
// key): the new controllers give up its instance as soon as they lead,
// where they waited a node TTL of their own first. The node beating on
// keeps its instance.
func TestNodeLostWithTheLeaderGivenUpWithinTTL(t *testing.T) {
	testenv.RequireRoot(t)
	// As long a leader TTL as a node TTL: the new term begins about when
	// the node lapses (a new etcd leader gives the old term's lease a
	// whole TTL afresh), and a wait of a node TTL from then is plain.
	const ttl = 8 * time.Second
	c := startHACluster(t, "--node-ttl", ttl.String(), "--leader-ttl", ttl.String())
	victim, term, via, fleet := c.fleetBesideTheLeader(t)
	fleet("live")
	doomed := fleet("doomed")
	eventually(t, 60*time.Second, "both hollow nodes Ready", func() bool {
		out, _, code := c.run(via, "get", "nodes", "-o", "json")
		var nodes []api.Node
		if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil {
			return false
		}
		ready := 0
		for _, n := range nodes {
			if n.Status.Condition == api.NodeReady {
				ready++
			}
		}
		return ready == 2
	})
	spec := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(spec, []byte("kind: Service\nname: web\nreplicas: 2\nplacement:\n  spread: [node]\ntemplate:\n  image: sim/none:1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := c.run(via, "apply", "-f", spec); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	// Through a survivor, once the victim is gone.
	instances := func() []api.Instance {
		out, errOut, code := c.run(via, "get", "instances", "-o", "json")
		if code != 0 {
			t.Logf("get instances through %s: exit %d: %s", via.name, code, errOut)
			return nil
		}
		var list []api.Instance
		if err := json.Unmarshal([]byte(out), &list); err != nil {
			t.Fatalf("get instances -o json: %v: %s", err, out)
		}
		return list
	}
	running := func(node string) (names []string) {
		for _, in := range instances() {
			if in.Spec.Node == node && in.Status.Phase == api.PhaseRunning {
				names = append(names, in.Metadata.Name)
			}
		}
		return names
	}
	eventually(t, 60*time.Second, "web Running on both hollow nodes", func() bool {
		return len(running("live-00000")) == 1 && len(running("doomed-00000")) == 1
	})
	kept := running("live-00000")[0]

	// The leading server and the node die together.
	_ = victim.cmd.Process.Kill()
	_ = doomed.cmd.Process.Signal(syscall.SIGKILL)
	stopped := time.Now()
	_ = victim.cmd.Wait()
	victim.killed = true
	<-doomed.done
	cl := c.etcd("http://" + via.etcd)
	eventually(t, 60*time.Second, "a new controller leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		t2, err := leader.Leader(ctx, cl, "/berth/leader/controller")
		return err == nil && t2.Identity != victim.name && t2.Revision > term.Revision
	})
	led := time.Now()
	eventually(t, 60*time.Second, "the dead node's instance given up", func() bool {
		list := instances()
		for _, in := range list {
			if in.Spec.Node == "doomed-00000" && !in.Status.Phase.Terminal() {
				return false
			}
		}
		return list != nil
	})
	t.Logf("the dead node's instance given up %v after it and the leader died, %v after the new term began (node and leader TTL %v)",
		time.Since(stopped).Round(time.Millisecond), time.Since(led).Round(time.Millisecond), ttl)
	// Its node lapsed about when the term began: at most the term's
	// first passes, and the polls, after it.
	if took, limit := time.Since(led), ttl/2; took > limit {
		t.Errorf("the dead node's instance given up %v after the new term began; want within %v, not a node TTL (%v) later", took, limit, ttl)
	}
	eventually(t, 30*time.Second, "web's replacement Running on the live node", func() bool { return len(running("live-00000")) == 2 })
	for _, in := range instances() {
		if in.Metadata.Name == kept && in.Status.Phase != api.PhaseRunning {
			t.Errorf("the live node's instance %s is %s, want Running throughout", kept, in.Status.Phase)
		}
	}
}

// fleetBesideTheLeader finds the server that leads both etcd and the
// controllers, with its term, and another that leads nothing, through
// which fleet starts one hollow node under prefix in a process of its own.
func (c *haCluster) fleetBesideTheLeader(t *testing.T) (victim *haServer, term leader.Term, via *haServer, fleet func(prefix string) *process) {
	t.Helper()
	victim, term = c.leadBoth()
	var joinToken string
	for _, s := range c.servers {
		if s != victim && via == nil {
			via = s
		}
		if b, err := os.ReadFile(filepath.Join(s.dataDir, "join-token")); err == nil {
			joinToken = strings.TrimSpace(string(b))
		}
	}
	if joinToken == "" {
		t.Fatal("no server wrote the cluster's first join token")
	}
	dir := t.TempDir()
	fleet = func(prefix string) *process {
		return startProcess(t, "berth sim agents "+prefix, "--data-dir", filepath.Join(dir, prefix), "--server", "https://"+via.api,
			"--token", joinToken, "--ca-file", c.caFile, "sim", "agents", "--count", "1", "--prefix", prefix)
	}
	return victim, term, via, fleet
}
