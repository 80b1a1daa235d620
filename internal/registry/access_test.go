package registry_test

import (
	"errors"
	"net/http"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/registry"
)

// TestReadableFollowsIndexes pulls a two-arch image pinned to its index
// from a registry whose reads Options.Readable narrows to that index: both
// platforms' manifests and blobs come, by digest, while another image of
// the store is refused (403, ErrForbidden), even when it is asked for
// under the index's repository name.
func TestReadableFollowsIndexes(t *testing.T) {
	ctx := t.Context()
	srv := openStore(t)
	var mu sync.Mutex
	var readable []string // nil while the test pushes, as an admin
	base, host := server(t, srv, registry.Options{Readable: func(*http.Request) ([]string, bool, string, error) {
		mu.Lock()
		defer mu.Unlock()
		return readable, readable == nil, "the test's node", nil
	}}, nil)
	amd := randomImage(t, 11, 1, 4<<10)
	arm := randomImage(t, 12, 1, 4<<10)
	other := randomImage(t, 13, 1, 4<<10)
	push(t, host, "demo/multi:amd", amd)
	push(t, host, "demo/multi:arm", arm)
	otherDigest := push(t, host, "team/private:1", other)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	rawIdx, err := idx.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	idxDigest, err := srv.PutIndex(rawIdx)
	if err != nil {
		t.Fatal(err)
	}
	pinned := "demo/multi:1@" + idxDigest.String()
	mu.Lock()
	readable = []string{pinned}
	mu.Unlock()

	for _, arch := range []string{"amd64", "arm64"} {
		dst := openStore(t)
		if _, err := registry.Pull(ctx, dst, base, pinned, registry.PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: arch}}); err != nil {
			t.Errorf("pull %s for %s: %v", pinned, arch, err)
		}
	}
	for _, ref := range []string{"team/private@" + otherDigest.String(), "demo/multi@" + otherDigest.String()} {
		_, err := registry.Pull(ctx, openStore(t), base, ref, registry.PullOptions{})
		if !errors.Is(err, errdefs.ErrForbidden) {
			t.Errorf("pull %s, not readable: %v, want it forbidden", ref, err)
		}
	}
	m, err := other.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(base + "/v2/demo/multi/blobs/" + m.Layers[0].Digest.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a layer of an image not readable, asked under a readable name: %d, want 403", resp.StatusCode)
	}
}
