package registry_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// TestSaveAllPlatformsChecksWhatItFetches saves a two-arch image the
// store holds one platform of: a blob of the other platform whose content
// does not match its digest fails the save, naming it; a connection cut
// half way through it resumes; nothing fetched is kept in the store.
func TestSaveAllPlatformsChecksWhatItFetches(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	upstream := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	amd := randomImage(t, 5, 1, 64<<10)
	arm := randomImage(t, 6, 1, 64<<10)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	remotePush(t, ca, upstream+"/test/multi:1", &authn.Basic{Username: "alice", Password: "s3cret"}, idx)
	f := &faultProxy{}
	host := ca.ServeTLS(t, f.handler(ca, upstream))
	opts := options(configFor(ca, host, "alice", "s3cret"))
	opts.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	ref := host + "/test/multi:1"
	store := openStore(t)
	if _, err := registry.PullUpstream(ctx, store, ref, opts); err != nil {
		t.Fatal(err)
	}
	m, err := arm.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0].Digest

	f.corrupt.Store(layer.String())
	var buf bytes.Buffer
	err = registry.SaveAllPlatforms(ctx, store, &buf, ref, opts)
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), layer.String()) {
		t.Fatalf("save with a corrupt blob: %v, want it refused naming %s", err, layer)
	}
	f.corrupt.Store("")

	f.cut.Store(layer.String())
	buf.Reset()
	if err := registry.SaveAllPlatforms(ctx, store, &buf, ref, opts); err != nil {
		t.Fatalf("save through a cut connection: %v", err)
	}
	if f.ranges.Load() != 1 {
		t.Errorf("%d Range requests, want 1 resuming the cut blob", f.ranges.Load())
	}
	if !bytes.Contains(buf.Bytes(), []byte("blobs/sha256/"+layer.Hex)) {
		t.Errorf("the archive has no arm64 layer %s", layer)
	}
	if _, err := store.OpenBlob(layer); !errors.Is(err, image.ErrNotFound) {
		t.Errorf("the arm64 layer is in the store after the save: %v", err)
	}
}

// TestSaveAllPlatformsTrustsTheGivenCA saves the other platform of a
// two-arch image from a registry whose CA only the caller's CA file
// (berth image save --registry-ca) names: without it the fetch fails on
// the unknown certificate, with it the archive holds the other platform.
func TestSaveAllPlatformsTrustsTheGivenCA(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, "")
	amd := randomImage(t, 7, 1, 16<<10)
	arm := randomImage(t, 8, 1, 16<<10)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	ref := host + "/test/multi:1"
	remotePush(t, ca, ref, authn.Anonymous, idx)
	store := openStore(t)
	pull := options(configFor(ca, host, "", ""))
	pull.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"}
	if _, err := registry.PullUpstream(ctx, store, ref, pull); err != nil {
		t.Fatal(err)
	}
	m, err := arm.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0].Digest

	bare := options(&registry.Config{})
	var buf bytes.Buffer
	if err := registry.SaveAllPlatforms(ctx, store, &buf, ref, bare); err == nil {
		t.Fatal("save from a registry whose CA nothing names: no error")
	}
	bare.CAFile = ca.CAFile
	buf.Reset()
	if err := registry.SaveAllPlatforms(ctx, store, &buf, ref, bare); err != nil {
		t.Fatalf("save with the registry's CA file: %v", err)
	}
	if !bytes.Contains(buf.Bytes(), []byte("blobs/sha256/"+layer.Hex)) {
		t.Errorf("the archive has no arm64 layer %s", layer)
	}
}
