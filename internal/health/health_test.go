package health_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func TestTracker(t *testing.T) {
	tr := health.NewTracker(3)
	fail := errors.New("down")
	steps := []struct {
		err     error
		healthy bool
		changed bool
	}{
		{fail, true, false}, {fail, true, false}, {fail, false, true}, // third failure in a row
		{fail, false, false}, {nil, true, true}, {fail, true, false},
	}
	for i, s := range steps {
		changed := tr.Observe(s.err)
		if tr.Healthy() != s.healthy || changed != s.changed {
			t.Fatalf("step %d: healthy=%v changed=%v, want %v %v", i, tr.Healthy(), changed, s.healthy, s.changed)
		}
	}
}

// TestProbesAgainstAContainer runs busybox httpd in a container with its own
// network namespace, unreachable from the host, and probes it from inside.
func TestProbesAgainstAContainer(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	rt, err := runtime.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	st, err := rt.Run(ctx, runtime.Config{ID: "health-web", LowerDirs: []string{rootfs},
		Args: []string{"httpd", "-f", "-p", "8080", "-h", "/www"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rt.Delete(context.Background(), "health-web", true) })
	target := health.Target{
		NetNS: fmt.Sprintf("/proc/%d/ns/net", st.Pid),
		Exec: func(ctx context.Context, args []string) (int, error) {
			return rt.Exec(ctx, "health-web", runtime.ExecProcess{Args: args})
		},
	}
	check := func(c health.Check) error {
		c.Timeout = 2 * time.Second
		return health.Probe(ctx, c, target)
	}
	// httpd may need a moment to listen.
	deadline := time.Now().Add(10 * time.Second)
	for check(health.Check{TCP: &health.TCPConnect{Port: 8080}}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("tcp probe never passed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cases := []struct {
		name string
		c    health.Check
		ok   bool
	}{
		{"http ok", health.Check{HTTP: &health.HTTPGet{Port: 8080, Path: "/index.html"}}, true},
		{"http 404", health.Check{HTTP: &health.HTTPGet{Port: 8080, Path: "/missing"}}, false},
		{"http closed port", health.Check{HTTP: &health.HTTPGet{Port: 9}}, false},
		{"tcp closed port", health.Check{TCP: &health.TCPConnect{Port: 9}}, false},
		{"exec ok", health.Check{Exec: []string{"test", "-f", "/www/index.html"}}, true},
		{"exec fails", health.Check{Exec: []string{"test", "-f", "/nope"}}, false},
	}
	for _, tc := range cases {
		err := check(tc.c)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	// The same port is closed on the host: the probe really ran inside the container.
	if err := health.Probe(ctx, health.Check{TCP: &health.TCPConnect{Port: 8080}, Timeout: time.Second}, health.Target{}); err == nil {
		t.Log("note: something on the host listens on 8080 too")
	} else if !strings.Contains(err.Error(), "8080") {
		t.Errorf("error should name the port: %v", err)
	}
}
