package dashboard

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
)

// nodeText is a node's metrics as an agent writes them: two instances'
// CPU counters and working sets, beside figures the charts do not use.
func nodeText(cpuA, cpuB float64) []byte {
	return fmt.Appendf(nil, `# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="c1",instance="web-a",namespace="default",node="n1",service="web"} %g
container_cpu_usage_seconds_total{container="c2",instance="web-b",namespace="default",node="n1",service="web"} %g
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="c1",instance="web-a",namespace="default",node="n1",service="web"} 1048576
container_memory_working_set_bytes{container="c2",instance="web-b",namespace="default",node="n1",service="web"} 3145728
# TYPE berth_image_pulls_total counter
berth_image_pulls_total{result="ok"} 3
`, cpuA, cpuB)
}

// The charts' series: an instance's CPU is the rate between two readings
// (the first only primes it), its memory the working set, and the node's
// the sums; a page gets the samples after the time it names, of the top
// instances it asks for.
func TestStatsFromNodeMetrics(t *testing.T) {
	s := newStats()
	t0 := time.Unix(1000, 0)
	for i, cpu := range [][2]float64{{10, 20}, {11, 20.5}, {13, 21}} {
		figs, err := parseNodeMetrics(nodeText(cpu[0], cpu[1]))
		if err != nil {
			t.Fatal(err)
		}
		s.add("n1", t0.Add(time.Duration(i)*2*time.Second), figs)
	}
	all := s.since(0, func(string) bool { return true })
	a, b, n := all["instance/default/web-a"], all["instance/default/web-b"], all["node/n1"]
	if len(a) != 2 || a[0][1] != 0.5 || a[1][1] != 1 || a[1][2] != 1<<20 {
		t.Errorf("web-a: %v, want CPU 0.5 then 1 core and 1 MiB", a)
	}
	if len(b) != 2 || b[1][1] != 0.25 {
		t.Errorf("web-b: %v, want CPU 0.25 core", b)
	}
	if len(n) != 3 || n[2][1] != 1.25 || n[2][2] != 4<<20 {
		t.Errorf("node n1: %v, want 1.25 cores and 4 MiB at last", n)
	}
	later := s.since(float64(t0.Add(3*time.Second).UnixMilli()), func(string) bool { return true })
	if len(later["node/n1"]) != 1 || len(later["instance/default/web-a"]) != 1 {
		t.Errorf("since the second reading: %v, want only the third", later)
	}
	if top := s.top(1); !top["instance/default/web-a"] || !top["instance/default/web-b"] || len(top) != 2 {
		t.Errorf("top 1 by CPU and by memory: %v, want web-a (CPU) and web-b (memory)", top)
	}
	// An instance no longer reported keeps its past but leaves the top.
	figs, _ := parseNodeMetrics(nodeText(13, 21))
	delete(figs, "instance/default/web-b")
	s.add("n1", t0.Add(5*time.Second), figs)
	s.add("n1", t0.Add(10*time.Second), figs)
	if top := s.top(5); top["instance/default/web-b"] || !top["instance/default/web-a"] {
		t.Errorf("top after web-b went: %v, want web-a alone", top)
	}
	// A counter that went back (a new container) draws no negative rate.
	figs, _ = parseNodeMetrics(nodeText(0.1, 22))
	s.add("n1", t0.Add(12*time.Second), figs)
	if a := s.since(0, func(string) bool { return true })["instance/default/web-a"]; a[len(a)-1][1] != 0 {
		t.Errorf("after a restart web-a's CPU is %v, want 0", a[len(a)-1][1])
	}
	// Ten minutes without readings forget the series.
	s.forget(t0.Add(statsKept*StatsInterval + time.Minute))
	if left := s.since(0, func(string) bool { return true }); len(left) != 0 {
		t.Errorf("series kept past the window: %v", left)
	}
	if _, err := parseNodeMetrics([]byte("not metrics {")); err == nil {
		t.Error("a broken text parsed")
	}
}

// The charts' figures are read only while a page is open, the first
// reading as soon as one opens (not a StatsInterval later), and none
// once it closes.
func TestStatsReadWhilePageOpen(t *testing.T) {
	reads := make(chan time.Time, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/nodes/n1/metrics" {
			http.NotFound(w, r)
			return
		}
		reads <- time.Now()
		_, _ = w.Write(nodeText(1, 2))
	}))
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = l
	srv.Start()
	defer srv.Close()
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	h := newHub(c, slog.New(slog.DiscardHandler))
	h.put("node", "n1", &api.Node{Metadata: api.Metadata{Name: "n1"}})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); h.pollStats(ctx) }()
	defer func() { cancel(); <-done }()

	select {
	case <-reads:
		t.Fatal("node metrics read with no page open")
	case <-time.After(StatsInterval + 500*time.Millisecond):
	}
	opened := time.Now()
	_, ch := h.subscribe()
	select {
	case at := <-reads:
		if d := at.Sub(opened); d > StatsInterval/2 {
			t.Fatalf("first reading %v after the page opened, want at once", d)
		}
	case <-time.After(StatsInterval / 2):
		t.Fatalf("no reading within %v of the page opening", StatsInterval/2)
	}
	select {
	case <-reads:
	case <-time.After(2 * StatsInterval):
		t.Fatal("no second reading while the page stays open")
	}
	h.unsubscribe(ch)
	closed := time.Now()
	// A reading under way when the page closed may still land, late on a
	// busy machine; one begun a whole interval after would be the next
	// tick's.
	deadline := time.After(2 * StatsInterval)
	for {
		select {
		case at := <-reads:
			if d := at.Sub(closed); d > StatsInterval/2 {
				t.Fatalf("node metrics read %v after the page closed", d)
			}
		case <-deadline:
			return
		}
	}
}
