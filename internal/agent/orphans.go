package agent

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime"
)

// EventRecorder is how the agent tells users what it did on its own, as
// events about an instance. A control plane without it gets none.
type EventRecorder interface {
	RecordInstanceEvent(ctx context.Context, namespace, name string, typ api.EventType, reason, msg string) error
}

// LostReaper is the optional capability of a Runtime that can kill what
// is left of a container whose shim was lost.
type LostReaper interface {
	ReapLost(ctx context.Context, id string) (runtime.Reaped, error)
}

// ReasonShimLostKilled is the event reason when a lost shim's container
// still ran and was killed before its replacement started.
const ReasonShimLostKilled = "ShimLostKilled"

// reapLost kills what is left of a container whose shim was lost, so the
// replacement the reconciler is about to start is not a duplicate, and
// records an event saying so. A failure is logged: the container then
// stays Unknown and is tried again on the next pass.
func (a *Agent) reapLost(ctx context.Context, st runtime.Status) {
	reaper, ok := a.cfg.Runtime.(LostReaper)
	if !ok {
		return
	}
	rp, err := reaper.ReapLost(ctx, st.ID)
	if err != nil {
		a.log.Error("reap a lost shim's container", "container", st.ID, "err", err)
		return
	}
	if rp.Killed == 0 {
		return
	}
	a.log.Warn("a lost shim's container still ran: killed", "container", st.ID, "processes", rp.Killed, "how", rp.How)
	rec, ok := a.cfg.ControlPlane.(EventRecorder)
	ns, name, found := strings.Cut(st.Labels[labelInstance], "/")
	if !ok || !found {
		return
	}
	msg := fmt.Sprintf("the shim of container %s was lost while %d of its processes still ran; they were killed (%s) before a replacement starts",
		st.ID, rp.Killed, rp.How)
	go func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := rec.RecordInstanceEvent(rctx, ns, name, api.EventWarning, ReasonShimLostKilled, msg); err != nil {
			a.log.Warn("record event", "container", st.ID, "err", err)
		}
	}()
}

var _ LostReaper = (*runtime.Runtime)(nil)
