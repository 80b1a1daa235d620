package dashboard

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/api/errdefs"
)

// The charts: while a page is open, the hub reads every node's agent
// metrics (one request per node, through the API) each StatsInterval,
// and keeps statsKept of each series: a node's CPU and memory (the sum of
// its running instances') and each instance's, from the cgroup figures
// the agents export under cAdvisor's names. GET /ui/metrics hands a page
// the samples it has not seen; the page draws them as lines, with no
// library.
const (
	StatsInterval = 2 * time.Second
	statsKept     = 300 // ten minutes
	// statsRetry is how long a node whose metrics failed is left alone.
	statsRetry = 30 * time.Second
	// statsParallel bounds the node reads in flight.
	statsParallel = 8
)

// sample is one reading: when (Unix ms), CPU in cores, memory in bytes.
type sample [3]float64

// series keys: "node/NAME" and "instance/NAMESPACE/NAME".
func nodeSeries(name string) string         { return "node/" + name }
func instanceSeries(ns, name string) string { return "instance/" + ns + "/" + name }

// cpuReading is an instance's CPU counter at one reading.
type cpuReading struct {
	at      time.Time
	seconds float64
}

// stats keeps the series.
type stats struct {
	mu      sync.Mutex
	series  map[string][]sample
	lastCPU map[string]cpuReading // by instance series key
	failed  map[string]time.Time  // node → when its read last failed
}

func newStats() *stats {
	return &stats{series: map[string][]sample{}, lastCPU: map[string]cpuReading{}, failed: map[string]time.Time{}}
}

// instanceFigures are one instance's figures in a node's metrics.
type instanceFigures struct {
	cpuSeconds, memBytes float64
}

// parseNodeMetrics picks each instance's CPU counter and working set out
// of a node's metrics text.
func parseNodeMetrics(text []byte) (map[string]instanceFigures, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return nil, err
	}
	out := map[string]instanceFigures{}
	pick := func(name string, set func(f *instanceFigures, v float64)) {
		for _, m := range fams[name].GetMetric() {
			ns, inst := label(m, "namespace"), label(m, "instance")
			if inst == "" {
				continue
			}
			k := instanceSeries(ns, inst)
			f := out[k]
			switch {
			case m.Counter != nil:
				set(&f, m.Counter.GetValue())
			case m.Gauge != nil:
				set(&f, m.Gauge.GetValue())
			}
			out[k] = f
		}
	}
	pick("container_cpu_usage_seconds_total", func(f *instanceFigures, v float64) { f.cpuSeconds = v })
	pick("container_memory_working_set_bytes", func(f *instanceFigures, v float64) { f.memBytes = v })
	return out, nil
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// add records a node's reading at now: each instance's CPU as the rate
// since its last reading (none on its first), its memory, and the node's
// sums.
func (s *stats) add(node string, now time.Time, figs map[string]instanceFigures) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t := float64(now.UnixMilli())
	var cpu, mem float64
	for k, f := range figs {
		prev, seen := s.lastCPU[k]
		s.lastCPU[k] = cpuReading{at: now, seconds: f.cpuSeconds}
		mem += f.memBytes
		rate := 0.0
		if seen && now.After(prev.at) && f.cpuSeconds >= prev.seconds {
			rate = (f.cpuSeconds - prev.seconds) / now.Sub(prev.at).Seconds()
		} else if !seen {
			// A rate needs two readings: the memory alone would draw a
			// misleading zero CPU, so the first reading only primes.
			continue
		}
		rate = math.Round(rate*1e4) / 1e4
		cpu += rate
		s.append(k, sample{t, rate, f.memBytes})
	}
	s.append(nodeSeries(node), sample{t, cpu, mem})
}

func (s *stats) append(k string, v sample) {
	l := append(s.series[k], v)
	if len(l) > statsKept {
		l = append(l[:0:0], l[len(l)-statsKept:]...)
	}
	s.series[k] = l
}

// forget drops what is older than the window: series of instances and
// nodes gone for good end that way.
func (s *stats) forget(now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cut := float64(now.Add(-statsKept * StatsInterval).UnixMilli())
	for k, l := range s.series {
		if len(l) == 0 || l[len(l)-1][0] < cut {
			delete(s.series, k)
			delete(s.lastCPU, k)
		}
	}
	for k, r := range s.lastCPU {
		if r.at.Before(now.Add(-statsKept * StatsInterval)) {
			delete(s.lastCPU, k)
		}
	}
}

// since is every sample taken after t (Unix ms) of the series keep admits.
func (s *stats) since(t float64, keep func(k string) bool) map[string][]sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]sample{}
	for k, l := range s.series {
		if !keep(k) {
			continue
		}
		i := len(l)
		for i > 0 && l[i-1][0] > t {
			i--
		}
		if i < len(l) {
			out[k] = append([]sample(nil), l[i:]...)
		}
	}
	return out
}

