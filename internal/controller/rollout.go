package controller

import (
	"time"

	"github.com/berth-dev/berth/api"
)

// nextHistory returns hist with the template of the given hash as its
// newest entry, numbered after the others; a template run before (an
// undo, a rollback) moves up from where it was. At most api.MaxHistory
// are kept.
func nextHistory(hist []api.TemplateRevision, t api.Template, hash string, now time.Time) []api.TemplateRevision {
	if n := len(hist); n > 0 && hist[n-1].Hash == hash {
		return hist
	}
	rev := 1
	out := make([]api.TemplateRevision, 0, len(hist)+1)
	for _, h := range hist {
		rev = max(rev, h.Revision+1)
		if h.Hash != hash {
			out = append(out, h)
		}
	}
	out = append(out, api.TemplateRevision{Revision: rev, Hash: hash, Template: t, CreatedAt: now})
	if len(out) > api.MaxHistory {
		out = out[len(out)-api.MaxHistory:]
	}
	return out
}

// nextRollout is the rollout status of revision rev (of the given hash)
// after a pass that computed res. A rollout that completed or was rolled
// back stays so until the template changes.
func nextRollout(prev api.RolloutStatus, rev int, hash string, res ServiceResult) api.RolloutStatus {
	if prev.Hash == hash && (prev.Phase == api.RolloutComplete || prev.Phase == api.RolloutRolledBack) {
		prev.Revision = rev
		return prev
	}
	return api.RolloutStatus{Revision: rev, Hash: hash, Phase: api.RolloutPhase(res.Phase), Message: res.Reason}
}

// serviceStatusEqual compares statuses, their history by revision and template hash.
func serviceStatusEqual(a, b api.ServiceStatus) bool {
	ha, hb := a.History, b.History
	a.History, b.History = nil, nil
	if a.Rollout != b.Rollout || len(ha) != len(hb) {
		return false
	}
	a.Rollout, b.Rollout = api.RolloutStatus{}, api.RolloutStatus{}
	for i := range ha {
		if ha[i].Revision != hb[i].Revision || ha[i].Hash != hb[i].Hash {
			return false
		}
	}
	return a.Replicas == b.Replicas && a.ReadyReplicas == b.ReadyReplicas && a.UpdatedReplicas == b.UpdatedReplicas &&
		a.VIP == b.VIP && a.ObservedRevision == b.ObservedRevision && a.Message == b.Message
}
