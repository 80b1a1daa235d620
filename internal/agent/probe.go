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
}

func (p *prober) healthy() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.t.Healthy()
}

func (a *Agent) ensureProbe(ctx context.Context, id string, st runtime.Status, inst *Instance) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.probes[id] != nil {
		return
	}
	check := inst.Health.WithDefaults()
	pctx, cancel := context.WithCancel(ctx)
	p := &prober{cancel: cancel, t: health.NewTracker(check.Failures)}
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
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
			}
			err := health.Probe(pctx, check, target)
			if pctx.Err() != nil {
				return
			}
			p.mu.Lock()
			changed := p.t.Observe(err)
			p.mu.Unlock()
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
