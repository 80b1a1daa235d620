package registry_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

// BenchmarkPull measures pull throughput over loopback HTTP: an image of
// four 16 MiB random layers, generated here, pulled into an empty store
// each time (fetch, verify, fsync, commit). MB/s counts layer and config
// bytes.
//
//	go test -run '^$' -bench Pull -benchtime 5x ./internal/registry
func BenchmarkPull(b *testing.B) {
	ctx := context.Background()
	srvStore := openStore(b)
	base, host := server(b, srvStore, registry.Options{}, nil)
	img := randomImage(b, 42, 4, 16<<20)
	push(b, host, "bench/random:1", img)
	m, err := img.Manifest()
	if err != nil {
		b.Fatal(err)
	}
	total := m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	for _, parallel := range []int{1, 3} {
		b.Run(fmt.Sprintf("parallel=%d", parallel), func(b *testing.B) {
			b.SetBytes(total)
			for b.Loop() {
				b.StopTimer()
				dir, err := os.MkdirTemp(b.TempDir(), "store")
				if err != nil {
					b.Fatal(err)
				}
				dst, err := image.Open(dir)
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := registry.Pull(ctx, dst, base, "bench/random:1", registry.PullOptions{Parallel: parallel}); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}
