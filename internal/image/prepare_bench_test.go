package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// benchStore is a store holding a few one-layer images, as a node has,
// with app:1's layer already unpacked: the path a container start takes.
func benchStore(b *testing.B) *Store {
	b.Helper()
	testenv.RequireRoot(b)
	ctx := context.Background()
	s, err := Open(filepath.Join(b.TempDir(), "images"))
	if err != nil {
		b.Fatal(err)
	}
	for i := range 5 {
		dir := b.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(fmt.Sprint(i)), 0o644); err != nil {
			b.Fatal(err)
		}
		if _, err := s.Build(ctx, dir, BuildOptions{Tag: fmt.Sprintf("app:%d", i), Cmd: []string{"sh"}}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := s.Prepare(ctx, "app:1", "warm"); err != nil {
		b.Fatal(err)
	}
	return s
}

// BenchmarkPrepare times Prepare of an image whose layers are unpacked,
// and the steps it is made of.
func BenchmarkPrepare(b *testing.B) {
	ctx := context.Background()
	b.Run("all", func(b *testing.B) {
		s := benchStore(b)
		i := 0
		for b.Loop() {
			i++
			if _, err := s.Prepare(ctx, "app:1", fmt.Sprintf("c-%d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lock", func(b *testing.B) {
		s := benchStore(b)
		for b.Loop() {
			unlock, err := s.lock()
			if err != nil {
				b.Fatal(err)
			}
			unlock()
		}
	})
	b.Run("resolve", func(b *testing.B) {
		s := benchStore(b)
		for b.Loop() {
			idx, err := s.readIndex()
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := resolveIn(idx, "app:1"); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("load", func(b *testing.B) {
		s := benchStore(b)
		idx, _ := s.readIndex()
		d, name, _ := resolveIn(idx, "app:1")
		for b.Loop() {
			if _, err := s.load(d, name); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("record", func(b *testing.B) {
		s := benchStore(b)
		data, _ := json.Marshal(use{Container: "c", Image: "sha256:0123", Layers: []string{"sha256:4567"}})
		i := 0
		for b.Loop() {
			i++
			if err := s.replaceFile(s.usePath(fmt.Sprintf("c-%d", i)), data, false); err != nil {
				b.Fatal(err)
			}
		}
	})
}
