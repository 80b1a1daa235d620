package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/registry/registrytest"
	"github.com/berth-dev/berth/internal/testing/lan"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// twoLayerImage makes, in e's store, name: the demo busybox image with a
// second layer of incompressible data, so that the image has layers of
// different sizes.
func twoLayerImage(t *testing.T, e *env, name string) {
	t.Helper()
	e.demoImage()
	dir := t.TempDir()
	archive := filepath.Join(dir, "bb.oci.tar")
	e.ok("image", "save", "demo/busybox:1", "-o", archive)
	lay := filepath.Join(dir, "layout")
	if err := os.MkdirAll(lay, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "-xf", archive, "-C", lay).CombinedOutput(); err != nil {
		t.Fatalf("untar: %v: %s", err, out)
	}
	idx, err := layout.ImageIndexFromPath(lay)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	data := make([]byte, 512<<10)
	_, _ = rand.Read(data)
	if err := tw.WriteHeader(&tar.Header{Name: "data/blob", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(data)
	_ = tw.Close()
	img, err = mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), MediaType: types.OCIUncompressedLayer})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "two")
	if _, err := layout.Write(out, mutate.IndexMediaType(empty.Index, types.OCIImageIndex)); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img); err != nil {
		t.Fatal(err)
	}
	e.ok("image", "import", out, "--tag", name)
}

// TestClusterPullsEachLayerOnce: three servers and three agents on
// network-namespace hosts run 9 replicas of docker.io/library/app:1, an
// image only the docker.io mirror (docker-registry on s1's host) has,
// three per node (each reserves 30% of a node's CPUs). The server the
// apply lands on pulls it from the mirror to pin it; the agents pull from
// their servers, which pull through from each other. The mirror's access
// log shows exactly one download of each blob.
func TestClusterPullsEachLayerOnce(t *testing.T) {
	testenv.RequireRoot(t)
	lc := lan.Config{
		Berth:   berthBin,
		Dir:     t.TempDir(),
		Name:    fmt.Sprintf("berth-e2e-%d-%d", os.Getpid(), netnsSeq.Add(1)),
		Servers: 3,
		Agents:  3,
		Verbose: true,
	}
	// New makes nothing yet: it tells s1's address, where the mirror listens.
	mirror := lan.New(lc).Servers[0].Addr + ":5000"
	ca := registrytest.NewCA(t, strings.TrimSuffix(mirror, ":5000"))
	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`{"registries": {"docker.io": {"mirrors": ["https://%s"]}, %q: {"ca": %q}}}`, mirror, mirror, ca.CAFile)), 0o600); err != nil {
		t.Fatal(err)
	}
	// The servers inherit it.
	t.Setenv("BERTH_REGISTRY_CONFIG", cfg)
	builder := &env{t: t, dataDir: t.TempDir()}
	twoLayerImage(t, builder, mirror+"/library/app:1")
	want := imageDigests(t, builder)[mirror+"/library/app:1"]

	var dist *registrytest.Distribution
	lc.Before = func(s *lan.Host) error {
		if s.Name != "s1" {
			return nil
		}
		dist = registrytest.Start(t, ca, registrytest.Options{Netns: s.Netns, Addr: mirror})
		push := exec.Command("nsenter", "--net="+s.Netns, berthBin, "--data-dir", builder.dataDir, "image", "push", mirror+"/library/app:1")
		if out, err := push.CombinedOutput(); err != nil {
			return fmt.Errorf("push to the mirror: %v: %s", err, out)
		}
		return nil
	}
	l := lan.New(lc)
	t.Cleanup(func() {
		l.Close()
		if t.Failed() {
			l.Logs(t.Logf)
		}
	})
	check(t, l.Start())
	before := dist.BlobGETs()

	// Each replica reserves over a quarter of a node's CPUs: three per node.
	nodes0, err := l.Nodes()
	check(t, err)
	cpu := float64(nodes0[0].Spec.Capacity.MilliCPU) / 1000 * 0.3
	check(t, l.Apply(fmt.Sprintf("kind: Service\nname: app\nreplicas: 9\ntemplate:\n  image: docker.io/library/app:1\n  command: [\"sleep\", \"3600\"]\n  resources: {cpu: %.2f, memory: 16Mi}\n", cpu)))
	insts := waitHealthy(t, l, "app", 9, 2*time.Minute)
	nodes := map[string]int{}
	for _, in := range insts {
		nodes[in.Spec.Node]++
		if in.Spec.Template.Image != "docker.io/library/app:1@"+want {
			t.Fatalf("instance %s runs %q, want docker.io/library/app:1@%s", in.Metadata.Name, in.Spec.Template.Image, want)
		}
	}
	if len(nodes) != 3 {
		t.Errorf("instances on %v, want all three nodes", nodes)
	}
	after := dist.BlobGETs()
	gets := 0
	for d, n := range after {
		if n-before[d] != 1 {
			t.Errorf("blob %s downloaded %d times from the mirror, want once", d, n-before[d])
		}
		gets += n - before[d]
	}
	// The config and two layers.
	if gets != 3 {
		t.Errorf("%d blob downloads from the mirror (%v), want 3: the config and two layers", gets, after)
	}
}
