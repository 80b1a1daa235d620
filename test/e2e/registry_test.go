package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// registryConfig writes a registry config trusting ca for host and points
// berth at it (BERTH_REGISTRY_CONFIG) for the rest of the test.
func registryConfig(t *testing.T, ca *registrytest.CA, host string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	cfg := fmt.Sprintf(`{"registries": {%q: {"ca": %q}}}`, host, ca.CAFile)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_REGISTRY_CONFIG", path)
	return path
}

var layerLine = regexp.MustCompile(`(?m)^[0-9a-f]{12}: done \d+(\.\d)? [KMG]?i?B in \S+`)

// TestImageLoginPushPull drives a real registry (distribution, TLS from a
// test CA, htpasswd) from the CLI: a wrong password is refused with a 401,
// berth login stores the right one (0600), berth image tag + push send an
// image, and another store pulls it by tag (one plain line per layer when
// not on a terminal) and runs it by digest, pulled on demand by berth
// container run; a missing tag says "manifest unknown" and names the
// reference; logout forgets the password and the registry refuses again.
func TestImageLoginPushPull(t *testing.T) {
	e := newEnv(t)
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	cfgPath := registryConfig(t, ca, host)
	e.demoImage()
	ref := host + "/team/busybox:1"

	if _, errOut, code := e.run("login", host, "-u", "alice", "-p", "wrong"); code == 0 || !strings.Contains(errOut, "UNAUTHORIZED") && !strings.Contains(errOut, "401") {
		t.Fatalf("login with a wrong password: exit %d, stderr %q", code, errOut)
	}
	login := exec.Command(berthBin, "--data-dir", e.dataDir, "login", host, "-u", "alice", "--password-stdin")
	login.Stdin = strings.NewReader("s3cret\n")
	if out, err := login.CombinedOutput(); err != nil || !strings.Contains(string(out), "Login succeeded") {
		t.Fatalf("login --password-stdin: %v: %s", err, out)
	}
	st, err := os.Stat(cfgPath)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("config after login: %v, mode %v; want 0600", err, st.Mode())
	}
	e.ok("image", "tag", "demo/busybox:1", ref)
	e.ok("image", "push", ref)
	pushed := imageDigests(t, e)[ref]

	other := newEnv(t)
	out := other.ok("image", "pull", ref)
	if !layerLine.MatchString(out) || !strings.Contains(out, pushed) {
		t.Fatalf("pull output:\n%s\nwant a line per layer and the digest %s", out, pushed)
	}
	if got := imageDigests(t, other)[ref]; got != pushed {
		t.Fatalf("pulled %s as %q, pushed %s", ref, got, pushed)
	}

	_, errOut, code := other.run("image", "pull", host+"/team/busybox:nope")
	if code == 0 || !strings.Contains(strings.ToLower(errOut), "manifest unknown") || !strings.Contains(errOut, host+"/team/busybox:nope") {
		t.Fatalf("pull of a missing tag: exit %d, stderr %q", code, errOut)
	}

	third := newEnv(t)
	out, errOut, code = third.run("container", "run", "--rm", host+"/team/busybox@"+pushed, "echo", "pulled on demand")
	if code != 0 || !strings.Contains(out, "pulled on demand") {
		t.Fatalf("container run by digest: exit %d, stdout %q, stderr %q", code, out, errOut)
	}

	if _, errOut, code := third.run("container", "run", "--rm", "--pull", "never", ref, "true"); code == 0 || !strings.Contains(errOut, "pull policy is Never") {
		t.Fatalf("run --pull never of an image the store lacks: exit %d, stderr %q", code, errOut)
	}

	e.ok("logout", host)
	if _, _, code := e.run("logout", host); code == 0 {
		t.Fatal("a second logout succeeded")
	}
	if _, errOut, code := newEnv(t).run("image", "pull", ref); code == 0 || !strings.Contains(errOut, "UNAUTHORIZED") {
		t.Fatalf("pull after logout: exit %d, stderr %q", code, errOut)
	}
}

// clusterWithPushedImage starts berth up logged in to a registry of its
// own, and pushes the demo image to it, from another data dir (builder),
// as ref; the server has not pulled it.
func clusterWithPushedImage(t *testing.T) (c *cluster, builder *env, ref string) {
	t.Helper()
	c = startCluster(t, "--no-network")
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	registryConfig(t, ca, host)
	c.ok("login", host, "-u", "alice", "-p", "s3cret")
	// The server reads the registry config when it starts: restart it now
	// that there is one (it inherits BERTH_REGISTRY_CONFIG).
	c.kill()
	c.start()
	ref = host + "/team/app:1"
	builder = newEnv(t)
	builder.demoImage()
	builder.ok("image", "tag", "demo/busybox:1", ref)
	builder.ok("image", "push", ref)
	return c, builder, ref
}

