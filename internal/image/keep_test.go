package image_test

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// A server's store keeps the image a moved tag leaves behind while a stored
// service pins it by digest, and prunes it once nothing does.
func TestPinnedImagesOutliveTheirTag(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := t.Context()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	imgs, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	if err := imgs.RetainUnnamed(); err != nil {
		t.Fatal(err)
	}
	old := imagetest.BusyboxImage(t, imgs)
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1,
		Template: api.Template{Image: imagetest.BusyboxTag + "@" + old.Digest}}}
	if err := st.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	moved, err := imgs.Build(ctx, imagetest.BusyboxRootfs(t), image.BuildOptions{Tag: imagetest.BusyboxTag, Cmd: []string{"true"}})
	if err != nil || moved.Digest == old.Digest {
		t.Fatalf("retag: %v, digest %s (was %s)", err, moved.Digest, old.Digest)
	}
	digests := func() []string {
		list, err := imgs.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, i := range list {
			out = append(out, i.Digest)
		}
		return out
	}
	if removed, err := imgs.PruneUnpinned(ctx, st.PinnedImageDigests); err != nil || len(removed) != 0 {
		t.Fatalf("prune while the service pins the old digest removed %v, %v", removed, err)
	}
	if got := digests(); !slices.Contains(got, old.Digest) || !slices.Contains(got, moved.Digest) {
		t.Fatalf("images %v, want both the pinned old one and the tagged new one", got)
	}
	if err := st.Delete(ctx, api.KindService, "default", "web", 0); err != nil {
		t.Fatal(err)
	}
	if removed, err := imgs.PruneUnpinned(ctx, st.PinnedImageDigests); err != nil || len(removed) != 1 || removed[0] != old.Digest {
		t.Fatalf("prune after the service went removed %v, %v; want %s", removed, err, old.Digest)
	}
	if got := digests(); len(got) != 1 || got[0] != moved.Digest {
		t.Fatalf("images %v, want only the tagged %s", got, moved.Digest)
	}
}
