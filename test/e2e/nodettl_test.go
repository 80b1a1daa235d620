package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
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
