package image

import (
	"archive/tar"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestOverlayWhiteouts stacks layers with a real overlay mount and checks
// that whiteouts and opaque directories hide what the lower layers have.
func TestOverlayWhiteouts(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	src := t.TempDir()
	img := testImage(t, nil,
		tarLayer(t,
			file{name: "a/", typ: tar.TypeDir}, file{name: "a/keep", body: "k"}, file{name: "a/gone", body: "g"},
			file{name: "b/", typ: tar.TypeDir}, file{name: "b/old", body: "o"},
			file{name: "c", body: "c"},
			file{name: "d/", typ: tar.TypeDir}, file{name: "d/x", body: "x"}),
		tarLayer(t,
			file{name: "a/", typ: tar.TypeDir}, file{name: "a/.wh.gone"},
			file{name: "b/", typ: tar.TypeDir}, file{name: "b/.wh..wh..opq"}, file{name: "b/new", body: "n"},
			file{name: ".wh.c"}),
		tarLayer(t,
			file{name: "d/", typ: tar.TypeDir}, file{name: "d/.wh.x"}, file{name: "d/y", body: "y"},
			file{name: "c", body: "back"}),
	)
	writeLayout(t, src, img, "wh/app:1")
	if _, err := s.Import(ctx, src, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Prepare(ctx, "wh/app:1", "c1")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"a/keep": "k", "a/gone": "", "b/old": "", "b/new": "n", "c": "back", "d/x": "", "d/y": "y"}
	check := func(t *testing.T, root string) {
		t.Helper()
		for f, body := range want {
			b, err := os.ReadFile(filepath.Join(root, f))
			switch {
			case body == "" && !errors.Is(err, os.ErrNotExist):
				t.Errorf("%s should be hidden, got %q, %v", f, b, err)
			case body != "" && string(b) != body:
				t.Errorf("%s = %q, %v; want %q", f, b, err, body)
			}
		}
	}

	for _, ro := range []bool{false, true} {
		base := t.TempDir()
		target := filepath.Join(base, "rootfs")
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := MountRootfs(snap.LowerDirs, filepath.Join(base, "upper"), filepath.Join(base, "work"), target, ro); err != nil {
			t.Fatal(err)
		}
		check(t, target)
		err := os.WriteFile(filepath.Join(target, "a/keep"), []byte("changed"), 0o644)
		if ro && err == nil {
			t.Error("read-only rootfs accepted a write")
		}
		if !ro && err != nil {
			t.Errorf("write to rootfs: %v", err)
		}
		if err := UnmountRootfs(target); err != nil {
			t.Fatal(err)
		}
		if err := UnmountRootfs(target); err != nil {
			t.Errorf("second unmount: %v", err)
		}
		// Shared layers never see a container's writes.
		if b, _ := os.ReadFile(filepath.Join(snap.LowerDirs[2], "a/keep")); string(b) != "k" {
			t.Fatalf("layer modified through the rootfs: %q", b)
		}
	}

	// One layer, read-only: a read-only bind mount.
	target := filepath.Join(t.TempDir(), "rootfs")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := MountRootfs(snap.LowerDirs[2:], "", "", target, true); err != nil {
		t.Fatal(err)
	}
	defer UnmountRootfs(target)
	if b, err := os.ReadFile(filepath.Join(target, "a/gone")); err != nil || string(b) != "g" {
		t.Errorf("bottom layer a/gone = %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(target, "new"), nil, 0o644); err == nil {
		t.Error("read-only bind accepted a write")
	}
}
