package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry/registrytest"
)

func pullSecretSpec(ns, name, image string, policy api.PullPolicy, secret string, placement string) string {
	s := fmt.Sprintf("kind: Service\nname: %s\nnamespace: %s\nreplicas: 1\ntemplate:\n  image: %s\n  command: [sleep, 1d]\n  pullPolicy: %s\n",
		name, ns, image, policy)
	if secret != "" {
		s += "  imagePullSecrets: [" + secret + "]\n"
	}
	return s + placement
}

// TestRegistryPullSecrets runs an image of a private registry (htpasswd)
// whose credentials only a namespace's secret of type registry-auth holds:
// without it the server's pin is refused with the registry's 401; with it
// (imagePullSecrets) the server pins and the agent pulls through the
// server, and the node is given no credentials, and from the servers'
// registry only the image it runs: another namespace's private image is
// refused it (403), by digest, under either name. A service applied
// before its pull secret is stored unpinned with a warning naming the
// secret, and runs once the secret is created. Another namespace whose
// template names no credentials is refused the image the servers now
// hold. The secret is sealed on
// the server's disk and never on the agent's. Once `berth registry
// pull-direct on`, the agent's node certificate reads the credentials of
// its own instance and of nothing else (not the secret itself, not
// another namespace's instance's), and the agent pulls from the registry
// itself with them.
// Registry-auth secrets that are not a docker config.json, or too big,
// are refused naming why.
func TestRegistryPullSecrets(t *testing.T) {
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	pusher := newEnv(t)
	registryConfig(t, ca, host)
	login := exec.Command(berthBin, "--data-dir", pusher.dataDir, "login", host, "-u", "alice", "--password-stdin")
	login.Stdin = strings.NewReader("s3cret\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("login: %v: %s", err, out)
	}
	pusher.demoImage()
	ref := host + "/private/app:1"
	pusher.ok("image", "tag", "demo/busybox:1", ref)
	pusher.ok("image", "push", ref)
	want := imageDigests(t, pusher)[ref]
	// Another private image, of team-b's only.
	otherDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(otherDir, "secret"), []byte("team-b only"), 0o644); err != nil {
		t.Fatal(err)
	}
	otherRef := host + "/private/other:1"
	pusher.ok("image", "build", otherDir, "--tag", otherRef)
	pusher.ok("image", "push", otherRef)

	empty := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(empty, []byte("{}"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_REGISTRY_CONFIG", empty)
	sa := startServerAgent(t, "127.0.0.48", "secrets")
	sa.ok("registry", "set", host, "--ca", ca.CAFile)

	f := filepath.Join(t.TempDir(), "spec.yaml")
	if err := os.WriteFile(f, []byte(pullSecretSpec("team-a", "nocred", ref, api.PullIfNotPresent, "", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := sa.cli("apply", "-f", f); code == 0 || !strings.Contains(errOut, "UNAUTHORIZED") && !strings.Contains(errOut, "401") {
		t.Fatalf("apply without credentials: exit %d, stderr %q; want the registry's 401", code, errOut)
	}

	authB64 := base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	dockerCfg := filepath.Join(t.TempDir(), "docker.json")
	if err := os.WriteFile(dockerCfg, []byte(fmt.Sprintf(`{"auths": {%q: {"auth": %q}}}`, host, authB64)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := sa.cli("-n", "team-a", "secret", "create", "bad", "--type", "registry-auth", "--from-literal", "x=y"); code == 0 || !strings.Contains(errOut, ".dockerconfigjson") {
		t.Errorf("a registry-auth secret without .dockerconfigjson: exit %d, stderr %q", code, errOut)
	}
	if _, errOut, code := sa.cli("-n", "team-a", "secret", "create", "bad", "--type", "registry-auth", "--from-literal", ".dockerconfigjson=[]"); code == 0 || !strings.Contains(errOut, "docker config.json") {
		t.Errorf("a registry-auth secret that is not a config.json: exit %d, stderr %q", code, errOut)
	}
	big := filepath.Join(t.TempDir(), "big.json")
	if err := os.WriteFile(big, []byte(`{"auths": {"x": {"auth": "`+strings.Repeat("A", api.MaxRegistryAuthBytes)+`"}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := sa.cli("-n", "team-a", "secret", "create", "bad", "--type", "registry-auth", "--from-file", ".dockerconfigjson="+big); code == 0 || !strings.Contains(errOut, "MaxRegistryAuthBytes") {
		t.Errorf("a registry-auth secret over the limit: exit %d, stderr %q", code, errOut)
	}
	// A service applied before its pull secret exists is stored unpinned,
	// with a warning and an event naming the secret; creating the secret
	// pins its image, and it runs.
	early := filepath.Join(t.TempDir(), "early.yaml")
	if err := os.WriteFile(early, []byte(pullSecretSpec("team-a", "early", ref, api.PullIfNotPresent, "regcred", "")), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := sa.cli("apply", "-f", early); code != 0 || !strings.Contains(out, "created") ||
		!strings.Contains(errOut, "warning:") || !strings.Contains(errOut, "regcred") {
		t.Errorf("apply before the pull secret exists: exit %d, stdout %q, stderr %q; want it created with a warning naming regcred", code, out, errOut)
	}
	if svc, err := sa.admin.Services().Get(context.Background(), "team-a", "early"); err != nil || svc.Spec.Template.Image != ref {
		t.Errorf("service early before its pull secret: %v, image %q; want %s unpinned", err, svc.Spec.Template.Image, ref)
	}
	if out := sa.ok("-n", "team-a", "describe", "early"); !strings.Contains(out, "PullSecretMissing") {
		t.Errorf("describe service early: no PullSecretMissing event:\n%s", out)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		sa.ok("-n", ns, "secret", "create", "regcred", "--type", "registry-auth", "--from-file", ".dockerconfigjson="+dockerCfg)
	}
	// (Its first instance may run the tag, once the pin brought the image to the servers.)
	sa.instanceOf("team-a", "early", "running "+ref+"@"+want, func(in *api.Instance) bool {
		return in.Status.Phase == api.PhaseRunning && in.Spec.Template.Image == ref+"@"+want
	})
	if svc, err := sa.admin.Services().Get(context.Background(), "team-a", "early"); err != nil || svc.Spec.Template.Image != ref+"@"+want {
		t.Errorf("service early once its pull secret exists: %v, image %q; want %s@%s", err, svc.Spec.Template.Image, ref, want)
	}

	sa.apply(pullSecretSpec("team-a", "private", ref, api.PullIfNotPresent, "regcred", ""))
	in := sa.running("team-a", "private")
	if in.Spec.Template.Image != ref+"@"+want {
		t.Errorf("private runs %q, want %s@%s", in.Spec.Template.Image, ref, want)
	}
	// early pulled the image (private found it on the node).
	var pulls []string
	evs, _, err := sa.admin.Events().List(context.Background(), "team-a")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev.Object.Kind == api.KindInstance && strings.HasPrefix(ev.Object.Name, "early-") && strings.HasPrefix(ev.Reason, "Pull") {
			pulls = append(pulls, ev.Reason+": "+ev.Message)
		}
	}
	if !hasEvent(pulls, "from "+sa.apiURL) {
		t.Errorf("early's pull events %q, want a pull from the server %s", pulls, sa.apiURL)
	}

	// The servers hold the image now, but another namespace's template
	// that names no credentials for it is still refused, by tag or by
	// digest, whatever its pull policy.
	for i, image := range []string{ref, ref + "@" + want} {
		f := filepath.Join(t.TempDir(), "spec.yaml")
		spec := pullSecretSpec("team-b", fmt.Sprintf("freeload%d", i), image, api.PullNever, "", "")
		if err := os.WriteFile(f, []byte(spec), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, errOut, code := sa.cli("apply", "-f", f); code == 0 || !strings.Contains(errOut, "is private") {
			t.Errorf("team-b applies %s without credentials: exit %d, stderr %q; want it refused as private", image, code, errOut)
		}
	}

	// team-b's instance waits for a node that does not exist.
	sa.apply(pullSecretSpec("team-b", "elsewhere", ref, api.PullIfNotPresent, "regcred",
		"placement:\n  constraints: [{key: node.name, op: \"==\", values: [nowhere]}]\n"))
	other := sa.instanceOf("team-b", "elsewhere", "created", func(*api.Instance) bool { return true })

	node := nodeClient(t, sa.agent.dataDir, 10*time.Second)
	get := func(path string) (int, string) {
		resp, err := node.Get(sa.apiURL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// The registry at /v2/ gives the node its own instance's image, not
	// another private image it runs nothing of, whatever name it asks under.
	sa.apply(pullSecretSpec("team-b", "secretwork", otherRef, api.PullIfNotPresent, "regcred",
		"placement:\n  constraints: [{key: node.name, op: \"==\", values: [nowhere]}]\n"))
	pushed, err := image.Open(filepath.Join(pusher.dataDir, "images"))
	if err != nil {
		t.Fatal(err)
	}
	partsOf := func(ref string) (manifest, layer string) {
		raw, _, d, err := pushed.Manifest(context.Background(), ref)
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			Layers []struct{ Digest string } `json:"layers"`
		}
		if err := json.Unmarshal(raw, &m); err != nil || len(m.Layers) == 0 {
			t.Fatalf("manifest of %s: %v %s", ref, err, raw)
		}
		return d.String(), m.Layers[len(m.Layers)-1].Digest
	}
	repoOf := func(ref string) string { return strings.TrimSuffix(strings.TrimPrefix(ref, host+"/"), ":1") }
	ownManifest, ownLayer := partsOf(ref)
	otherManifest, otherLayer := partsOf(otherRef)
	for _, c := range []struct {
		what, path string
		want       int
	}{
		{"its instance's manifest", "/v2/" + host + "/" + repoOf(ref) + "/manifests/" + ownManifest, http.StatusOK},
		{"its instance's layer", "/v2/" + host + "/" + repoOf(ref) + "/blobs/" + ownLayer, http.StatusOK},
		{"another private image's manifest", "/v2/" + host + "/" + repoOf(otherRef) + "/manifests/" + otherManifest, http.StatusForbidden},
		{"another private image's layer", "/v2/" + host + "/" + repoOf(otherRef) + "/blobs/" + otherLayer, http.StatusForbidden},
		{"another private image's layer under its own image's name", "/v2/" + host + "/" + repoOf(ref) + "/blobs/" + otherLayer, http.StatusForbidden},
	} {
		if code, body := get(c.path); code != c.want {
			t.Errorf("node pulls %s: %d %.200s; want %d", c.what, code, body, c.want)
		}
	}

	// Through the servers, the node needs no credentials and gets none.
	if code, body := get("/v1/namespaces/team-a/instances/" + in.Metadata.Name + "/data"); code != http.StatusOK || strings.Contains(body, authB64) {
		t.Errorf("node reads its own instance's data while pulling through the servers: %d %s; want no credentials", code, body)
	}
	if code, body := get("/v1/namespaces/team-b/instances/" + other.Metadata.Name + "/data"); code != http.StatusForbidden || strings.Contains(body, authB64) {
		t.Errorf("node reads another namespace's instance's data: %d %s; want 403", code, body)
	}
	for _, ns := range []string{"team-a", "team-b"} {
		if code, body := get("/v1/namespaces/" + ns + "/secrets/regcred"); code != http.StatusForbidden || strings.Contains(body, authB64) {
			t.Errorf("node reads secret regcred in %s: %d %s; want 403", ns, code, body)
		}
	}
	if sec, err := sa.admin.Secrets().Get(context.Background(), "team-a", "regcred"); err != nil || sec.Type != api.SecretTypeRegistryAuth || len(sec.Data) != 0 {
		t.Errorf("admin get of regcred: %+v, %v; want its type and no data", sec, err)
	}
	if treeHolds(t, sa.srv.dataDir, authB64) || treeHolds(t, sa.srv.dataDir, `"auths"`) {
		t.Error("the server's data dir holds the credentials in the clear")
	}

	sa.ok("registry", "pull-direct", "on")
	code, body := get("/v1/namespaces/team-a/instances/" + in.Metadata.Name + "/data")
	var data api.InstanceData
	if code != http.StatusOK || json.Unmarshal([]byte(body), &data) != nil || data.RegistryAuth == nil || data.RegistryAuth.Auths[host].Auth != authB64 {
		t.Errorf("node reads its own instance's data once agents pull directly: %d %s; want its registry credentials", code, body)
	}
	if code, body := get("/v1/namespaces/team-b/instances/" + other.Metadata.Name + "/data"); code != http.StatusForbidden || strings.Contains(body, authB64) {
		t.Errorf("node reads another namespace's instance's data once agents pull directly: %d %s; want 403", code, body)
	}
	sa.apply(pullSecretSpec("team-a", "direct", ref, api.PullAlways, "regcred", ""))
	direct := sa.running("team-a", "direct")
	if evs := sa.pullEvents("team-a", direct.Metadata.Name); !hasEvent(evs, "directly") || hasEvent(evs, "directly failed") || !hasEvent(evs, "Pulled: ") {
		t.Errorf("direct's pull events %q, want a pull straight from the registry", evs)
	}
	if treeHolds(t, sa.agent.dataDir, authB64) {
		t.Error("the agent's data dir holds the registry credentials")
	}
}
