package memlimit

import (
	"context"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestAutoLimit: the limit is the heap's goal at the headroom with its
// margin, plus the runtime's other memory, held between floor and
// ceiling.
func TestAutoLimit(t *testing.T) {
	const mib = 1 << 20
	s := sample{Live: 500 * mib, Stacks: 100 * mib, Globals: 10 * mib, NonHeap: 300 * mib}
	// Headroom 1: the goal of GOGC=100, 500 + 610 MiB.
	want := int64(1110*mib*(1+autoMargin)) + 300*mib + autoSlack
	if got := autoLimit(s, 1, Minimum, 16<<30); got != want {
		t.Errorf("autoLimit(%+v, 1) = %d MiB, want %d MiB", s, got>>20, want>>20)
	}
	// A smaller headroom, a smaller limit, above the live heap and the
	// runtime's memory.
	half := autoLimit(s, 0.5, Minimum, 16<<30)
	if half >= want || half <= s.Live+s.NonHeap {
		t.Errorf("autoLimit(%+v, 0.5) = %d MiB, want between %d and %d MiB", s, half>>20, (s.Live+s.NonHeap)>>20, want>>20)
	}
	if got := autoLimit(s, 1, Minimum, 1<<30); got != 1<<30 {
		t.Errorf("autoLimit under a 1 GiB ceiling = %d MiB, want the ceiling", got>>20)
	}
	// A heap of 3 GiB grows by maxGrowth, not its size.
	big := sample{Live: 3072 * mib, Stacks: 300 * mib, NonHeap: 400 * mib}
	goal := float64(big.Live + maxGrowth)
	if got, want := autoLimit(big, 1, Minimum, 16<<30), int64(goal*(1+autoMargin))+400*mib+autoSlack; got != want {
		t.Errorf("autoLimit(%+v, 1) = %d MiB, want %d MiB: the heap grown by maxGrowth", big, got>>20, want>>20)
	}
	if got := autoLimit(sample{Live: mib}, 1, Minimum, 16<<30); got != Minimum {
		t.Errorf("autoLimit for a 1 MiB heap = %d MiB, want the floor", got>>20)
	}
}

// TestFollowerFake: the follower applies the limit for what it reads at
// start, and again on each update, and puts the earlier limit back when
// its context ends.
func TestFollowerFake(t *testing.T) {
	const mib = 1 << 20
	var s sample
	var limit atomic.Int64
	limit.Store(math.MaxInt64)
	applied := make(chan int64, 10)
	f := &follower{headroom: 1, floor: Minimum, ceiling: 4 << 30,
		read: func(out *sample) { *out = s },
		apply: func(b int64) int64 {
			if b < 0 {
				return limit.Load()
			}
			return limit.Swap(b)
		},
		applied: func(b int64) { applied <- b },
	}
	s = sample{Live: 500 * mib}
	ctx, cancel := context.WithCancel(t.Context())
	first := f.start(ctx)
	if want := autoLimit(s, 1, Minimum, 4<<30); first != want || <-applied != want {
		t.Fatalf("first limit %d, want %d", first, want)
	}
	stopFollower(t, cancel, f.apply, math.MaxInt64)
}

// stopFollower ends a follower's context and waits until it has put the
// earlier limit back, its last act, so that no later test sees it move.
func stopFollower(t *testing.T, cancel func(), apply func(int64) int64, was int64) {
	t.Helper()
	cancel()
	deadline := time.Now().Add(time.Minute)
	for apply(-1) != was {
		if time.Now().After(deadline) {
			t.Fatalf("the limit is %d a minute after the follower's context ended, want the earlier %d back", apply(-1), was)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFollowerFollowsGC runs the follower for real: the runtime's limit
// rises after a collection finds a large heap live, and falls after one
// finds it gone.
func TestFollowerFollowsGC(t *testing.T) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set for this test process")
	}
	keepLimit(t)
	applied := make(chan int64, 1)
	f := &follower{headroom: 1, floor: Minimum, ceiling: math.MaxInt64 / 2, read: readSample, apply: debug.SetMemoryLimit,
		applied: func(b int64) {
			select {
			case <-applied: // keep only the latest
			default:
			}
			applied <- b
		}}
	ctx, cancel := context.WithCancel(t.Context())
	defer stopFollower(t, cancel, debug.SetMemoryLimit, debug.SetMemoryLimit(-1))
	f.start(ctx)

	const big = 256 << 20
	// waitLimit collects until the limit the follower applies meets ok.
	waitLimit := func(what string, ok func(int64) bool) {
		t.Helper()
		deadline := time.After(2 * time.Minute)
		for {
			runtime.GC()
			select {
			case b := <-applied:
				if ok(b) && ok(debug.SetMemoryLimit(-1)) {
					t.Logf("limit %d MiB, %s", b>>20, what)
					return
				}
			case <-time.After(time.Second): // the sentinel's cleanup runs after the sweep; collect again
			case <-deadline:
				t.Fatalf("the limit is %d MiB two minutes on; want it %s", debug.SetMemoryLimit(-1)>>20, what)
			}
		}
	}
	hold := make([]*[1 << 20]byte, big>>20)
	for i := range hold {
		hold[i] = new([1 << 20]byte)
	}
	waitLimit("above twice the 256 MiB held", func(b int64) bool { return b > 2*big })
	runtime.KeepAlive(hold)
	hold = nil
	waitLimit("below the 256 MiB no longer held", func(b int64) bool { return b < big })
}

// TestSetAuto: auto starts at a limit within its bounds and says so.
func TestSetAuto(t *testing.T) {
	if _, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		t.Skip("GOMEMLIMIT is set for this test process")
	}
	keepLimit(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer stopFollower(t, cancel, debug.SetMemoryLimit, debug.SetMemoryLimit(-1))
	a, err := Set(ctx, Limit{Auto: true}, func() (int64, error) { return 8 << 30, nil })
	if err != nil {
		t.Fatal(err)
	}
	if a.Ceiling != 4<<30 || a.Bytes < Minimum || a.Bytes > a.Ceiling || !strings.Contains(a.Source, "auto") || !strings.Contains(a.Source, "50% of 8.0 GiB") {
		t.Errorf("Set(auto) = %+v; want a limit between %d and 4 GiB, from auto, under 50%% of 8.0 GiB", a, Minimum)
	}
	if got := debug.SetMemoryLimit(-1); got != a.Bytes {
		t.Errorf("the runtime's limit is %d, want Set's %d", got, a.Bytes)
	}
}
