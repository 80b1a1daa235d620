package apiserver_test

import (
	"bytes"
	"crypto/tls"
	"net/http"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

// imageParts is an image's manifest digest and its config and layer digests.
type imageParts struct {
	manifest, config, layer string
}

func partsOf(t *testing.T, imgs *image.Store, ref string) imageParts {
	t.Helper()
	raw, _, d, err := imgs.Manifest(t.Context(), ref)
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest of %s: %v", ref, err)
	}
	return imageParts{manifest: d.String(), config: m.Config.Digest.String(), layer: m.Layers[0].Digest.String()}
}

// TestNodeReadsOnlyImagesItRuns serves the registry at /v2/ with the
// servers' rule over a real TLS listener and store: a node certificate
// reads the manifest and blobs of the image of an instance bound to its
// node (a sidecar's image too), and gets 403 for another node's image,
// a private one, whether it asks by digest under the other image's name
// or under the name of its own image; an admin reads everything. Once
// its instance is bound elsewhere, the node reads its image no more.
func TestNodeReadsOnlyImagesItRuns(t *testing.T) {
	imgs, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	buildImage(t, imgs, "demo/app:1", "mine")
	buildImage(t, imgs, "demo/side:1", "sidecar")
	buildImage(t, imgs, "team/private:1", "secret")
	mine, side, private := partsOf(t, imgs, "demo/app:1"), partsOf(t, imgs, "demo/side:1"), partsOf(t, imgs, "team/private:1")

	c := startCluster(t, func(s *apiserver.Server) {
		s.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages, Readable: s.ReadableImages}))
	})
	ctx := t.Context()
	n1 := c.joinCreds(t, c.url, "n1")
	n1TLS, err := n1.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	bind := func(name, node, img string, containers ...api.Container) {
		t.Helper()
		in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.InstanceSpec{Template: &api.Template{Image: img, Containers: containers}, Owner: api.Owner{Kind: api.KindJob, Name: "j"}, Node: node}}
		if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	bind("mine", "n1", "demo/app:1@"+mine.manifest, api.Container{Name: "side", Sidecar: true, Image: "demo/side:1"})
	bind("theirs", "n2", "team/private:1@"+private.manifest)

	get := func(cfg *tls.Config, path string, admin bool) int {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.url+path, nil)
		if admin {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, r := range []struct {
		name, path string
		node       int // n1's answer; the admin gets 200 for every row
	}{
		{"its image's manifest", "/v2/demo/app/manifests/" + mine.manifest, 200},
		{"its image's config", "/v2/demo/app/blobs/" + mine.config, 200},
		{"its image's layer", "/v2/demo/app/blobs/" + mine.layer, 200},
		{"its sidecar's image by tag", "/v2/demo/side/manifests/1", 200},
		{"its sidecar's layer", "/v2/demo/side/blobs/" + side.layer, 200},
		{"a private image's manifest", "/v2/team/private/manifests/" + private.manifest, 403},
		{"a private image's tag", "/v2/team/private/manifests/1", 403},
		{"a private image's layer", "/v2/team/private/blobs/" + private.layer, 403},
		{"a private image's config", "/v2/team/private/blobs/" + private.config, 403},
		{"a private layer under its own image's name", "/v2/demo/app/blobs/" + private.layer, 403},
		{"a private manifest under its own image's name", "/v2/demo/app/manifests/" + private.manifest, 403},
		{"its image's tags", "/v2/demo/app/tags/list", 200},
		{"its sidecar's tags", "/v2/demo/side/tags/list", 200},
		{"a private repository's tags", "/v2/team/private/tags/list", 403},
		{"the catalog, naming private repositories", "/v2/_catalog", 403},
	} {
		if got := get(n1TLS, r.path, false); got != r.node {
			t.Errorf("n1: %s (%s): %d, want %d", r.name, r.path, got, r.node)
		}
		if got := get(c.trustOnly(), r.path, true); got != 200 {
			t.Errorf("admin: %s (%s): %d, want 200", r.name, r.path, got)
		}
	}

	// The instance goes to n2: n1 runs nothing of demo/app any more.
	if err := c.admin.Instances().Delete(ctx, "default", "mine", 0); err != nil {
		t.Fatal(err)
	}
	bind("mine", "n2", "demo/app:1@"+mine.manifest)
	if got := get(n1TLS, "/v2/demo/app/blobs/"+mine.layer, false); got != 403 {
		t.Errorf("n1 reads a layer of an image only n2 runs now: %d, want 403", got)
	}
}
