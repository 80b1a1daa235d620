package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/scheduler"
)

// templateHash is svc's template hash, worked out once per revision of it.
func (m *Manager) templateHash(svc *api.Service) string {
	h, ok := m.hashes[svc.Metadata.UID]
	if !ok || h.rev != svc.Metadata.Revision {
		h = revHash{svc.Metadata.Revision, svc.TemplateHash()}
		m.hashes[svc.Metadata.UID] = h
	}
	return h.hash
}

// fullServicesEvery is how often a pass looks at every service, settled
// or not, though none of its instances changed: a safety net.
const fullServicesEvery = 30 * time.Second

type revHash struct {
	rev  int64
	hash string
}

// servicesPass removes service instances and returns those to make and
// the status writes still to do. Long because each service's status is
// worked out from the same view its instances were counted in, in one loop.
func (m *Manager) servicesPass(ctx context.Context, sn *snapshot) ([]newInstances, []func() error, error) {
	owned := sn.byOwner()
	var made []newInstances
	var later []func() error
	var statuses []serviceStatus
	var errs []error
	live := make(map[ownerID]bool, len(sn.services))
	vips := m.newVIPs(sn)
	var views []Instance // reused: a pass runs over every service
	// Deletions are written after the loop, several services' at once.
	var deletes []instanceRef
	// A service found settled (nothing to make, remove or write) at its
	// revision stays so while none of its instances changes: only the
	// others are looked at, but all of them now and then. At 300,000
	// instances, looking at every service took most of a pass, and
	// passes ran for every batch of status reports.
	now := m.opt.Clock()
	full := m.settled == nil || sn.changed == nil || (vips != nil && vips.pool != nil) || now.Sub(m.lastFull) >= fullServicesEvery
	if full {
		m.settled, m.lastFull = map[ownerID]int64{}, now
	}
	for _, svc := range sn.services {
		key := ownerID{api.KindService, svc.Metadata.Namespace, svc.Metadata.Name, svc.Metadata.UID}
		live[key] = true
		if rev, ok := m.settled[key]; ok && !full && rev == svc.Metadata.Revision && !sn.changed[key] {
			continue
		}
		delete(m.settled, key)
		hash := m.templateHash(svc)
		prev := svc.Status.Rollout
		u := svc.Spec.Update
		st := ServiceState{Replicas: svc.Spec.Replicas, SpecHash: hash, MaxSurge: u.MaxSurge, MaxUnavailable: u.MaxUnavailable,
			Settled:   prev.Hash == hash && (prev.Phase == api.RolloutComplete || prev.Phase == api.RolloutRolledBack),
			Instances: views[:0]}
		if prev.Hash == hash && prev.Phase == api.RolloutFailed {
			st.FailedBefore = prev.Message
		}
		for _, in := range owned[key] {
			st.Instances = append(st.Instances, view(in))
		}
		views = st.Instances
		var res ServiceResult
		var createOn []string
		noNodes := false
		if svc.Spec.Mode == api.ModeGlobal {
			nodes := eligibleNodes(sn.nodes, svc.Spec.Placement)
			noNodes = len(nodes) == 0
			res, createOn = ComputeGlobal(GlobalState{SpecHash: hash, Nodes: nodes,
				Settled: st.Settled, FailedBefore: st.FailedBefore, Instances: st.Instances})
		} else {
			res = ComputeService(st)
		}
		if insts := m.serviceInstances(svc, owned[key], hash, res.Create, createOn); len(insts) > 0 {
			made = append(made, newInstances{owner: svc, insts: insts})
		}
		for _, name := range res.Delete {
			deletes = append(deletes, instanceRef{svc.Metadata.Namespace, name})
		}
		vip, err := vips.forService(svc)
		if err != nil {
			errs = append(errs, err)
		}
		want := api.ServiceStatus{Replicas: len(st.Instances) + res.Create - len(res.Delete), ReadyReplicas: res.Ready,
			UpdatedReplicas: res.Updated, VIP: vip,
			// Not the current revision: writing this status makes a new one, which would loop.
			ObservedRevision: svc.Status.ObservedRevision}
		if want.Replicas < 0 {
			want.Replicas = 0
		}
		var exitFailed bool
		want.Message, exitFailed = exitedMessage(res.Exited, owned[key], svc.Spec.Template.WithDefaults(api.KindService).Restart)
		if noNodes && want.Message == "" {
			want.Message = noEligibleMessage(sn.nodes, svc.Spec.Placement)
		}
		want.History = nextHistory(svc.Status.History, svc.Spec.Template, hash, m.opt.Clock().UTC())
		rev := want.History[len(want.History)-1].Revision
		want.Rollout = nextRollout(prev, rev, hash, res)
		var rollback *api.TemplateRevision
		if want.Rollout.Phase == api.RolloutFailed && u.AutoRollback && len(want.History) > 1 {
			to := want.History[len(want.History)-2]
			rollback = &to
			want.Rollout = api.RolloutStatus{Revision: to.Revision, Hash: to.Hash, Phase: api.RolloutRolledBack,
				Message: fmt.Sprintf("revision %d failed (%s): rolled back to revision %d", rev, res.Reason, to.Revision)}
		}
		same := serviceStatusEqual(want, svc.Status)
		if same && err == nil && svc.Spec.Mode != api.ModeGlobal && res.Create == 0 && len(res.Delete) == 0 {
			m.settled[key] = svc.Metadata.Revision
		}
		if !same {
			events := serviceEvents(want, svc.Status.Message, prev, exitFailed, noNodes)
			if rollback != nil {
				later = append(later, m.writeServiceStatus(ctx, svc, want, rollback, events))
				continue
			}
			next := own(svc)
			next.Status = want
			statuses = append(statuses, serviceStatus{next, events})
		}
	}
	// They go while the scheduler places the new ones: the replacements
	// of a lost node's instances waited for the Lost ones' deletion.
	if len(deletes) > 0 {
		deleted := make(chan error, 1)
		go func() { deleted <- m.deleteInstances(ctx, deletes) }()
		later = append(later, func() error { return <-deleted })
	}
	if len(statuses) > 0 {
		later = append(later, func() error { return m.writeServiceStatuses(ctx, statuses) })
	}
	m.forgetHashes(sn.services)
	// Instances whose service is gone go too.
	errs = append(errs, m.deleteOrphans(ctx, api.KindService, owned, live))
	return made, later, errors.Join(errs...)
}

