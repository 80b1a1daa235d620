package image

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// In a store that retains unnamed images, a moved tag leaves the old image
// (unnamed, unused) in place, for any process that moves it; Prune then
// removes it unless kept, with the blobs only it held.
func TestRetainThenPrune(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	root := filepath.Join(t.TempDir(), "images")
	s, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.RetainUnnamed(); err != nil {
		t.Fatal(err)
	}
	build := func(s *Store, content string) Image {
		t.Helper()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := s.Build(ctx, dir, BuildOptions{Tag: "app:1"})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	old := build(s, "v1")
	// Another process (berth image build on the same data dir) moves the tag.
	other, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	cur := build(other, "v2")
	imgs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Digest != old.Digest || imgs[0].Name != "" || imgs[1].Digest != cur.Digest {
		t.Fatalf("after the tag moved: %+v, want the old image kept unnamed beside the new", imgs)
	}
	removed, err := s.Prune(ctx, func(d string) bool { return d == old.Digest })
	if err != nil || len(removed) != 0 {
		t.Fatalf("prune keeping the old digest removed %v, %v", removed, err)
	}
	removed, err = s.Prune(ctx, func(string) bool { return false })
	if err != nil || len(removed) != 1 || removed[0] != old.Digest {
		t.Fatalf("prune removed %v, %v; want only %s", removed, err, old.Digest)
	}
	if imgs, _ := s.List(ctx); len(imgs) != 1 || imgs[0].Digest != cur.Digest {
		t.Fatalf("after prune: %+v", imgs)
	}
	if _, err := os.Stat(s.blobPath(mustHash(t, old.Digest))); !os.IsNotExist(err) {
		t.Errorf("the old manifest's blob is still there: %v", err)
	}
	// The named image is never pruned.
	if removed, err := s.Prune(ctx, func(string) bool { return false }); err != nil || len(removed) != 0 {
		t.Errorf("a second prune removed %v, %v", removed, err)
	}
}

func mustHash(t *testing.T, digest string) v1.Hash {
	t.Helper()
	h, err := v1.NewHash(digest)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
