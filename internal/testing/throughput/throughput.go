// Package throughput measures how many writes per second a benchmark's
// write makes, from one caller and from many at once.
package throughput

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Run runs write b.N times in two sub-benchmarks, "sequential" and
// "32-goroutines", and reports the writes per second as unit. write gets
// a name no other call of the run gets, for the object it writes.
func Run(b *testing.B, unit string, write func(name string) error) {
	b.Run("sequential", func(b *testing.B) {
		start := time.Now()
		for i := range b.N {
			if err := write(fmt.Sprintf("seq-%d-%d", b.N, i)); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
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
					if err := write(fmt.Sprintf("par-%d-%d", b.N, i)); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
	})
}