// exitedMessage says which instances ended for good and why they stay
// so, and whether any of them failed.
func exitedMessage(exited []string, insts []*api.Instance, policy api.RestartPolicy) (string, bool) {
	if len(exited) == 0 {
		return "", false
	}
	byName := make(map[string]*api.Instance, len(insts))
	for _, in := range insts {
		byName[in.Metadata.Name] = in
	}
	var parts []string
	failed := false
	for _, name := range exited {
		in := byName[name]
		if in == nil {
			continue
		}
		failed = failed || in.Status.Phase == api.PhaseFailed
		// A few by name: the message must stay small whatever the replicas.
		if len(parts) < 3 {
			parts = append(parts, fmt.Sprintf("%s %s with exit code %d", name, strings.ToLower(string(in.Status.Phase)), in.Status.ExitCode))
		}
	}
	if more := len(exited) - len(parts); more > 0 {
		parts = append(parts, fmt.Sprintf("%d more", more))
	}
	return fmt.Sprintf("%s; not restarted (restart: %s): change or restart the service to run it again", strings.Join(parts, ", "), policy), failed
}

// serviceInstances are the count instances a service needs made,
// pinned each to a node of createOn while it lasts (a global service's).
func (m *Manager) serviceInstances(svc *api.Service, owned []*api.Instance, hash string, count int, createOn []string) []*api.Instance {
	if count == 0 {
		return nil
	}
	// Five random letters collide often among thousands: draw again.
	names := make(map[string]bool, len(owned)+count)
	for _, in := range owned {
		names[in.Metadata.Name] = true
	}
	insts := make([]*api.Instance, 0, count)
	// One map of labels for them all: a map each was a fifth of what an
	// apply of 300,000 instances held until they were stored.
	labels := ownerLabels(svc.Metadata, api.KindService)
	for i := range count {
		p := svc.Spec.Placement
		if i < len(createOn) {
			// A global service's instance is pinned to its node.
			p.Constraints = append(slices.Clip(p.Constraints), api.Constraint{Key: scheduler.NodeNameKey, Op: api.OpEq, Values: []string{createOn[i]}})
		}
		in := m.newInstance(svc.Metadata, api.KindService, labels, svc.Spec.Template, p, svc.Spec.Priority, hash, 0, 0, nil)
		for names[in.Metadata.Name] {
			in.Metadata.Name = svc.Metadata.Name + "-" + suffix()
		}
		names[in.Metadata.Name] = true
		insts = append(insts, in)
	}
	return insts
}

