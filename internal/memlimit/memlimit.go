// Package memlimit sets a server's soft memory limit: the heap size at
// which Go's collector runs however little the heap grew since its last
// run (runtime/debug.SetMemoryLimit).
//
// At Go's default pace (GOGC=100) the heap may grow to twice what it
// holds live before a collection, and what a collection frees stays
// resident until the runtime's background scavenger, paced at about 1% of
// a core, returns it: a server holding 1.3 GB live for 300,000 instances
// was 4 GB resident, 1.3 GB of it freed heap, and reached 6.4 GB during
// churn. Under a limit the runtime returns freed memory as the process
// nears it, and the collector works harder, so the process stays near its
// live heap instead; the limit is soft, so a live heap above it is still
// served (the collector then takes at most about half the CPU, by the
// runtime's own cap).
//
// A fixed limit has to be picked per machine and per cluster size: too
// high and it never binds, too low and a bigger cluster spends its CPU
// collecting. The default, auto (see follow.go), sets the limit after
// each collection from what that collection found live.
package memlimit

import (
	"context"
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/hostinfo"
)

// Default is the flag's default: a limit that follows the live heap
// (Limit.Auto).
const Default = "auto"

// autoCeilingPercent is the most auto sets: half the memory the process
// may use. The rest is for what shares the machine with the server's
// heap: etcd's database, which the kernel maps into the process, and
// under berth up the node's containers.
const autoCeilingPercent = 50

// Minimum is the smallest limit taken: below it the collector would run
// without end on an idle server's heap.
const Minimum = 64 << 20

// Limit is a memory limit as asked: one that follows the live heap
// (Auto), a share of the memory the process may use (Percent), a size
// (Bytes), or none (Off).
type Limit struct {
	Auto    bool
	Percent float64
	Bytes   int64
	Off     bool
}

// Parse reads a limit: "auto", a percentage such as "50%" of the memory
// the process may use (the host's, or its cgroup's limit if lower), a
// size such as "3Gi", or "none".
func Parse(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	switch s {
	case "auto":
		return Limit{Auto: true}, nil
	case "none", "0":
		return Limit{Off: true}, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || math.IsNaN(f) || f <= 0 || f > 100 {
			return Limit{}, fmt.Errorf("memory limit %q: want a percentage above 0 and at most 100", s)
		}
		return Limit{Percent: f}, nil
	}
	q, err := api.ParseQuantity(s)
	if err != nil {
		return Limit{}, fmt.Errorf("memory limit %q: want auto, a percentage such as 50%%, a size such as 3Gi, or none", s)
	}
	if q < Minimum {
		return Limit{}, fmt.Errorf("memory limit %q: want at least %v (or none)", s, api.Quantity(Minimum))
	}
	return Limit{Bytes: int64(q)}, nil
}

func (l Limit) String() string {
	switch {
	case l.Auto:
		return "auto"
	case l.Off:
		return "none"
	case l.Percent > 0:
		return strconv.FormatFloat(l.Percent, 'f', -1, 64) + "%"
	}
	return api.Quantity(l.Bytes).String()
}

// Applied is the limit in effect: Bytes (math.MaxInt64 for none), and
// what set it. Under auto, Bytes is the limit at the start, and it moves
// between Minimum and Ceiling after each collection.
type Applied struct {
	Bytes   int64
	Source  string
	Ceiling int64
}

// Set puts l in effect, unless GOMEMLIMIT is in the environment: the
// runtime took that at start, and an operator's setting there wins. The
// zero Limit leaves the runtime's limit as it is (processes that embed a
// server, such as tests). memory is the memory the process may use, for
// a percentage or auto's ceiling; nil reads it from the host
// (hostinfo.ProcessMemory). Under auto, the limit follows the live heap
// until ctx ends, and then goes back to what it was; one process runs
// one such server at a time.
func Set(ctx context.Context, l Limit, memory func() (int64, error)) (Applied, error) {
	if env, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return Applied{Bytes: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT=" + env}, nil
	}
	if l == (Limit{}) {
		return Applied{Bytes: debug.SetMemoryLimit(-1), Source: "unset"}, nil
	}
	if l.Auto {
		return setAuto(ctx, memory)
	}
	b, src, err := l.bytes(memory)
	if err != nil {
		return Applied{}, err
	}
	debug.SetMemoryLimit(b)
	return Applied{Bytes: b, Source: src}, nil
}

// setAuto starts the follower (see follow.go) under a ceiling of half the
// memory the process may use.
func setAuto(ctx context.Context, memory func() (int64, error)) (Applied, error) {
	ceiling, total, err := Limit{Percent: autoCeilingPercent}.percentBytes(memory)
	if err != nil {
		return Applied{}, fmt.Errorf("memory limit auto: %w", err)
	}
	f := &follower{headroom: Headroom, floor: Minimum, ceiling: ceiling, read: readSample, apply: debug.SetMemoryLimit}
	b := f.start(ctx)
	src := fmt.Sprintf("--memory-limit auto: after each collection, live heap × %v + stacks and runtime, at most %d%% of %.1f GiB",
		1+Headroom, autoCeilingPercent, float64(total)/(1<<30))
	return Applied{Bytes: b, Source: src, Ceiling: ceiling}, nil
}

// bytes resolves l to a number of bytes and says how.
func (l Limit) bytes(memory func() (int64, error)) (int64, string, error) {
	switch {
	case l.Off:
		return math.MaxInt64, "none", nil
	case l.Percent == 0:
		return l.Bytes, "--memory-limit " + l.String(), nil
	}
	b, total, err := l.percentBytes(memory)
	if err != nil {
		return 0, "", err
	}
	return b, fmt.Sprintf("--memory-limit %v of %.1f GiB", l, float64(total)/(1<<30)), nil
}

// percentBytes is l.Percent of the memory the process may use, at least
// Minimum, and that memory.
func (l Limit) percentBytes(memory func() (int64, error)) (b, total int64, err error) {
	if memory == nil {
		memory = hostinfo.ProcessMemory
	}
	total, err = memory()
	if err != nil {
		return 0, 0, fmt.Errorf("memory limit %v: the memory this process may use: %w", l, err)
	}
	return max(int64(float64(total)*l.Percent/100), Minimum), total, nil
}