// TestPullPolicy runs services of an image only a registry has on berth
// up: Never leaves it unpulled and unpinned, IfNotPresent pulls and pins
// it, and after the tag moves in the registry IfNotPresent keeps the
// stored image while Always pins the new one.
func TestPullPolicy(t *testing.T) {
	c, builder, ref := clusterWithPushedImage(t)
	first := imageDigests(t, builder)[ref]

	spec := func(name string, policy api.PullPolicy) string {
		return fmt.Sprintf("kind: Service\nname: %s\nreplicas: 1\ntemplate:\n  image: %s\n  pullPolicy: %s\n  command: [\"sleep\", \"3600\"]\n", name, ref, policy)
	}
	image := func(name string) string {
		var svc api.Service
		if err := json.Unmarshal([]byte(c.ok("get", "service", name, "-o", "json")), &svc); err != nil {
			t.Fatal(err)
		}
		return svc.Spec.Template.Image
	}

	if out, errOut, code := c.applyYAML(spec("never", api.PullNever)); code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if got := image("never"); got != ref {
		t.Fatalf("Never: image %q, want %q left unpinned", got, ref)
	}
	if _, ok := imageDigests(t, c.env)[ref]; ok {
		t.Fatal("Never: the image was pulled")
	}

	if out, errOut, code := c.applyYAML(spec("ifnp", api.PullIfNotPresent)); code != 0 {
		t.Fatalf("apply: %d %s %s", code, out, errOut)
	}
	if got := image("ifnp"); got != ref+"@"+first {
		t.Fatalf("IfNotPresent: image %q, want %s pinned", got, ref+"@"+first)
	}
	c.waitRunning("ifnp", 1)

	// The tag moves in the registry.
	builder.ok("image", "build", filepath.Join(builder.dataDir, "images", "empty"), "--tag", ref, "--label", "v=2")
	builder.ok("image", "push", ref)
	second := imageDigests(t, builder)[ref]
	if second == first {
		t.Fatal("the second image has the first's digest")
	}
	if _, _, code := c.applyYAML(spec("ifnp2", api.PullIfNotPresent)); code != 0 {
		t.Fatal("apply ifnp2")
	}
	if got := image("ifnp2"); got != ref+"@"+first {
		t.Fatalf("IfNotPresent after the tag moved: image %q, want the stored %s", got, first)
	}
	if _, _, code := c.applyYAML(spec("always", api.PullAlways)); code != 0 {
		t.Fatal("apply always")
	}
	if got := image("always"); got != ref+"@"+second {
		t.Fatalf("Always after the tag moved: image %q, want %s", got, ref+"@"+second)
	}
}

// TestBuildRootfsWithDev builds a tree with a debootstrap rootfs's /dev
// device nodes from the CLI: it builds, and warns that they were left out.
func TestBuildRootfsWithDev(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "dev", "pts"), 0o755); err != nil {
		t.Fatal(err)
	}
	for n, mm := range map[string][2]uint32{"console": {5, 1}, "null": {1, 3}, "zero": {1, 5}} {
		if err := unix.Mknod(filepath.Join(dir, "dev", n), unix.S_IFCHR|0o666, int(unix.Mkdev(mm[0], mm[1]))); err != nil {
			t.Fatal(err)
		}
	}
	_, errOut, code := e.run("image", "build", dir, "--tag", "debian:minbase")
	if code != 0 || !strings.Contains(errOut, "warning: left out 3 device nodes under /dev") || !strings.Contains(errOut, "dev/console") {
		t.Fatalf("build: exit %d, stderr %q", code, errOut)
	}
	if err := unix.Mknod(filepath.Join(dir, "console"), unix.S_IFCHR|0o666, int(unix.Mkdev(5, 1))); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.run("image", "build", dir, "--tag", "debian:minbase"); code == 0 || !strings.Contains(errOut, "console is a device node") {
		t.Fatalf("a device node outside /dev: exit %d, stderr %q", code, errOut)
	}
}

// TestImageSaveHistoryPrune: berth image save writes an OCI archive (two
// names, one image) and a docker-save tarball that image import reads
// back; history shows the build step; prune --all removes what no
// container uses.
func TestImageSaveHistoryPrune(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	e.ok("image", "tag", "demo/busybox:1", "demo/busybox:copy")
	want := imageDigests(t, e)["demo/busybox:1"]
	dir := t.TempDir()
	oci, docker := filepath.Join(dir, "bb.oci.tar"), filepath.Join(dir, "bb.docker.tar")
	e.ok("image", "save", "demo/busybox:1", "demo/busybox:copy", "-o", oci)
	e.ok("image", "save", "--format", "docker", "demo/busybox:1", "-o", docker)

	fromOCI := newEnv(t)
	fromOCI.ok("image", "import", oci)
	got := imageDigests(t, fromOCI)
	if got["demo/busybox:1"] != want || got["demo/busybox:copy"] != want {
		t.Fatalf("imported from the OCI archive: %v, want both names at %s", got, want)
	}
	fromDocker := newEnv(t)
	fromDocker.ok("image", "import", docker)
	if _, ok := imageDigests(t, fromDocker)["demo/busybox:1"]; !ok {
		t.Fatalf("imported from the docker-save tarball: %v", imageDigests(t, fromDocker))
	}
	if out, _, code := fromDocker.run("container", "run", "--rm", "demo/busybox:1", "echo", "loaded"); code != 0 || !strings.Contains(out, "loaded") {
		t.Fatalf("run of the re-imported image: exit %d %q", code, out)
	}

	if out := e.ok("image", "history", "demo/busybox:1"); !strings.Contains(out, "berth image build") {
		t.Fatalf("history:\n%s", out)
	}
	out := e.ok("image", "prune", "--all")
	if !strings.Contains(out, "untagged demo/busybox:1") || len(imageDigests(t, e)) != 0 {
		t.Fatalf("prune --all printed %q and left %v", out, imageDigests(t, e))
	}
	if _, _, code := e.run("image", "save", "demo/absent:1", "-o", filepath.Join(dir, "x.tar")); code == 0 {
		t.Fatal("save of an absent image succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "x.tar")); !os.IsNotExist(err) {
		t.Fatalf("a failed save left %s: %v", "x.tar", err)
	}
}
