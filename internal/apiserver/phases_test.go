package apiserver_test

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/metrics"
)

// lockedBuffer is a log's output, written by the server's goroutines and
// read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// phaseFigures is the count and sum of berth_api_write_phase_seconds for
// caller and phase.
func phaseFigures(t *testing.T, caller, phase string) (uint64, float64) {
	t.Helper()
	var m dto.Metric
	h, err := metrics.APIWritePhaseDuration.GetMetricWithLabelValues(caller, phase)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.(interface{ Write(*dto.Metric) error }).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// Each API write is timed by phase (etcd reads, the bulk lane, etcd
// writes, the rest) under its caller, reads are not; and a write over
// the slow-write threshold is logged with the same figures.
func TestWritePhasesMeasuredAndSlowWritesLogged(t *testing.T) {
	var log lockedBuffer
	e := startWith(t, apiserver.Config{Logger: slog.New(slog.NewTextHandler(&log, nil)), SlowWrite: time.Nanosecond})
	phases := []string{"read", "lane", "write", "server"}
	type fig struct {
		n   uint64
		sum float64
	}
	before := map[string]fig{}
	for _, p := range phases {
		n, sum := phaseFigures(t, "admin", p)
		before[p] = fig{n, sum}
	}
	svc := api.RunService("web", "demo/busybox:1", nil)
	if _, err := e.client.Services().Apply(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.Replicas = 4
	if _, err := e.client.Services().Apply(t.Context(), svc); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Services().Get(t.Context(), "default", "web"); err != nil {
		t.Fatal(err)
	}
	after := map[string]fig{}
	for _, p := range phases {
		n, sum := phaseFigures(t, "admin", p)
		after[p] = fig{n, sum}
		if n-before[p].n != 2 {
			t.Errorf("phase %s: %d writes timed, want the 2 applies (the get is no write)", p, n-before[p].n)
		}
	}
	// The create and the update each wrote to etcd; the update read what
	// it updates first.
	if after["write"].sum <= before["write"].sum || after["read"].sum <= before["read"].sum || after["server"].sum <= before["server"].sum {
		t.Errorf("phases' time did not grow: before %v, after %v", before, after)
	}
	got := log.String()
	if n := strings.Count(got, `msg="slow write"`); n != 2 {
		t.Fatalf("%d slow writes logged, want 2 (the applies, not the get):\n%s", n, got)
	}
	for _, want := range []string{"method=PUT", "route=/v1/namespaces/{ns}/{kind}/{name}", "path=/v1/namespaces/default/services/web", "caller=admin", "read=", "lane=", "write=", "server="} {
		if !strings.Contains(got, want) {
			t.Errorf("slow write log lacks %q:\n%s", want, got)
		}
	}
}

// A node's writes are background work: they go through the store's bulk
// lane (time counted in its lane phase), so that they queue in the
// server, not in etcd ahead of an API client's write; an admin's single
// write never enters the lane.
func TestNodeWritesWaitInTheLaneAdminsDoNot(t *testing.T) {
	c := startCluster(t)
	nc := c.join(t, "n1")
	_, adminLane := phaseFigures(t, "admin", "lane")
	nodeN, nodeLane := phaseFigures(t, "node", "lane")
	ev := &api.Event{Object: api.ObjectRef{Kind: api.KindNode, Name: "n1"}, Type: api.EventNormal, Reason: "Probe", Message: "a node's own event"}
	ev.Metadata.Namespace = "default"
	if _, err := nc.Events().Record(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if n, sum := phaseFigures(t, "node", "lane"); n != nodeN+1 || sum <= nodeLane {
		t.Errorf("a node's event: node lane phase count %d -> %d, sum %v -> %v; want one more write, and time in the lane", nodeN, n, nodeLane, sum)
	}
	if _, err := c.admin.Services().Apply(t.Context(), api.RunService("web", "demo/busybox:1", nil)); err != nil {
		t.Fatal(err)
	}
	if _, sum := phaseFigures(t, "admin", "lane"); sum != adminLane {
		t.Errorf("an admin's apply spent %v in the lane, want none", sum-adminLane)
	}
}
