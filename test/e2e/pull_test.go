package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// TestAgentPullsImageFromServer builds an image on a `berth server` only
// and runs a service on an agent whose store is empty: the server pins the
// service's tag to its store's digest, the agent pulls the image by that
// digest over the server's registry (/v2/) with its node certificate, the
// instance runs, the agent's copy has the server's digest, and events say
// so. A node certificate pulls but may not push, and a caller with no
// credentials gets 401.
func TestAgentPullsImageFromServer(t *testing.T) {
	srvEnv := newEnv(t)
	agentEnv := newAgentEnv(t)
	srvEnv.demoImage()
	want := imageDigests(t, srvEnv)["demo/busybox:1"]
	if want == "" {
		t.Fatal("the server's store has no demo/busybox:1")
	}

	host := "127.0.0.45"
	apiAddr := freeAddr(t, host)
	apiURL := "https://" + apiAddr
	srv := startProcess(t, "berth server", "--data-dir", srvEnv.dataDir, "server", "-v", "--name", "s1",
		"--listen", apiAddr, "--peer-listen", freeAddr(t, host))
	hint := regexp.MustCompile(`berth agent --server (\S+) --token \$\(cat (\S+)\) --ca-pin (sha256:[0-9a-f]+)`)
	var m []string
	eventually(t, 30*time.Second, "the server's join hint", func() bool {
		m = hint.FindStringSubmatch(srv.out.String())
		return m != nil
	})
	caFile := filepath.Join(srvEnv.dataDir, "tls", "ca.crt")
	raw, err := os.ReadFile(filepath.Join(srvEnv.dataDir, "tls", "token"))
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(raw))
	admin, err := client.New(apiURL, client.WithToken(tok), client.WithCAFile(caFile))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Second)
	defer cancel()

	startProcess(t, "berth agent", "--data-dir", agentEnv.dataDir, "agent", "-v", "--server", apiURL, "--name", "puller",
		"--address", "127.0.0.1", "--no-network", "--token", readToken(t, m[2]), "--ca-pin", m[3])
	eventually(t, 20*time.Second, "node puller Ready", func() bool {
		n, err := admin.Nodes().Get(ctx, "", "puller")
		return err == nil && n.Status.Condition == api.NodeReady
	})
	if got := imageDigests(t, agentEnv); len(got) != 0 {
		t.Fatalf("the agent's store starts with %v, want it empty", got)
	}

	srvEnv.ok("--server", apiURL, "--token", tok, "--ca-file", caFile, "run", "--name", "pulled", "demo/busybox:1", "sleep", "1d")
	// The server pinned the tag to its store's digest: the service, its
	// instance and so the agent's pull all name it.
	pinned := "demo/busybox:1@" + want
	if svc, err := admin.Services().Get(ctx, "default", "pulled"); err != nil || svc.Spec.Template.Image != pinned {
		t.Errorf("service pulled: %v, image %q, want %s", err, svc.Spec.Template.Image, pinned)
	}
	var running *api.Instance
	eventually(t, 30*time.Second, "pulled running on node puller", func() bool {
		list, _, err := admin.Instances().List(ctx, "default")
		if err != nil {
			return false
		}
		for _, in := range list {
			if in.Spec.Owner.Name == "pulled" && in.Spec.Node == "puller" && in.Status.Phase == api.PhaseRunning {
				running = in
				return true
			}
		}
		return false
	})
	if running.Spec.Template.Image != pinned {
		t.Errorf("instance %s runs image %q, want %s", running.Metadata.Name, running.Spec.Template.Image, pinned)
	}
	if got := imageDigests(t, agentEnv)["demo/busybox:1"]; got != want {
		t.Errorf("the agent's demo/busybox:1 is %q, want the server's %s", got, want)
	}
	eventually(t, 10*time.Second, "a Pulled event on the instance", func() bool {
		evs, _, err := admin.Events().List(ctx, "default")
		if err != nil {
			return false
		}
		var pulled bool
		var log []string
		for _, ev := range evs {
			if strings.HasPrefix(ev.Reason, "Pull") {
				log = append(log, fmt.Sprintf("%s %s: %s: %s", ev.Object.Kind, ev.Object.Name, ev.Reason, ev.Message))
			}
			pulled = pulled || ev.Reason == "Pulled" && ev.Object.Kind == api.KindInstance && strings.Contains(ev.Message, pinned)
		}
		if pulled {
			t.Logf("pull events:\n%s", strings.Join(log, "\n"))
		}
		return pulled
	})

	// The node's certificate pulls but does not push; no credentials, no entry.
	node := nodeClient(t, agentEnv.dataDir, 10*time.Second)
	if code := status(t, node, http.MethodGet, apiURL+"/v2/demo/busybox/manifests/1"); code != http.StatusOK {
		t.Errorf("node GET manifest: %d, want 200", code)
	}
	// The admin token pushes (here the agent's copy back, under its name).
	if out := agentEnv.ok("--server", apiURL, "--token", tok, "--ca-file", caFile, "image", "push", "demo/busybox:1"); !strings.Contains(out, want) {
		t.Errorf("berth image push printed %q, want the digest %s", out, want)
	}
	if code := status(t, node, http.MethodPost, apiURL+"/v2/demo/busybox/blobs/uploads/"); code != http.StatusForbidden && code != http.StatusUnauthorized {
		t.Errorf("node starts an upload: %d, want 403 or 401", code)
	}
	tc := node.Transport.(*http.Transport).TLSClientConfig
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: tc.Clone()}, Timeout: 10 * time.Second}
	anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
	if code := status(t, anon, http.MethodGet, apiURL+"/v2/"); code != http.StatusUnauthorized {
		t.Errorf("GET /v2/ without credentials: %d, want 401", code)
	}
}