// serviceEvents are the events a new status tells of: instances that
// exited for good (a warning when one failed), a global service with no
// node to run on, and a rollout's end.
func serviceEvents(want api.ServiceStatus, oldMessage string, prev api.RolloutStatus, exitFailed, noNodes bool) []api.Event {
	var events []api.Event
	switch {
	case want.Message == "" || want.Message == oldMessage:
	case noNodes:
		events = append(events, api.Event{Type: api.EventWarning, Reason: "NoEligibleNodes", Message: want.Message})
	default:
		typ := api.EventNormal // all ended well
		if exitFailed {
			typ = api.EventWarning
		}
		events = append(events, api.Event{Type: typ, Reason: "InstanceExited", Message: want.Message})
	}
	if ro := want.Rollout; ro.Hash != prev.Hash || ro.Phase != prev.Phase {
		switch ro.Phase {
		case api.RolloutFailed:
			events = append(events, api.Event{Type: api.EventWarning, Reason: "RolloutFailed",
				Message: fmt.Sprintf("revision %d: %s; no more instances are replaced until the template changes", ro.Revision, ro.Message)})
		case api.RolloutRolledBack:
			events = append(events, api.Event{Type: api.EventWarning, Reason: "RolledBack", Message: ro.Message})
		case api.RolloutComplete:
			events = append(events, api.Event{Type: api.EventNormal, Reason: "RolloutComplete", Message: fmt.Sprintf("revision %d", ro.Revision)})
		}
	}
	return events
}

// writeServiceStatus is the write of a service's new status, after its
// rollback when there is one, then its events.
func (m *Manager) writeServiceStatus(ctx context.Context, read *api.Service, want api.ServiceStatus, rollback *api.TemplateRevision, events []api.Event) func() error {
	svc := own(read)
	svc.Status = want
	return func() error {
		if rollback != nil {
			// The spec first, naming the revision read: a user's change meanwhile wins.
			back := own(svc)
			back.Spec.Template = rollback.Template
			if err := m.s.Update(ctx, back, svc.Metadata.Revision); err != nil {
				if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
					return nil
				}
				return err
			}
			svc = back
			svc.Status = want
		}
		if err := m.s.UpdateStatus(ctx, svc, 0); err != nil && !errdefs.IsNotFound(err) {
			return err
		}
		for _, ev := range events {
			m.event(ctx, svc, ev.Type, ev.Reason, ev.Message)
		}
		return nil
	}
}

// serviceStatus is a service with the status to write, and the events
// that tell of it.
type serviceStatus struct {
	svc    *api.Service
	events []api.Event
}

// writeServiceStatuses writes services' new statuses, as many to a
// transaction as etcd takes, then their events: an apply of a thousand
// services changed each one's status in every pass, a thousand writes
// one after another. A batch that fails (one changed meanwhile) goes one
// by one.
func (m *Manager) writeServiceStatuses(ctx context.Context, sts []serviceStatus) error {
	var errs []error
	var done []serviceStatus
	size := func(st serviceStatus) int { b, _ := json.Marshal(st.svc); return len(b) }
	for _, batch := range batches(sts, m.s.BindBatch(), size) {
		if len(batch) > 1 {
			t := m.s.Txn()
			for _, st := range batch {
				t.UpdateStatus(st.svc, 0)
			}
			if t.Commit(ctx) == nil {
				done = append(done, batch...)
				continue
			}
		}
		for _, st := range batch {
			err := m.s.UpdateStatus(ctx, st.svc, 0)
			switch {
			case err == nil:
				done = append(done, st)
			case !errdefs.IsNotFound(err):
				errs = append(errs, err)
			}
		}
	}
	for _, st := range done {
		for _, ev := range st.events {
			m.event(ctx, st.svc, ev.Type, ev.Reason, ev.Message)
		}
	}
	return errors.Join(errs...)
}

// forgetHashes drops the template hashes of services gone.
func (m *Manager) forgetHashes(services []*api.Service) {
	if len(m.hashes) <= len(services) {
		return
	}
	liveUID := make(map[string]bool, len(services))
	for _, svc := range services {
		liveUID[svc.Metadata.UID] = true
	}
	for uid := range m.hashes {
		if !liveUID[uid] {
			delete(m.hashes, uid)
		}
	}
}
