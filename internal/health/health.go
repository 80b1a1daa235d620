// Package health probes containers: a command run inside, an HTTP GET or a
// TCP connect made from inside the container's network namespace (so a
// check works whether or not the container is reachable from the host),
// and a Tracker that turns probe results into healthy/unhealthy with a
// failure threshold.
package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	goruntime "runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
)

// Check says how and how often to probe.
type Check struct {
	Exec []string
	HTTP *HTTPGet
	TCP  *TCPConnect
	// Interval between probes; Timeout of one probe; Failures in a row that make the target unhealthy.
	Interval time.Duration
	Timeout  time.Duration
	Failures int
	// StartPeriod, when set, is a grace after the start in which failures
	// do not count (a pass still does).
	StartPeriod time.Duration
}

// HTTPGet succeeds on a 2xx or 3xx answer.
type HTTPGet struct {
	Port int
	Path string
}

// TCPConnect succeeds when a connection is accepted.
type TCPConnect struct {
	Port int
}

// Defaults applied by WithDefaults: a template's (api), for a check
// whose spec was stored before the API wrote them in.
const (
	DefaultInterval = time.Duration(api.DefaultHealthInterval)
	DefaultTimeout  = time.Duration(api.DefaultHealthTimeout)
	DefaultFailures = api.DefaultHealthFailures
)

// WithDefaults fills unset timing fields.
func (c Check) WithDefaults() Check {
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Failures <= 0 {
		c.Failures = DefaultFailures
	}
	return c
}

// Target is the container a probe runs against.
type Target struct {
	// NetNS is the path of its network namespace, e.g. /proc/PID/ns/net.
	NetNS string
	// Exec runs a command inside it and returns the exit code.
	Exec func(ctx context.Context, args []string) (int, error)
}

// Probe runs one probe and returns nil when it passed.
func Probe(ctx context.Context, c Check, t Target) error {
	c = c.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	switch {
	case len(c.Exec) > 0:
		if t.Exec == nil {
			return errors.New("exec probe: no way to run commands in the target")
		}
		code, err := t.Exec(ctx, c.Exec)
		if err != nil {
			return fmt.Errorf("exec probe %v: %w", c.Exec, err)
		}
		if code != 0 {
			return fmt.Errorf("exec probe %v: exit code %d", c.Exec, code)
		}
		return nil
	case c.HTTP != nil:
		return probeHTTP(ctx, t.NetNS, c.HTTP)
	case c.TCP != nil:
		conn, err := DialInNetNS(ctx, t.NetNS, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(c.TCP.Port)))
		if err != nil {
			return fmt.Errorf("tcp probe port %d: %w", c.TCP.Port, err)
		}
		return conn.Close()
	}
	return errors.New("health check has no exec, http or tcp probe")
}

func probeHTTP(ctx context.Context, netns string, h *HTTPGet) error {
	path := h.Path
	if path == "" {
		path = "/"
	}
	url := "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(h.Port)) + path
	client := &http.Client{
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				return DialInNetNS(ctx, netns, network, addr)
			},
			DisableKeepAlives: true,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("http probe %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "berth-health")
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("http probe %s: %w", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("http probe %s: status %d", url, resp.StatusCode)
	}
	return nil
}

// DialInNetNS connects from inside the network namespace at nsPath (the
// current one when empty). The socket is created on a thread switched into
// that namespace and keeps it after the thread switches back.
func DialInNetNS(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if nsPath == "" {
		return d.DialContext(ctx, network, addr)
	}
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// A thread whose namespace could not be restored must never run other
		// goroutines: exiting while still locked makes the runtime discard it.
		goruntime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open own netns: %w", err)}
			return
		}
		defer unix.Close(orig)
		target, err := unix.Open(nsPath, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			goruntime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("open netns %s: %w", nsPath, err)}
			return
		}
		defer unix.Close(target)
		if err := unix.Setns(target, unix.CLONE_NEWNET); err != nil {
			goruntime.UnlockOSThread()
			ch <- result{err: fmt.Errorf("enter netns %s: %w", nsPath, err)}
			return
		}
		c, err := d.DialContext(ctx, network, addr)
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			goruntime.UnlockOSThread()
		}
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// Tracker folds probe results into a health verdict: unhealthy after
// Failures consecutive failures, healthy again after one success.
type Tracker struct {
	threshold   int
	consecutive int
	healthy     bool
	lastErr     error
}

// NewTracker starts healthy: a container is given the benefit of the doubt until probes say otherwise.
func NewTracker(failures int) *Tracker {
	if failures <= 0 {
		failures = DefaultFailures
	}
	return &Tracker{threshold: failures, healthy: true}
}

// Observe records a probe result and reports whether the verdict changed.
func (t *Tracker) Observe(err error) (changed bool) {
	was := t.healthy
	t.lastErr = err
	if err == nil {
		t.consecutive = 0
		t.healthy = true
	} else {
		t.consecutive++
		if t.consecutive >= t.threshold {
			t.healthy = false
		}
	}
	return was != t.healthy
}

// Healthy is the current verdict.
func (t *Tracker) Healthy() bool { return t.healthy }

// LastError is the most recent probe's error, nil if it passed.
func (t *Tracker) LastError() error { return t.lastErr }
