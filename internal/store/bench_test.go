package store

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// Puts per second through the store, each a full Create (validation,
// JSON, one etcd transaction with its compare).
func BenchmarkCreate(b *testing.B) {
	dir := b.TempDir()
	s, err := Open(b.Context(), Config{DataDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.Run("in-process", func(b *testing.B) { benchCreates(b, s) })
	// The same etcd through gRPC on its unix socket, as with --etcd-endpoints.
	ext, err := Open(b.Context(), Config{EtcdEndpoints: []string{"unix://" + dir + "/etcd/client.sock"}, Prefix: "/grpc"})
	if err != nil {
		b.Fatal(err)
	}
	defer ext.Close()
	b.Run("grpc", func(b *testing.B) { benchCreates(b, ext) })
}

func benchCreates(b *testing.B, s *Store) {
	ctx := b.Context()
	b.Run("sequential", func(b *testing.B) {
		start := time.Now()
		for i := range b.N {
			if err := s.Create(ctx, instance(fmt.Sprintf("seq-%d-%d", b.N, i))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
	})
	b.Run("32-goroutines", func(b *testing.B) {
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for range 32 {
			wg.Go(func() {
				for {
					i := next.Add(1)
					if i > int64(b.N) {
						return
					}
					if err := s.Create(ctx, instance(fmt.Sprintf("par-%d-%d", b.N, i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
	})
	b.Run("batched-256", func(b *testing.B) {
		start := time.Now()
		objs := make([]api.Object, 0, 256)
		flush := func() {
			if err := s.CreateMany(ctx, objs); err != nil {
				b.Fatal(err)
			}
			objs = objs[:0]
		}
		for i := range b.N {
			objs = append(objs, instance(fmt.Sprintf("batch-%d-%d", b.N, i)))
			if len(objs) == cap(objs) {
				flush()
			}
		}
		flush()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
	})
}

// Updates per second: each reads the object, merges and writes with a
// compare on the revision it read.
func BenchmarkUpdate(b *testing.B) {
	s := openStore(b)
	ctx := b.Context()
	in := instance("u")
	if err := s.Create(ctx, in); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	for i := range b.N {
		in.Spec.Priority = i
		if err := s.Update(ctx, in, in.Metadata.Revision); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "puts/s")
}
