package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
)

// berth up's own node heartbeats in process, with no request to its API
// each beat, and stays Ready past its heartbeat TTL: the beats renew its
// lease all the same.
func TestUpNodeBeatsInProcess(t *testing.T) {
	c := startCluster(t, "--no-network")
	ac, err := client.New("unix://" + filepath.Join(c.dataDir, "berth.sock"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the node Ready", func() bool { return c.nodeReady() })
	before := nodeStatusPuts(t, ac)
	// A TTL and a bit: without its beats the lease would have lapsed and
	// the controller marked the node NotReady.
	time.Sleep(apiserver.DefaultNodeTTL + 2*time.Second)
	if !c.nodeReady() {
		t.Fatalf("the node is not Ready %v on:\n%s", apiserver.DefaultNodeTTL+2*time.Second, c.ok("get", "nodes"))
	}
	if after := nodeStatusPuts(t, ac); after != before {
		t.Fatalf("%d node status requests over the API while the node beat (was %d), want none", after-before, before)
	}
}

// nodeReady says whether berth up's one node is Ready.
func (c *cluster) nodeReady() bool {
	out, _, code := c.run("get", "nodes", "-o", "json")
	var nodes []api.Node
	if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil || len(nodes) != 1 {
		return false
	}
	return nodes[0].Status.Condition == api.NodeReady
}

// nodeStatusPuts counts the API's answered node status writes, from its metrics.
func nodeStatusPuts(t *testing.T, c *client.Client) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	text, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(string(text)))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "berth_api_request_duration_seconds_count{") ||
			!strings.Contains(line, `method="PUT"`) || !strings.Contains(line, `route="/v1/nodes/{name}/status"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			t.Fatalf("unreadable metric line %q", line)
		}
		n += v
	}
	return n
}
