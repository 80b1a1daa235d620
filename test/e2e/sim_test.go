package e2e

import (
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestHollowFleetScalesReplacesLostNodeAndScalesToZero runs `berth
// server` with two `berth sim agents` fleets joined to it (real joins, one
// node certificate and connection each, a simulated runtime): 99 nodes
// that live and 1 (1%) in its own process that dies. Sizes are small for CI;
// what is asserted is correctness, not time: every replica Running, no
// instance name twice, the dead node's instances replaced on live nodes,
// and exactly none left after a scale to 0.
func TestHollowFleetScalesReplacesLostNodeAndScalesToZero(t *testing.T) {
	testenv.RequireRoot(t)
	const (
		services = 2
		replicas = 1000
		total    = services * replicas
	)
	dir := t.TempDir()
	srvDir := filepath.Join(dir, "srv")
	apiAddr := freeAddr(t, "127.0.0.1")
	url := "https://" + apiAddr
	// A lone server short of CPU (a thousand agents share its cores) can
	// renew its controllers' leadership late at the default 3 s and stall
	// a pass; losing it is not what this test is about.
	startProcess(t, "berth server", "--data-dir", srvDir, "server", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, "127.0.0.1"), "--leader-ttl", "10s")
	token := filepath.Join(srvDir, "tls", "token")
	eventually(t, 30*time.Second, "the server's join token", func() bool {
		_, err1 := os.Stat(filepath.Join(srvDir, "join-token"))
		_, err2 := os.Stat(token)
		return err1 == nil && err2 == nil
	})
	join := readToken(t, filepath.Join(srvDir, "join-token"))
	ca := filepath.Join(srvDir, "tls", "ca.crt")
	fleet := func(prefix string, count int, extra ...string) *process {
		return startProcess(t, "berth sim agents "+prefix, append([]string{"--data-dir", filepath.Join(dir, prefix), "--server", url,
			"--token", join, "--ca-file", ca, "sim", "agents", "--count", fmt.Sprint(count), "--prefix", prefix,
			"--start-delay", "5ms", "--cpus", "4"}, extra...)...)
	}
	profile := filepath.Join(dir, "fleet.pprof")
	heap := filepath.Join(dir, "fleet-heap.pprof")
	live := fleet("live", 99, "--cpuprofile", profile, "--heapprofile", heap)
	doomed := fleet("doomed", 1)
	admin := &env{t: t, dataDir: filepath.Join(dir, "cli")}
	cli := func(args ...string) string {
		return admin.ok(append([]string{"--server", url, "--token", readToken(t, token), "--ca-file", ca}, args...)...)
	}
	for _, p := range []*process{live, doomed} {
		eventually(t, 60*time.Second, "the hollow nodes to register", func() bool {
			return strings.Contains(p.out.String(), "hollow nodes registered")
		})
	}
	eventually(t, 30*time.Second, "100 nodes Ready", func() bool { return strings.Count(cli("get", "nodes"), " Ready ") == 100 })

	instances := func() []api.Instance {
		var out []api.Instance
		if err := json.Unmarshal([]byte(cli("get", "instances", "-o", "json")), &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	// settled reports every instance Running, none twice, and none on the
	// nodes in avoid.
	settled := func(want int, avoid string) func() bool {
		return func() bool {
			insts := instances()
			seen := map[string]bool{}
			running := 0
			for _, in := range insts {
				if seen[in.Metadata.Name] {
					t.Fatalf("instance name %s twice", in.Metadata.Name)
				}
				seen[in.Metadata.Name] = true
				if in.Status.Phase == api.PhaseRunning && (avoid == "" || !strings.HasPrefix(in.Spec.Node, avoid)) {
					running++
				}
			}
			if len(insts) != want || running != want {
				t.Logf("%d instances, %d Running, want %d", len(insts), running, want)
				return false
			}
			return true
		}
	}
	specs := filepath.Join(dir, "svc.yaml")
	var b strings.Builder
	for i := range services {
		fmt.Fprintf(&b, "---\nkind: Service\nname: hollow-%d\nreplicas: %d\ntemplate:\n  image: sim/none:1\n  resources: {cpu: 0.1, memory: 64Mi}\n", i, replicas)
	}
	if err := os.WriteFile(specs, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	cli("apply", "-f", specs)
	eventually(t, 90*time.Second, fmt.Sprintf("%d instances Running", total), settled(total, ""))
	t.Logf("%d instances Running on 100 hollow nodes in %v", total, time.Since(t0))
	onDoomed := 0
	for _, in := range instances() {
		if strings.HasPrefix(in.Spec.Node, "doomed") {
			onDoomed++
		}
	}
	if onDoomed == 0 {
		t.Fatal("no instance on the node to lose: the test would show nothing")
	}

	// Nodes of 4 CPUs hold 40 replicas of 0.1 CPU each: the doomed one
	// is not left out, and the 99 others can take their share.

	// The doomed node's machine dies: no goodbye, its heartbeats stop.
	t0 = time.Now()
	_ = doomed.cmd.Process.Signal(syscall.SIGKILL)
	<-doomed.done
	eventually(t, 60*time.Second, "the lost node's instances replaced on live nodes", settled(total, "doomed"))
	t.Logf("%d instances of the lost node replaced in %v", onDoomed, time.Since(t0))

	t0 = time.Now()
	for i := range services {
		cli("scale", fmt.Sprintf("hollow-%d=0", i))
	}
	eventually(t, 60*time.Second, "no instances after a scale to 0", func() bool { return len(instances()) == 0 })
	t.Logf("scaled to 0 in %v", time.Since(t0))

	// Stopped, the fleet leaves its CPU and heap profiles: gzipped,
	// naming the agent's functions.
	_ = live.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-live.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the fleet did not stop in 30s")
	}
	for flag, path := range map[string]string{"--cpuprofile": profile, "--heapprofile": heap} {
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		defer f.Close()
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatalf("%s: not a gzipped profile: %v", flag, err)
		}
		pb, err := io.ReadAll(zr)
		if err != nil {
			t.Fatalf("%s: %v", flag, err)
		}
		if !strings.Contains(string(pb), "internal/agent.") {
			t.Fatalf("%s: the profile (%d bytes) names no function of the agent", flag, len(pb))
		}
	}
}

// TestSimAgentsRefusesBadFlags: each bad flag is refused before anything
// joins, naming the flag.
func TestSimAgentsRefusesBadFlags(t *testing.T) {
	e := newEnv(t)
	base := []string{"--server", "https://127.0.0.1:1", "sim", "agents"}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--token", "berth_x.y", "--fail-rate", "2"}, "--fail-rate"},
		{[]string{"--token", "berth_x.y", "--start-delay", "-1s"}, "--start-delay"},
		{[]string{"--token", "berth_x.y", "--cpus", "0"}, "--cpus"},
		{[]string{"--token", "berth_x.y", "--memory", "lots"}, "--memory"},
		{[]string{"--token", "admin-token"}, "join token"},
		{[]string{"--token", "berth_x.y", "--count", "0"}, "count 0"},
	} {
		_, errOut, code := e.run(append(append([]string(nil), base...), c.args...)...)
		if code == 0 || !strings.Contains(errOut, c.want) {
			t.Errorf("berth sim agents %v: exit %d, stderr %q; want non-zero naming %s", c.args, code, errOut, c.want)
		}
	}
}