// top is the n instance series with the most CPU, and the n with the most
// memory, at their latest samples, among the instances still reported
// (gone ones keep their past, not a place in the top).
func (s *stats) top(n int) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	type latest struct {
		k        string
		cpu, mem float64
	}
	newest := 0.0
	for _, l := range s.series {
		if len(l) > 0 {
			newest = max(newest, l[len(l)-1][0])
		}
	}
	live := newest - float64((2 * StatsInterval).Milliseconds())
	var all []latest
	for k, l := range s.series {
		if strings.HasPrefix(k, "instance/") && len(l) > 0 && l[len(l)-1][0] >= live {
			v := l[len(l)-1]
			all = append(all, latest{k, v[1], v[2]})
		}
	}
	out := map[string]bool{}
	for _, by := range []func(a, b latest) int{
		func(a, b latest) int { return cmp.Or(cmp.Compare(b.cpu, a.cpu), strings.Compare(a.k, b.k)) },
		func(a, b latest) int { return cmp.Or(cmp.Compare(b.mem, a.mem), strings.Compare(a.k, b.k)) },
	} {
		slices.SortFunc(all, by)
		for _, l := range all[:min(n, len(all))] {
			out[l.k] = true
		}
	}
	return out
}

// pollStats reads the nodes' figures every StatsInterval while a page is
// open, until ctx ends. With no page open it waits for one, with no timer:
// ticking for nobody woke an idle server every StatsInterval.
func (h *hub) pollStats(ctx context.Context) {
	tick := time.NewTicker(StatsInterval)
	defer tick.Stop()
	for {
		if !h.watched() {
			tick.Stop()
			select {
			case <-ctx.Done():
				return
			case <-h.opened:
			}
			if !h.watched() {
				continue // it closed already
			}
			// The page's first figures now, not a tick later.
			tick.Reset(StatsInterval)
		} else {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if !h.watched() {
				continue // the last page closed while this tick was due
			}
		}
		h.readStats(ctx, time.Now())
	}
}

// watched says whether any page follows the hub.
func (h *hub) watched() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs) > 0
}

func (h *hub) readStats(ctx context.Context, now time.Time) {
	h.mu.Lock()
	nodes := make([]string, 0, len(h.objs["node"]))
	for name := range h.objs["node"] {
		nodes = append(nodes, name)
	}
	h.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, StatsInterval)
	defer cancel()
	sem := make(chan struct{}, statsParallel)
	var wg sync.WaitGroup
	for _, node := range nodes {
		h.stats.mu.Lock()
		failedAt, failed := h.stats.failed[node]
		h.stats.mu.Unlock()
		if failed && now.Sub(failedAt) < statsRetry {
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			text, err := h.c.NodeMetrics(ctx, node)
			var figs map[string]instanceFigures
			if err == nil {
				figs, err = parseNodeMetrics(text)
			}
			h.stats.mu.Lock()
			if err != nil {
				h.stats.failed[node] = now
				h.stats.mu.Unlock()
				h.log.Debug("node metrics for the charts", "node", node, "err", err)
				return
			}
			delete(h.stats.failed, node)
			h.stats.mu.Unlock()
			h.stats.add(node, now, figs)
		}()
	}
	wg.Wait()
	h.stats.forget(now)
}

// maxTop bounds how many instances a page may ask the top of.
const maxTop = 50

// metrics answers GET /ui/metrics?since=MS&top=N&instance=NS/NAME: the
// samples after MS (all kept when absent) of every node, of the N
// instances using the most CPU and the N using the most memory, and of
// the instance named.
func (h *Handler) metrics(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.current(r); !ok {
		writeError(w, fmt.Errorf("%w: sign in first", errdefs.ErrUnauthorized))
		return
	}
	q := r.URL.Query()
	since, top := 0.0, 0
	if v := q.Get("since"); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 {
			writeError(w, fmt.Errorf("%w: since %q: want a time in Unix milliseconds", errdefs.ErrInvalidArgument, v))
			return
		}
		since = f
	}
	if v := q.Get("top"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > maxTop {
			writeError(w, fmt.Errorf("%w: top %q: want a count from 0 to %d", errdefs.ErrInvalidArgument, v, maxTop))
			return
		}
		top = n
	}
	wanted := h.hub.stats.top(top)
	if v := q.Get("instance"); v != "" {
		ns, name, ok := strings.Cut(v, "/")
		if !ok {
			writeError(w, fmt.Errorf("%w: instance %q: want NAMESPACE/NAME", errdefs.ErrInvalidArgument, v))
			return
		}
		wanted[instanceSeries(ns, name)] = true
	}
	series := h.hub.stats.since(since, func(k string) bool { return strings.HasPrefix(k, "node/") || wanted[k] })
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{"now": time.Now().UnixMilli(), "interval": StatsInterval.Milliseconds(), "series": series})
}
