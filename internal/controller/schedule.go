package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/store"
)

// schedulePass places pending instances with the scheduler engine: the
// stored ones are bound in one transaction per plan, the new ones (fresh,
// made this pass) are stored already placed. The engine works on a
// snapshot built from this pass's read; a binding whose instance changed
// since fails with a conflict and is retried next pass.
func (m *Manager) schedulePass(ctx context.Context, sn *snapshot, fresh []newInstances) error {
	var pending []*api.Instance
	for _, in := range sn.instances {
		if in.Spec.Node == "" && !phaseOf(in).Terminal() {
			pending = append(pending, in)
		}
	}
	isNew := map[*api.Instance]bool{}
	for _, f := range fresh {
		for _, in := range f.insts {
			pending = append(pending, in)
			isNew[in] = true
		}
	}
	if len(pending) == 0 {
		return nil
	}
	var errs []error
	// waits collects why new instances could not be placed, to record
	// once they are stored.
	waits := map[*api.Instance]string{}
	wait := func(in *api.Instance, reason string) {
		if !isNew[in] {
			errs = append(errs, m.unschedulable(ctx, in, reason))
			return
		}
		in.Status.Message = "unschedulable: " + reason
		waits[in] = reason
	}
	state, err := schedulerState(sn)
	if err != nil {
		// Nothing can be placed; new instances are still stored, to wait.
		errs = append(errs, err)
		return errors.Join(append(errs, m.createNew(ctx, fresh, waits))...)
	}
	batch := make([]scheduler.Instance, 0, len(pending))
	byID := map[string]*api.Instance{}
	for _, in := range pending {
		si, err := schedInstance(in)
		if err != nil {
			wait(in, err.Error())
			continue
		}
		batch = append(batch, si)
		byID[si.ID] = in
	}
	m.seed++
	placeStart := time.Now()
	plan := state.Place(batch, scheduler.Options{Seed: m.seed})
	metrics.SchedulerDuration.Observe(time.Since(placeStart).Seconds())
	metrics.SchedulerPlacements.WithLabelValues("placed").Add(float64(len(plan.Placements)))
	metrics.SchedulerPlacements.WithLabelValues("failed").Add(float64(len(plan.Failures)))
	for _, ev := range plan.Preemptions {
		ns, name, _ := strings.Cut(ev.Instance, "/")
		if err := m.s.Delete(ctx, api.KindInstance, ns, name, 0); err != nil && !errdefs.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	now := m.opt.Clock().UTC()
	var bindings []store.Binding
	for _, p := range plan.Placements {
		in := byID[p.Instance.ID]
		if isNew[in] {
			in.Spec.Node, in.Spec.CPUSet = p.Node, p.CPUSet
			in.Status.Phase, in.Status.ScheduledAt = api.PhaseScheduled, now
			continue
		}
		bindings = append(bindings, store.Binding{Namespace: in.Metadata.Namespace, Name: in.Metadata.Name,
			Node: p.Node, CPUSet: p.CPUSet, Revision: in.Metadata.Revision})
	}
	for _, f := range plan.Failures {
		wait(byID[f.Instance], f.Reason)
	}
	errs = append(errs, m.createNew(ctx, fresh, waits))
	if len(bindings) > 0 {
		if err := m.s.Bind(ctx, bindings); err != nil {
			if !errdefs.IsConflict(err) {
				errs = append(errs, err)
			}
			// Something moved under the plan: bind one by one so the rest still lands.
			for _, b := range bindings {
				if err := m.s.Bind(ctx, []store.Binding{b}); err != nil && !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

// createNew stores each owner's new instances in one transaction, and
// records why those that wait do.
func (m *Manager) createNew(ctx context.Context, fresh []newInstances, waits map[*api.Instance]string) error {
	var errs []error
	for _, f := range fresh {
		objs := make([]api.Object, len(f.insts))
		for i, in := range f.insts {
			objs[i] = in
		}
		if err := m.s.CreateMany(ctx, objs); err != nil {
			if !(f.taken && errdefs.IsAlreadyExists(err)) {
				errs = append(errs, fmt.Errorf("%s: create instances: %w", api.RefOf(f.owner), err))
			}
			continue
		}
		for _, in := range f.insts {
			if reason, ok := waits[in]; ok {
				m.event(ctx, in, api.EventWarning, "Unschedulable", reason)
			}
		}
	}
	return errors.Join(errs...)
}

// unschedulable records why an instance waits, once per distinct reason.
func (m *Manager) unschedulable(ctx context.Context, in *api.Instance, reason string) error {
	msg := "unschedulable: " + reason
	if in.Status.Message == msg {
		return nil
	}
	in = own(in)
	in.Status.Message = msg
	if in.Status.Phase == "" {
		in.Status.Phase = api.PhasePending
	}
	if err := m.s.UpdateStatus(ctx, in, in.Metadata.Revision); err != nil && !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
		return err
	}
	m.event(ctx, in, api.EventWarning, "Unschedulable", reason)
	return nil
}

func schedulerState(sn *snapshot) (*scheduler.State, error) {
	nodes := make([]scheduler.Node, 0, len(sn.nodes))
	known := map[string]bool{}
	for _, n := range sn.nodes {
		sn := scheduler.Node{
			Name:   n.Metadata.Name,
			Ready:  n.Status.Condition == api.NodeReady && !n.Spec.Unschedulable,
			Labels: n.Metadata.Labels,
			Capacity: scheduler.Resources{MilliCPU: n.Spec.Capacity.MilliCPU,
				MemoryBytes: int64(n.Spec.Capacity.Memory), Pids: n.Spec.Capacity.Pids},
		}
		for _, c := range n.Spec.Topology.Cores {
			sn.Topology.Cores = append(sn.Topology.Cores, scheduler.Core{ID: c.ID, NUMA: c.NUMA, Threads: c.Threads})
		}
		nodes = append(nodes, sn)
		known[sn.Name] = true
	}
	var allocs []scheduler.Allocation
	for _, in := range sn.instances {
		if in.Spec.Node == "" || !known[in.Spec.Node] || phaseOf(in).Terminal() {
			continue
		}
		si, err := schedInstance(in)
		if err != nil {
			continue // it runs already; a template the engine refuses cannot be counted
		}
		allocs = append(allocs, scheduler.Allocation{Instance: si, Node: in.Spec.Node, CPUSet: in.Spec.CPUSet})
	}
	st, err := scheduler.NewState(nodes, allocs)
	if err != nil {
		return nil, fmt.Errorf("scheduler state: %w", err)
	}
	return st, nil
}

// schedInstance is the scheduler's view of an instance.
func schedInstance(in *api.Instance) (scheduler.Instance, error) {
	t := in.Spec.Template
	si := scheduler.Instance{
		ID:       in.Metadata.Namespace + "/" + in.Metadata.Name,
		Group:    in.Metadata.Namespace + "/" + string(in.Spec.Owner.Kind) + "/" + in.Spec.Owner.Name,
		Priority: in.Spec.Priority,
		Resources: scheduler.Resources{MilliCPU: t.Resources.MilliCPU(), MemoryBytes: int64(t.Resources.Memory),
			Pids: t.Resources.Pids},
		Spread:       in.Spec.Placement.Spread,
		AntiAffinity: in.Spec.Placement.AntiAffinity,
	}
	if t.Resources.Exclusive {
		si.ExclusiveCPUs = int(t.Resources.CPU)
	}
	// A published port is the service's, forwarded to its VIP by every
	// node, not bound by each instance: it does not keep replicas apart.
	for _, c := range in.Spec.Placement.Constraints {
		sc := scheduler.Constraint{Key: c.Key, Values: c.Values}
		switch c.Op {
		case api.OpEq:
			sc.Op = scheduler.OpEq
		case api.OpNe:
			sc.Op = scheduler.OpNe
		case api.OpIn:
			sc.Op = scheduler.OpIn
		case api.OpNotIn:
			sc.Op = scheduler.OpNotIn
		default:
			return si, fmt.Errorf("constraint on %q: unknown operator %q", c.Key, c.Op)
		}
		si.Constraints = append(si.Constraints, sc)
	}
	return si, nil
}
