package memlimit

import (
	"context"
	"runtime"
	"runtime/metrics"
)

// Headroom is how far auto lets the heap grow past what the last
// collection found live, as a share of it (and of the stacks and globals
// the collector scans, as GOGC counts them). At 1 the limit sits just
// above the goal of Go's default pace (GOGC=100): the collector runs as
// often as without a limit, and the limit binds after a burst, when the
// runtime would otherwise keep what the burst freed. On 15,000 nodes and
// 300,000 instances that was 3.3 GB of anonymous memory after the apply
// instead of 4.1, the apply taking 88 s against 81. Below 1 the
// collector also runs more often, and the runtime hands memory back and
// faults it in again between collections: at 0.75 the same apply took
// 140 s (3.1 GB), at 0.5 127 s (2.3 GB), the collector's assists slowing
// etcd's apply loop. GOGC, when lower, still paces the collector; maxGrowth
// bounds the growth of a large heap.
const Headroom = 1.0

// maxGrowth bounds, in bytes, how far auto lets the heap grow past what
// the last collection found live: Headroom of it up to 1.25 GiB, then
// 1.25 GiB. Doubling a large heap holds gigabytes that the collector
// would free for little: on 15,000 nodes and 300,000 instances (1.7 GB
// live at the busiest) the server's peak RSS was 3,697 to 4,267 MiB
// across four runs with the heap doubling. Bounded at 1.5 GiB it peaked
// at 3,649 and 3,751 MiB (applies of 100 and 98 s), at 1.25 GiB at 3,342
// to 3,544 MiB over six runs (applies of 86 to 110 s), at 1 GiB at 2,995
// and 3,038 MiB, but the applies took 120 and 116 s, the collector's work
// slowing etcd. Since the controllers keep the scheduler's view (about
// 145 MB live), 1.25 GiB peaked at 3,497 to 3,595 MiB over three runs.
const maxGrowth = 5 << 28

// autoMargin is what the limit leaves above the heap's goal, as a share
// of the goal: the runtime aims about 3% under a limit, and the heap's
// size classes waste some of each span.
const autoMargin = 0.05

// autoSlack is what the limit leaves, in bytes, for the runtime's own
// memory (goroutine stacks, metadata) to grow between two collections.
const autoSlack = 32 << 20

// sample is what the limit is computed from, as the last collection left
// it (runtime/metrics).
type sample struct {
	Live    int64 // heap objects found live
	Stacks  int64 // goroutine stacks scanned
	Globals int64 // global variables scanned
	NonHeap int64 // memory the runtime holds outside heap objects: stacks, metadata, buffers
}

// autoLimit is the limit for s: the heap's goal (Live grown by headroom
// of Live, Stacks and Globals, as the runtime paces GOGC, by maxGrowth at
// most) with a margin, plus the runtime's other memory, between floor
// and ceiling.
func autoLimit(s sample, headroom float64, floor, ceiling int64) int64 {
	goal := float64(s.Live) + min(headroom*float64(s.Live+s.Stacks+s.Globals), maxGrowth)
	b := int64(goal*(1+autoMargin)) + s.NonHeap + autoSlack
	return min(max(b, floor), ceiling)
}

// sampleMetrics are the runtime/metrics readSample reads, in the order it
// reads them.
var sampleMetrics = []string{
	"/gc/heap/live:bytes",
	"/gc/scan/stack:bytes",
	"/gc/scan/globals:bytes",
	"/memory/classes/total:bytes",
	"/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes",
	"/memory/classes/heap/free:bytes",
	"/memory/classes/heap/released:bytes",
}

// readSample reads the runtime's figures into s.
func readSample(s *sample) {
	ms := make([]metrics.Sample, len(sampleMetrics))
	for i, name := range sampleMetrics {
		ms[i].Name = name
	}
	metrics.Read(ms)
	v := func(i int) int64 {
		if ms[i].Value.Kind() != metrics.KindUint64 {
			return 0 // not in this Go; the limit errs high on the margin
		}
		return int64(ms[i].Value.Uint64())
	}
	s.Live, s.Stacks, s.Globals = v(0), v(1), v(2)
	s.NonHeap = v(3) - v(4) - v(5) - v(6) - v(7)
}

// follower keeps the limit at autoLimit of what each collection left.
type follower struct {
	headroom       float64
	floor, ceiling int64
	read           func(*sample)
	apply          func(int64) int64 // debug.SetMemoryLimit
	// applied, when set, is told each limit once it is in effect (tests).
	applied func(int64)
}

// update applies the limit for the runtime's figures now, and returns it.
func (f *follower) update() int64 {
	var s sample
	f.read(&s)
	b := autoLimit(s, f.headroom, f.floor, f.ceiling)
	f.apply(b)
	if f.applied != nil {
		f.applied(b)
	}
	return b
}

// start applies the limit for now, follows each collection until ctx
// ends, then puts the limit that was in effect before back. It returns
// the first limit.
func (f *follower) start(ctx context.Context) int64 {
	was := f.apply(-1)
	b := f.update()
	cycles := gcCycles(ctx)
	go func() {
		for {
			select {
			case <-ctx.Done():
				f.apply(was)
				return
			case <-cycles:
				f.update()
			}
		}
	}()
	return b
}

// sentinel is an object nothing keeps: a collection frees it, and its
// cleanup says so. It is larger than 16 bytes so that the runtime does
// not pack it with other small objects, which could keep it alive.
type sentinel struct{ _ [64]byte }

// gcCycles sends on the channel it returns after collections, until ctx
// ends: a sentinel's cleanup signals and leaves the next sentinel, so
// the process does nothing between collections (no polling). A signal
// not yet taken stands for any number of collections.
func gcCycles(ctx context.Context) <-chan struct{} {
	ch := make(chan struct{}, 1)
	armSentinel(ctx, ch)
	return ch
}

// sentinelArgs is what a sentinel's cleanup needs; it holds nothing of
// the sentinel.
type sentinelArgs struct {
	ctx context.Context
	ch  chan struct{}
}

// armSentinel leaves a sentinel for the next collection.
func armSentinel(ctx context.Context, ch chan struct{}) {
	runtime.AddCleanup(new(sentinel), func(a sentinelArgs) {
		if a.ctx.Err() != nil {
			return
		}
		select {
		case a.ch <- struct{}{}:
		default:
		}
		armSentinel(a.ctx, a.ch)
	}, sentinelArgs{ctx, ch})
}
