package e2e

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestPullThroughFromAnotherServer builds two images on server s1 of a
// three-server cluster only, and runs them on an agent that joined via s2
// and talks to s2 alone. A service applied through s2 has s2 pull its
// image through from s1 to pin it; one applied through s1 is pinned
// there, and the agent's pull by digest has s2 pull it through from s1.
// Both run pinned to s1's digests. A request marked local-only gets s3's
// own answer (404), an unmarked one s3's pull-through; the node's
// certificate still cannot push.
func TestPullThroughFromAnotherServer(t *testing.T) {
	testenv.RequireRoot(t)
	c := startHACluster(t)
	s1, s2, s3 := c.servers[0], c.servers[1], c.servers[2]
	e1 := &env{t: t, dataDir: s1.dataDir}
	e1.demoImage()
	e1.ok("image", "build", runtimetest.BusyboxRootfs(t), "--tag", "demo/busybox:2", "--cmd", "sh", "--env", "RELEASE=2")
	on1 := imageDigests(t, e1)
	d1, d2 := on1["demo/busybox:1"], on1["demo/busybox:2"]
	if d1 == "" || d2 == "" || d1 == d2 {
		t.Fatalf("s1's images: %v", on1)
	}
	for _, s := range []*haServer{s2, s3} {
		if got := imageDigests(t, &env{t: t, dataDir: s.dataDir}); len(got) != 0 {
			t.Fatalf("%s's store starts with %v, want it empty", s.name, got)
		}
	}

	agentEnv := newAgentEnv(t)
	out, errOut, code := c.run(s2, "token", "create")
	if code != 0 {
		t.Fatalf("token create: exit %d: %s", code, errOut)
	}
	startProcess(t, "berth agent", "--data-dir", agentEnv.dataDir, "agent", "-v", "--server", "https://"+s2.api,
		"--name", "n1", "--address", "127.0.0.1", "--no-network", "--token", strings.TrimSpace(out), "--ca-file", c.caFile)
	eventually(t, 30*time.Second, "node n1 Ready", func() bool {
		out, _, code := c.run(s2, "get", "nodes", "-o", "json")
		var nodes []api.Node
		if code != 0 || json.Unmarshal([]byte(out), &nodes) != nil {
			return false
		}
		return len(nodes) == 1 && nodes[0].Status.Condition == api.NodeReady
	})

	// Through s2, which lacks the image: it pins what s1 has.
	if _, errOut, code := c.run(s2, "run", "--name", "one", "demo/busybox:1", "sleep", "1d"); code != 0 {
		t.Fatalf("run one through s2: exit %d: %s", code, errOut)
	}
	if got := imageDigests(t, &env{t: t, dataDir: s2.dataDir})["demo/busybox:1"]; got != d1 {
		t.Errorf("s2's demo/busybox:1 after the apply is %q, want s1's %s", got, d1)
	}
	// Through s1, which pins it itself; s2 first hears of it from the agent.
	if _, errOut, code := c.run(s1, "run", "--name", "two", "demo/busybox:2", "sleep", "1d"); code != 0 {
		t.Fatalf("run two through s1: exit %d: %s", code, errOut)
	}
	want := map[string]string{"one": "demo/busybox:1@" + d1, "two": "demo/busybox:2@" + d2}
	eventually(t, 60*time.Second, "one and two running on n1, pinned", func() bool {
		out, _, code := c.run(s2, "get", "instances", "-o", "json")
		var list []api.Instance
		if code != 0 || json.Unmarshal([]byte(out), &list) != nil {
			return false
		}
		running := 0
		for _, in := range list {
			img, ok := want[in.Spec.Owner.Name]
			if !ok {
				continue
			}
			if in.Spec.Template.Image != img {
				t.Fatalf("instance %s runs %q, want %s", in.Metadata.Name, in.Spec.Template.Image, img)
			}
			if in.Spec.Node == "n1" && in.Status.Phase == api.PhaseRunning {
				running++
			}
		}
		return running == 2
	})
	onAgent := map[string]bool{}
	for _, d := range imageDigests(t, agentEnv) {
		onAgent[d] = true
	}
	if !onAgent[d1] || !onAgent[d2] {
		t.Errorf("the agent's store has %v, want %s and %s", imageDigests(t, agentEnv), d1, d2)
	}
	onS2 := map[string]bool{}
	for _, d := range imageDigests(t, &env{t: t, dataDir: s2.dataDir}) {
		onS2[d] = true
	}
	if !onS2[d2] {
		t.Errorf("s2's store lacks %s, which it served the agent", d2)
	}

	// The node's certificate, straight at s3's registry.
	node := nodeClient(t, agentEnv.dataDir, 30*time.Second)
	manifest := "https://" + s3.api + "/v2/demo/busybox/manifests/" + d2
	localOnly, err := http.NewRequest(http.MethodGet, manifest, nil)
	if err != nil {
		t.Fatal(err)
	}
	localOnly.Header.Set(registry.LocalOnlyHeader, "1")
	if resp, err := node.Do(localOnly); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("node GET of s1's image on s3, local only: %v, %v; want 404", resp, err)
	} else {
		resp.Body.Close()
	}
	if code := status(t, node, http.MethodGet, manifest); code != http.StatusOK {
		t.Errorf("node GET of s1's image on s3: %d, want 200 (pulled through)", code)
	}
	for _, s := range []*haServer{s1, s3} {
		if code := status(t, node, http.MethodPost, "https://"+s.api+"/v2/demo/busybox/blobs/uploads/"); code != http.StatusForbidden {
			t.Errorf("node starts an upload on %s: %d, want 403", s.name, code)
		}
	}
}
