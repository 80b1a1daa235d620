package apiserver_test

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// Applies per second through the client, the unix socket, the handlers
// and the store.
func BenchmarkApply(b *testing.B) {
	e := start(b)
	ctx := b.Context()
	mk := func(name string) *api.Instance {
		return &api.Instance{Metadata: api.Metadata{Name: name}, Spec: api.InstanceSpec{Template: api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
	}
	b.Run("sequential", func(b *testing.B) {
		start := time.Now()
		for i := range b.N {
			if _, err := e.client.Instances().Apply(ctx, mk(fmt.Sprintf("s-%d-%d", b.N, i))); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "applies/s")
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
					if _, err := e.client.Instances().Apply(ctx, mk(fmt.Sprintf("p-%d-%d", b.N, i))); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "applies/s")
	})
}
