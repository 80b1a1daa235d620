package image_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

func TestBusyboxImage(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	img := imagetest.BusyboxImage(t, s)
	again := imagetest.BusyboxImage(t, s)
	if img.Digest != again.Digest {
		t.Fatalf("two builds of the busybox rootfs: %s and %s", img.Digest, again.Digest)
	}
	start := time.Now()
	snap, err := s.Prepare(ctx, imagetest.BusyboxTag, "bb")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("busybox image %s (%d bytes compressed): unpacked in %v", img.Digest[:19], img.Size, time.Since(start))
	if l, err := os.Readlink(filepath.Join(snap.LowerDirs[0], "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(snap.LowerDirs[0], "www/index.html")); err != nil || string(b) != "hello from berth\n" {
		t.Errorf("www/index.html = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(snap.LowerDirs[0], "tmp")); err != nil || fi.Mode()&os.ModeSticky == 0 {
		t.Errorf("tmp: %v, %v", fi, err)
	}
}

// BenchmarkUnpackBusybox measures Prepare of the busybox image into a
// fresh store (so every iteration really unpacks).
func BenchmarkUnpackBusybox(b *testing.B) {
	testenv.RequireRoot(b)
	ctx := context.Background()
	src, err := image.Open(filepath.Join(b.TempDir(), "images"))
	if err != nil {
		b.Fatal(err)
	}
	imagetest.BusyboxImage(b, src)
	for b.Loop() {
		b.StopTimer()
		s, err := image.Open(filepath.Join(b.TempDir(), "images"))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Import(ctx, src.Root(), image.ImportOptions{}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := s.Prepare(ctx, imagetest.BusyboxTag, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}
