package agent

import (
	"time"

	"github.com/berth-dev/berth/internal/controller"
)

// DefaultIdleResync bounds the wait between full resyncs while nothing
// changes: the longest a change the watch missed goes unrepaired on a
// quiet node. Resyncing every 10 s over 200 settled containers was a
// share of an idle berth up's CPU, for nothing the watch had not said.
const DefaultIdleResync = time.Minute

// DefaultDiskIdleInterval bounds the wait between disk checks while no
// instance has a disk limit and the free space is far above the reserve.
const DefaultDiskIdleInterval = 5 * time.Second

// idleTimer fires at base pace after a change and, while nothing
// changes, ever less often up to most, by controller.NextIdle: the rule
// the control plane's passes follow.
type idleTimer struct {
	t          *time.Timer
	base, most time.Duration
	idle       time.Duration // the wait after the next quiet firing
	due        time.Time
}

func newIdleTimer(base, most time.Duration) *idleTimer {
	return &idleTimer{t: time.NewTimer(base), base: base, most: max(most, base), idle: base, due: time.Now().Add(base)}
}

func (p *idleTimer) C() <-chan time.Time { return p.t.C }

func (p *idleTimer) Stop() { p.t.Stop() }

// fired arms the next firing after one: at base pace unless quiet (the
// work found nothing near that needs it), else after the idle wait,
// which doubles.
func (p *idleTimer) fired(quiet bool) {
	if !quiet {
		p.idle = p.base
	}
	p.arm(p.idle)
	p.idle = controller.NextIdle(p.idle, p.most)
}

// changed brings the pace back to base: the next firing comes within it.
func (p *idleTimer) changed() {
	p.idle = p.base
	if time.Until(p.due) > p.base {
		p.arm(p.base)
	}
}

func (p *idleTimer) arm(d time.Duration) {
	p.t.Stop()
	p.t.Reset(d)
	p.due = time.Now().Add(d)
}
