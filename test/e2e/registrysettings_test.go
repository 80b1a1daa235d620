package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// TestRegistrySettingsFollowedLive keeps the registry settings in the
// cluster (berth registry ...), not in a server's file: a registry whose
// CA the running server does not trust is refused at apply; once `berth
// registry set HOST --insecure`, or --ca naming its CA, the same server
// pins and serves the image, and the agent runs it; with neither, it is
// refused again; `berth registry set docker.io --mirror` then sends
// docker.io images to the mirror, all without a restart.
// Bad settings are refused naming the field; nodes read the settings but
// may not write them.
func TestRegistrySettingsFollowedLive(t *testing.T) {
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, "")
	pusher := newEnv(t)
	registryConfig(t, ca, host)
	pusher.demoImage()
	pusher.ok("image", "tag", "demo/busybox:1", host+"/library/app:1")
	pusher.ok("image", "push", host+"/library/app:1")
	want := imageDigests(t, pusher)[host+"/library/app:1"]

	// The server's own registry config knows nothing of the registry.
	empty := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(empty, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_REGISTRY_CONFIG", empty)
	sa := startServerAgent(t, "127.0.0.47", "settings")

	_, errOut, code := sa.cli("run", "--name", "untrusted", host+"/library/app:1", "sleep", "1d")
	if code == 0 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("run from a registry of an unknown CA: exit %d, stderr %q; want a certificate error", code, errOut)
	}

	// Each change is followed at once; --pull always makes every apply ask
	// the registry, rather than pin from the server's copy.
	sa.ok("registry", "set", host, "--insecure")
	sa.ok("run", "--name", "insecure", "--pull", "always", host+"/library/app:1", "sleep", "1d")
	if out := sa.ok("registry", "set", host, "--ca", ca.CAFile); !strings.Contains(out, "registry "+host+" set") {
		t.Errorf("registry set printed %q", out)
	}
	sa.ok("run", "--name", "trusted", "--pull", "always", host+"/library/app:1", "sleep", "1d")
	in := sa.running("default", "trusted")
	if img := in.Spec.Template.Image; img != host+"/library/app:1@"+want {
		t.Errorf("trusted runs %q, want %s/library/app:1@%s", img, host, want)
	}
	sa.ok("registry", "set", host)
	_, errOut, code = sa.cli("run", "--name", "untrusted-again", "--pull", "always", host+"/library/app:1", "sleep", "1d")
	if code == 0 || !strings.Contains(errOut, "certificate") {
		t.Fatalf("run once the registry is neither trusted nor insecure: exit %d, stderr %q; want a certificate error", code, errOut)
	}
	sa.ok("registry", "set", host, "--ca", ca.CAFile)

	sa.ok("registry", "set", "docker.io", "--mirror", "https://"+host)
	sa.ok("run", "--name", "mirrored", "docker.io/library/app:1", "sleep", "1d")
	if in := sa.running("default", "mirrored"); in.Spec.Template.Image != "docker.io/library/app:1@"+want {
		t.Errorf("mirrored runs %q, want docker.io/library/app:1@%s", in.Spec.Template.Image, want)
	}

	out := sa.ok("registry", "ls")
	for _, s := range []string{"docker.io", "https://" + host, host, "1 certificate(s)", "agents pull through the servers"} {
		if !strings.Contains(out, s) {
			t.Errorf("registry ls:\n%s\nwant %q in it", out, s)
		}
	}
	var rs api.RegistrySettings
	if err := json.Unmarshal([]byte(sa.ok("registry", "ls", "-o", "json")), &rs); err != nil || rs.Registries[host].CA == "" || rs.Revision == 0 {
		t.Errorf("registry ls -o json: %v, %+v", err, rs)
	}

	_, errOut, code = sa.cli("registry", "set", "docker.io", "--mirror", "ftp://mirror.example")
	if code == 0 || !strings.Contains(errOut, `registries["docker.io"].mirrors[0]`) {
		t.Errorf("a mirror that is not http(s): exit %d, stderr %q; want the field named", code, errOut)
	}
	if _, errOut, code = sa.cli("registry", "frobnicate"); code == 0 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("registry frobnicate: exit %d, stderr %q; want unknown command", code, errOut)
	}

	node := nodeClient(t, sa.agent.dataDir, 10*time.Second)
	if code := status(t, node, http.MethodGet, sa.apiURL+"/v1/registry"); code != http.StatusOK {
		t.Errorf("node GET /v1/registry: %d, want 200", code)
	}
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPut, sa.apiURL+"/v1/registry", bytes.NewReader([]byte(`{"agentsPullDirect": true}`)))
	resp, err := node.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("node PUT /v1/registry: %d, want 403", resp.StatusCode)
	}
	if now, err := sa.admin.RegistrySettings(context.Background()); err != nil || now.AgentsPullDirect {
		t.Errorf("settings after the node's PUT: %+v, %v; want unchanged", now, err)
	}
}

// TestRegistrySettingsSeededFromFile starts berth up with a registry
// config naming a docker.io mirror and a registry's CA file: the cluster,
// which had no registry settings, takes them as its own (the CA read into
// the settings), so that `berth registry ls` shows them; a change through
// the CLI is kept over the file's on the next start.
func TestRegistrySettingsSeededFromFile(t *testing.T) {
	ca := registrytest.NewCA(t)
	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg, []byte(`{"registries": {"docker.io": {"mirrors": ["https://mirror.example:5000"]},
		"lab.example:5000": {"ca": "`+ca.CAFile+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_REGISTRY_CONFIG", cfg)
	c := startCluster(t, "--no-network")
	var out string
	eventually(t, 10*time.Second, "the seeded settings", func() bool {
		out, _, _ = c.run("registry", "ls")
		return strings.Contains(out, "https://mirror.example:5000") && strings.Contains(out, "1 certificate(s)")
	})
	c.ok("registry", "rm", "docker.io")
	c.kill()
	c.start()
	eventually(t, 10*time.Second, "the settings after a restart", func() bool {
		out, _, _ = c.run("registry", "ls")
		return strings.Contains(out, "lab.example:5000")
	})
	if strings.Contains(out, "mirror.example") {
		t.Errorf("registry ls after removing docker.io and restarting:\n%s\nwant the file not to seed it again", out)
	}
}
