package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/health"
	"github.com/berth-dev/berth/internal/runtime"
)

// prober runs one container's health check on its interval.
type prober struct {
	cancel context.CancelFunc
	mu     sync.Mutex
	t      *health.Tracker
	// passed is set by the first successful probe: until then the container
	// is not reported ready, so a rollout waits for a new instance to prove
	// itself; and it is not restarted for failing until graceUntil, since
	// a server takes a moment to listen.
	passed     bool
	graceUntil time.Time
	// startPeriod says graceUntil is the check's own start period, in
	// which failures are not counted at all (Compose's start_period).
	startPeriod bool
}

// startupGrace is how long a container that has never passed its check
// may fail it without being restarted.
func startupGrace(c health.Check) time.Duration {
	if c.StartPeriod > 0 {
		return c.StartPeriod
	}
	return max(10*time.Second, 3*time.Duration(c.Failures)*c.Interval)
}

// healthy is the restart verdict.
func (p *prober) healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.passed && time.Now().Before(p.graceUntil) {
		return true
	}
	return p.t.Healthy()
}

// ready is the verdict reported as Healthy: passing now, and at least once.
func (p *prober) ready() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.passed && p.t.Healthy()
}

func (a *Agent) ensureProbe(ctx context.Context, id string, st runtime.Status, inst *Instance, c *health.Check) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.probes[id] != nil {
		return
	}
	check := c.WithDefaults()
	pctx, cancel := context.WithCancel(ctx)
	p := &prober{cancel: cancel, t: health.NewTracker(check.Failures),
		passed:     inst.ReportedContainer == id && inst.ReportedHealthy,
		graceUntil: time.Now().Add(startupGrace(check)), startPeriod: check.StartPeriod > 0}
	a.probes[id] = p
	target := health.Target{
		NetNS: fmt.Sprintf("/proc/%d/ns/net", st.Pid),
		Exec: func(ctx context.Context, args []string) (int, error) {
			return a.cfg.Runtime.Exec(ctx, id, runtime.ExecProcess{Args: args})
		},
	}
	a.wg.Go(func() {
		t := time.NewTicker(check.Interval)
		defer t.Stop()
		for first := true; ; first = false {
			// The first probe goes at once: readiness should not wait a whole interval.
			if !first {
				select {
				case <-pctx.Done():
					return
				case <-t.C:
				}
			}
			err := health.Probe(pctx, check, target)
			if pctx.Err() != nil {
				return
			}
			wasHealthy := p.healthy()
			p.mu.Lock()
			var changed bool
			if err == nil || !p.startPeriod || time.Now().After(p.graceUntil) {
				changed = p.t.Observe(err)
			}
			if err == nil && !p.passed {
				p.passed, changed = true, true
			}
			p.mu.Unlock()
			// The grace running out changes the verdict with no change in the tracker.
			changed = changed || wasHealthy != p.healthy()
			if changed {
				a.log.Info("health changed", "container", id, "healthy", err == nil, "err", err)
				a.poke()
			}
		}
	})
}

func (a *Agent) stopProbe(id string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.probes[id]; p != nil {
		p.cancel()
		delete(a.probes, id)
	}
}

func (a *Agent) stopProbes() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for id, p := range a.probes {
		p.cancel()
		delete(a.probes, id)
	}
}
