package e2e

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// platformImage is a one-layer image for platform, its layer a file
// naming it.
func platformImage(t *testing.T, p v1.Platform) v1.Image {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("built for " + p.Architecture + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "platform", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(body)
	_ = tw.Close()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer), MediaType: types.OCIUncompressedLayer})
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = p.OS, p.Architecture
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// ociArchive reads an OCI archive: index.json and the blobs by digest,
// each checked against its name.
func ociArchive(t *testing.T, path string) (v1.IndexManifest, map[string][]byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var idx v1.IndexManifest
	blobs := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		switch {
		case h.Name == "index.json":
			if err := json.Unmarshal(b, &idx); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(h.Name, "blobs/sha256/"):
			sum := sha256.Sum256(b)
			if d := strings.TrimPrefix(h.Name, "blobs/sha256/"); hex.EncodeToString(sum[:]) != d {
				t.Fatalf("%s: %s holds content of digest %x", path, h.Name, sum)
			}
			blobs["sha256:"+strings.TrimPrefix(h.Name, "blobs/sha256/")] = b
		}
	}
	return idx, blobs
}

// TestImageSaveAllPlatforms pulls a two-arch image from a registry (the
// store keeps this machine's platform only) and saves it twice: plainly,
// the archive holds the one image the store has, as docker and podman
// save it; with --all-platforms, the whole index with both platforms'
// manifests, configs and layers, the other platform's fetched from the
// registry at save time. berth image import reads the full archive back.
func TestImageSaveAllPlatforms(t *testing.T) {
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, "")
	registryConfig(t, ca, host)
	amd := platformImage(t, v1.Platform{OS: "linux", Architecture: "amd64"})
	arm := platformImage(t, v1.Platform{OS: "linux", Architecture: "arm64"})
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref := host + "/multi/app:1"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx, remote.WithTransport(ca.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	idxDigest, _ := idx.Digest()
	want := map[string]v1.Image{"amd64": amd, "arm64": arm}

	e := newEnv(t)
	e.ok("image", "pull", "--platform", "linux/amd64", ref)
	amdDigest, _ := amd.Digest()
	if got := imageDigests(t, e)[ref]; got != amdDigest.String() {
		t.Fatalf("pulled %s as %s, want the amd64 image %s", ref, got, amdDigest)
	}

	dir := t.TempDir()
	one := filepath.Join(dir, "one.oci.tar")
	e.ok("image", "save", ref, "-o", one)
	if top, _ := ociArchive(t, one); len(top.Manifests) != 1 || top.Manifests[0].Digest != amdDigest {
		t.Errorf("plain save: index.json lists %v, want only the amd64 image %s", top.Manifests, amdDigest)
	}

	all := filepath.Join(dir, "all.oci.tar")
	e.ok("image", "save", "--all-platforms", ref, "-o", all)
	top, blobs := ociArchive(t, all)
	if len(top.Manifests) != 1 || top.Manifests[0].Digest != idxDigest || !top.Manifests[0].MediaType.IsIndex() ||
		top.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != ref {
		t.Fatalf("--all-platforms: index.json lists %+v, want the index %s named %s", top.Manifests, idxDigest, ref)
	}
	got, err := v1.ParseIndexManifest(bytes.NewReader(blobs[idxDigest.String()]))
	if err != nil || len(got.Manifests) != 2 {
		t.Fatalf("--all-platforms: the index blob: %v, %+v", err, got)
	}
	for _, md := range got.Manifests {
		img := want[md.Platform.Architecture]
		m, _ := img.Manifest()
		if _, ok := blobs[md.Digest.String()]; !ok {
			t.Errorf("%s: manifest %s missing from the archive", md.Platform.Architecture, md.Digest)
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if _, ok := blobs[d.Digest.String()]; !ok {
				t.Errorf("%s: blob %s missing from the archive", md.Platform.Architecture, d.Digest)
			}
		}
	}

	if _, errOut, code := e.run("image", "save", "--all-platforms", "--format", "docker", ref, "-o", filepath.Join(dir, "x.tar")); code == 0 || !strings.Contains(errOut, "--format oci") {
		t.Errorf("--all-platforms --format docker: exit %d, stderr %q", code, errOut)
	}
	other := newEnv(t)
	out := other.ok("image", "import", all)
	if !strings.Contains(out, amdDigest.String()) && imageDigests(t, other)[ref] != amdDigest.String() {
		t.Errorf("import of the full archive: %s; want the amd64 image %s", out, amdDigest)
	}
}
