// Package memlimit sets a server's soft memory limit: the heap size at
// which Go's collector runs however little the heap grew since its last
// run (runtime/debug.SetMemoryLimit).
//
// At Go's default pace (GOGC=100) the heap may grow to twice what it
// holds live before a collection: a server holding 2.5 GB of objects for
// 300,000 instances reached 6.4 GB resident. Under a limit the collector
// works harder as the heap nears it, so the process stays near its live
// heap instead; the limit is soft, so a live heap above it is still
// served (the collector then takes at most about half the CPU, by the
// runtime's own cap).
package memlimit

import (
	"fmt"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/hostinfo"
)

// Default is the flag's default: half the memory the process may use.
// The rest is for what shares the machine with the server's heap: etcd's
// database, which the kernel maps into the process, and under berth up
// the node's containers.
const Default = "50%"

// Minimum is the smallest limit taken: below it the collector would run
// without end on an idle server's heap.
const Minimum = 64 << 20

// Limit is a memory limit as asked: a share of the memory the process
// may use (Percent), a size (Bytes), or none (Off).
type Limit struct {
	Percent float64
	Bytes   int64
	Off     bool
}

// Parse reads a limit: a percentage such as "50%" of the memory the
// process may use (the host's, or its cgroup's limit if lower), a size
// such as "3Gi", or "none".
func Parse(s string) (Limit, error) {
	s = strings.TrimSpace(s)
	if s == "none" || s == "0" {
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
		return Limit{}, fmt.Errorf("memory limit %q: want a percentage such as 50%%, a size such as 3Gi, or none", s)
	}
	if q < Minimum {
		return Limit{}, fmt.Errorf("memory limit %q: want at least %v (or none)", s, api.Quantity(Minimum))
	}
	return Limit{Bytes: int64(q)}, nil
}

func (l Limit) String() string {
	switch {
	case l.Off:
		return "none"
	case l.Percent > 0:
		return strconv.FormatFloat(l.Percent, 'f', -1, 64) + "%"
	}
	return api.Quantity(l.Bytes).String()
}

// Applied is the limit in effect: Bytes (math.MaxInt64 for none), and
// what set it.
type Applied struct {
	Bytes  int64
	Source string
}

// Set puts l in effect, unless GOMEMLIMIT is in the environment: the
// runtime took that at start, and an operator's setting there wins. The
// zero Limit leaves the runtime's limit as it is (processes that embed a
// server, such as tests). memory is the memory the process may use, for
// a percentage; nil reads it from the host (hostinfo.ProcessMemory).
func Set(l Limit, memory func() (int64, error)) (Applied, error) {
	if env, ok := os.LookupEnv("GOMEMLIMIT"); ok {
		return Applied{Bytes: debug.SetMemoryLimit(-1), Source: "GOMEMLIMIT=" + env}, nil
	}
	if l == (Limit{}) {
		return Applied{Bytes: debug.SetMemoryLimit(-1), Source: "unset"}, nil
	}
	b, src, err := l.bytes(memory)
	if err != nil {
		return Applied{}, err
	}
	debug.SetMemoryLimit(b)
	return Applied{Bytes: b, Source: src}, nil
}

// bytes resolves l to a number of bytes and says how.
func (l Limit) bytes(memory func() (int64, error)) (int64, string, error) {
	switch {
	case l.Off:
		return math.MaxInt64, "none", nil
	case l.Percent == 0:
		return l.Bytes, "--memory-limit " + l.String(), nil
	}
	if memory == nil {
		memory = hostinfo.ProcessMemory
	}
	total, err := memory()
	if err != nil {
		return 0, "", fmt.Errorf("memory limit %v: the memory this process may use: %w", l, err)
	}
	b := max(int64(float64(total)*l.Percent/100), Minimum)
	return b, fmt.Sprintf("--memory-limit %v of %.1f GiB", l, float64(total)/(1<<30)), nil
}