// newAgentEnv is the data dir of an agent the test starts; the
// containers left in it are removed when the test ends.
func newAgentEnv(t *testing.T) *env {
	e := &env{t: t, dataDir: t.TempDir()}
	t.Cleanup(func() { removeContainers(e) })
	return e
}

// removeContainers removes every container in e's data dir: they outlive
// berth up and the agent by design.
func removeContainers(e *env) {
	out, _, _ := e.run("container", "ps", "-a", "-o", "json")
	var list []struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal([]byte(out), &list)
	for _, ct := range list {
		e.run("container", "rm", "--force", ct.ID)
	}
}

// nodeClient is an HTTP client with the node certificate the agent whose
// data dir is dir got when it joined.
func nodeClient(t *testing.T, dir string, timeout time.Duration) *http.Client {
	t.Helper()
	nc, err := client.LoadNodeCredentials(filepath.Join(dir, "node"))
	if err != nil {
		t.Fatal(err)
	}
	tc, err := nc.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: timeout}
}

// imageDigests maps the names of the images in e's store to their digests.
func imageDigests(t *testing.T, e *env) map[string]string {
	t.Helper()
	var imgs []struct {
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(e.ok("image", "ls", "-o", "json")), &imgs); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, img := range imgs {
		out[img.Name] = img.Digest
	}
	return out
}

func status(t *testing.T, c *http.Client, method, url string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestClusterPinsImageAndRollsOutOnRetag runs a service from a tag on
// berth up: the instance carries the tag pinned to the store's digest and
// berth up's own agent runs it; applying the same spec again replaces
// nothing; once the tag points at a new image, applying it again rolls the
// service out to the new digest.
func TestClusterPinsImageAndRollsOutOnRetag(t *testing.T) {
	c := startCluster(t, "--no-network")
	first := imageDigests(t, c.env)["demo/busybox:1"]
	if first == "" {
		t.Fatal("the store has no demo/busybox:1")
	}
	const spec = "kind: Service\nname: pinned\nreplicas: 1\ntemplate:\n  image: demo/busybox:1\n  command: [sleep, 1d]\n"
	if _, errOut, code := c.applyYAML(spec); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	before := c.waitRunning("pinned", 1)[0]
	if want := "demo/busybox:1@" + first; before.Spec.Template.Image != want {
		t.Fatalf("instance runs %q, want %s", before.Spec.Template.Image, want)
	}

	// The same spec again, the tag unmoved: the same instance keeps running.
	if out, errOut, code := c.applyYAML(spec); code != 0 || !strings.Contains(out, "unchanged") {
		t.Fatalf("re-apply: exit %d: %s%s", code, out, errOut)
	}
	time.Sleep(2 * time.Second)
	if now := c.running("pinned"); len(now) != 1 || now[0].Metadata.Name != before.Metadata.Name || len(c.ownedBy("pinned")) != 1 {
		t.Fatalf("after re-applying the same spec: running %v, want only %s", names(now), before.Metadata.Name)
	}

	// The tag moves: the same spec rolls the service to the new image.
	c.ok("image", "build", runtimetest.BusyboxRootfs(t), "--tag", "demo/busybox:1", "--cmd", "sh", "--env", "RELEASE=2")
	second := imageDigests(t, c.env)["demo/busybox:1"]
	if second == "" || second == first {
		t.Fatalf("the rebuilt demo/busybox:1 is %q, want a digest other than %s", second, first)
	}
	if _, errOut, code := c.applyYAML(spec); code != 0 {
		t.Fatalf("apply after the retag: %s", errOut)
	}
	want := "demo/busybox:1@" + second
	eventually(t, 60*time.Second, "pinned rolled out to "+second, func() bool {
		owned := c.ownedBy("pinned")
		return len(owned) == 1 && owned[0].Spec.Template.Image == want && owned[0].Status.Phase == api.PhaseRunning &&
			owned[0].Metadata.Name != before.Metadata.Name
	})
}
