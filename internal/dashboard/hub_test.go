package dashboard

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/testing/testenv"
	"github.com/berth-dev/berth/internal/testing/unixapi"
)

// The hub watches the cluster only while a page is open, and a little
// after: with none open, the server carries no watch of the dashboard's
// and the hub holds no object. The first page still gets a snapshot of
// everything, and then the changes.
func TestHubFollowsOnlyWhilePagesAreOpen(t *testing.T) {
	testenv.RequireRoot(t) // the API's unix socket is root's
	c := unixapi.Serve(t, apiserver.Config{WatchHeartbeat: 100 * time.Millisecond}).Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := func(name string) *api.Service {
		return &api.Service{Metadata: api.Metadata{Namespace: "default", Name: name},
			Spec: api.ServiceSpec{Template: api.Template{Image: "demo/busybox:1"}}}
	}
	if _, err := c.Services().Apply(ctx, svc("web")); err != nil {
		t.Fatal(err)
	}
	watches := func() float64 {
		var m dto.Metric
		_ = metrics.APIWatches.WithLabelValues("instances").Write(&m)
		return m.GetGauge().GetValue()
	}

	h := newHub(c, slog.New(slog.NewTextHandler(os.Stderr, nil)))
	h.linger = 200 * time.Millisecond
	go h.run(ctx)
	waitUntil(t, "the hub to start", func() bool { h.mu.Lock(); defer h.mu.Unlock(); return h.ctx != nil })
	if n := watches(); n != 0 {
		t.Fatalf("%v watches of instances open with no page, want 0", n)
	}

	snap, ch := h.subscribe()
	var s struct {
		Objects map[string]map[string]json.RawMessage `json:"objects"`
	}
	if err := json.Unmarshal(snap, &s); err != nil || s.Objects["service"]["default/web"] == nil {
		t.Fatalf("the first page's snapshot: %s (%v), want service web in it", snap, err)
	}
	waitUntil(t, "the hub's watches to open", func() bool { return watches() == 1 })
	if _, err := c.Services().Apply(ctx, svc("db")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "service db in a batch", func() bool {
		select {
		case b := <-ch:
			var batch struct {
				Changes []change `json:"changes"`
			}
			_ = json.Unmarshal(b, &batch)
			for _, c := range batch.Changes {
				if c.Kind == "service" && c.Key == "default/db" && c.Obj != nil {
					return true
				}
			}
		default:
		}
		return false
	})

	h.unsubscribe(ch)
	waitUntil(t, "the hub to stop following after the last page", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.stop == nil && len(h.objs) == 0 && watches() == 0
	})
	// A page opened later starts it again, and lists what is there.
	snap, ch = h.subscribe()
	defer h.unsubscribe(ch)
	if err := json.Unmarshal(snap, &s); err != nil || s.Objects["service"]["default/db"] == nil {
		t.Fatalf("a later page's snapshot: %s (%v), want service db in it", snap, err)
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
