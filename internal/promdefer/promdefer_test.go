package promdefer_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/berth-dev/berth/internal/promdefer"
	// etcd's storage registers its metrics in its initialiser: they must
	// be held back, which only the initialisers' order guarantees.
	_ "go.etcd.io/etcd/server/v3/storage/mvcc"
)

// gathered says whether the default registry has etcd's metrics and a
// metric named name.
func gathered(t *testing.T, name string) (etcd, found bool) {
	t.Helper()
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		etcd = etcd || strings.HasPrefix(f.GetName(), "etcd_")
		found = found || f.GetName() == name
	}
	return etcd, found
}

// released says an earlier run of the test in this process (-count)
// called Release: what is held back until then shows only once.
var released bool

func TestEtcdMetricsWaitForRelease(t *testing.T) {
	if !released {
		released = true
		mine := prometheus.NewCounter(prometheus.CounterOpts{Name: "promdefer_test_total", Help: "test"})
		mine.Inc()
		prometheus.MustRegister(mine)
		if etcd, ours := gathered(t, "promdefer_test_total"); etcd || ours {
			t.Fatalf("before Release the registry already has etcd's metrics (%v) or the test's (%v)", etcd, ours)
		}
	}
	promdefer.Release()
	promdefer.Release() // a second call must not register again (MustRegister would panic)
	if etcd, _ := gathered(t, ""); !etcd {
		t.Error("after Release the registry has no etcd metrics")
	}
	if _, ours := gathered(t, "promdefer_test_total"); !ours {
		t.Error("after Release the registry has not the metric registered before it")
	}
	// From now on registrations go straight to the registry.
	later := prometheus.NewCounter(prometheus.CounterOpts{Name: "promdefer_later_total", Help: "test"})
	later.Inc()
	prometheus.MustRegister(later)
	t.Cleanup(func() { prometheus.Unregister(later) })
	if _, found := gathered(t, "promdefer_later_total"); !found {
		t.Error("a registration after Release is not in the registry")
	}
}
