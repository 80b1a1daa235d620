package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/store"
)

// schedulePass places pending instances with the scheduler engine: the
// stored ones are bound in one transaction per plan, the new ones (fresh,
// made this pass) are stored already placed. The engine works on a
// snapshot built from this pass's read; a binding whose instance changed
// since fails with a conflict and is retried next pass. Long because the
// stored and the new instances share the engine's one plan.
func (m *Manager) schedulePass(ctx context.Context, sn *snapshot, fresh []newInstances) error {
	pending, isNew := pendingInstances(sn, fresh)
	if len(pending) == 0 {
		return nil
	}
	// What cannot be placed now is tried again at the usual pace.
	m.dueSoon()
	var errs []error
	// waits collects why new instances could not be placed, to record
	// once they are stored.
	waits := map[*api.Instance]string{}
	// stale are stored instances whose recorded reason is out of date.
	var stale []*api.Instance
	wait := func(in *api.Instance, reason string) {
		if !isNew[in] {
			if msg := "unschedulable: " + reason; in.Status.Message != msg {
				in = own(in)
				in.Status.Message = msg
				if in.Status.Phase == "" {
					in.Status.Phase = api.PhasePending
				}
				stale = append(stale, in)
			}
			return
		}
		in.Status.Message = "unschedulable: " + reason
		waits[in] = reason
	}
	state, err := m.schedulerStateFor(sn)
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
	m.placed(plan)
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
	// The new instances come last in pending: from here on only fresh
	// holds them, and createNew lets each owner's go once stored (an
	// apply of 300,000 held them all, 1.5 KB each, to the pass's end).
	stored := pending[:len(pending)-len(isNew)]
	clear(pending[len(stored):])
	errs = append(errs, m.createNew(ctx, fresh, waits))
	errs = append(errs, m.unschedulable(ctx, stale))
	errs = append(errs, m.bind(ctx, bindings, stored))
	return errors.Join(errs...)
}

// pendingInstances are the stored instances still to place and the new
// ones of this pass (isNew).
func pendingInstances(sn *snapshot, fresh []newInstances) (pending []*api.Instance, isNew map[*api.Instance]bool) {
	for _, in := range sn.instances {
		if sn.counted && len(pending) == sn.unbound {
			break // the rest are all bound or ended
		}
		if in.Spec.Node == "" && !phaseOf(in).Terminal() {
			pending = append(pending, in)
		}
	}
	isNew = map[*api.Instance]bool{}
	for _, f := range fresh {
		for _, in := range f.insts {
			pending = append(pending, in)
			isNew[in] = true
		}
	}
	return pending, isNew
}

// bind stores the bindings, as many to a transaction as etcd takes.
func (m *Manager) bind(ctx context.Context, bindings []store.Binding, pending []*api.Instance) error {
	var errs []error
	insts := byKey(pending)
	size := func(b store.Binding) int { return 2 * jsonSize(insts[b.Namespace+"/"+b.Name]) }
	for _, batch := range batches(bindings, m.s.BindBatch(), size) {
		if err := m.s.Bind(ctx, batch); err != nil {
			if !errdefs.IsConflict(err) {
				errs = append(errs, err)
			}
			// Something moved under the plan: bind one by one so the rest still lands.
			for _, b := range batch {
				if err := m.s.Bind(ctx, []store.Binding{b}); err != nil && !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
					errs = append(errs, err)
				}
			}
		}
	}
	return errors.Join(errs...)
}

func byKey(insts []*api.Instance) map[string]*api.Instance {
	out := make(map[string]*api.Instance, len(insts))
	for _, in := range insts {
		out[in.Metadata.Namespace+"/"+in.Metadata.Name] = in
	}
	return out
}

// batches splits writes into transactions etcd takes: at most n each,
// and few enough bytes (a binding writes its instance twice: the object
// and the node's assignment key).
func batches[T any](items []T, n int, size func(T) int) [][]T {
	var out [][]T
	start, total := 0, 0
	for i, it := range items {
		sz := size(it)
		if i > start && (i-start == n || total+sz > store.MaxTxnBytes) {
			out = append(out, items[start:i])
			start, total = i, 0
		}
		total += sz
	}
	if start < len(items) {
		out = append(out, items[start:])
	}
	return out
}

// jsonSize is about what in takes in a transaction.
func jsonSize(in *api.Instance) int {
	if in == nil {
		return 512
	}
	b, err := json.Marshal(in)
	if err != nil {
		return 512
	}
	return len(b)
}

// createNew stores the owners' new instances and records why those that
// wait do. An owner's go in one transaction, with those of the owners
// next to it while they are few (createGroup): 150 nodes lost with a few
// instances of each of a thousand services needed a thousand owners'
// replacements, a transaction each, four at a time. Transactions are
// written a few at once: one after another, an
// apply of many services waited on each one's round trip in turn, while
// etcd commits writes that arrive together in one go.
func (m *Manager) createNew(ctx context.Context, fresh []newInstances, waits map[*api.Instance]string) error {
	groups := ownerGroups(fresh, createGroupMax)
	return inFlight(len(groups), func(i int) error {
		group := fresh[groups[i][0]:groups[i][1]]
		err := m.createGroup(ctx, group, waits)
		for j := range group {
			group[j].insts = nil // stored: the cache has its own copy now
		}
		return err
	})
}

// createGroupMax is the most new instances of several owners stored in
// one transaction: about what MaxTxnBytes holds, each instance written
// with its assignment.
const createGroupMax = 64

// ownerGroups splits fresh into runs of owners, as [start, end), whose
// new instances number at most n together; an owner with more is a run
// of its own.
func ownerGroups(fresh []newInstances, n int) [][2]int {
	var out [][2]int
	start, count := 0, 0
	for i, f := range fresh {
		if i > start && count+len(f.insts) > n {
			out = append(out, [2]int{start, i})
			start, count = i, 0
		}
		count += len(f.insts)
	}
	if start < len(fresh) {
		out = append(out, [2]int{start, len(fresh)})
	}
	return out
}

// createGroup stores the new instances of a run of owners in one
// transaction, or, when that fails (a job's instance made already, a
// name taken), each owner's alone.
func (m *Manager) createGroup(ctx context.Context, group []newInstances, waits map[*api.Instance]string) error {
	if len(group) > 1 {
		var objs []api.Object
		for _, f := range group {
			for _, in := range f.insts {
				objs = append(objs, in)
			}
		}
		if m.s.CreateMany(ctx, objs) == nil {
			for _, f := range group {
				m.recordWaits(ctx, f, waits)
			}
			return nil
		}
	}
	var errs []error
	for _, f := range group {
		errs = append(errs, m.createOwned(ctx, f, waits))
	}
	return errors.Join(errs...)
}

// writesInFlight bounds the transactions a pass has in flight at once.
const writesInFlight = 4

// inFlight runs write(i) for each i below n, writesInFlight at once, and
// joins their errors.
func inFlight(n int, write func(i int) error) error {
	errs := make([]error, n)
	sem := make(chan struct{}, writesInFlight)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = write(i)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// createOwned stores one owner's new instances and records why those
// that wait do (recordWaits).
func (m *Manager) createOwned(ctx context.Context, f newInstances, waits map[*api.Instance]string) error {
	objs := make([]api.Object, len(f.insts))
	for i, in := range f.insts {
		objs[i] = in
	}
	if err := m.s.CreateMany(ctx, objs); err != nil {
		if f.taken && errdefs.IsAlreadyExists(err) {
			return nil
		}
		return fmt.Errorf("%s: create instances: %w", api.RefOf(f.owner), err)
	}
	m.recordWaits(ctx, f, waits)
	return nil
}

// recordWaits records why f's stored instances that wait do (waits):
// events for the first few, one on the owner for the rest (a scale to
// thousands must not write thousands of events).
func (m *Manager) recordWaits(ctx context.Context, f newInstances, waits map[*api.Instance]string) {
	more := map[string]int{}
	shown := 0
	for _, in := range f.insts {
		reason, ok := waits[in]
		switch {
		case !ok:
		case shown < eventsPerOwner:
			m.event(ctx, in, api.EventWarning, "Unschedulable", reason)
			shown++
		default:
			more[reason]++
		}
	}
	for reason, n := range more {
		m.event(ctx, f.owner, api.EventWarning, "Unschedulable", fmt.Sprintf("%d more instances: %s", n, reason))
	}
}

// eventsPerOwner bounds the per-instance events of one owner in one pass.
const eventsPerOwner = 10

// updateInstanceStatuses writes the instances' statuses (updateStatuses).
func (m *Manager) updateInstanceStatuses(ctx context.Context, insts []*api.Instance) ([]*api.Instance, error) {
	return updateStatuses(ctx, m, insts)
}

// updateStatuses writes the objects' statuses, each naming the revision
// it was read at, as many to a transaction as etcd takes (by their JSON
// size), several transactions at once, and returns those written, in
// order. A batch that fails (one changed meanwhile: its agent wrote, it
// was deleted) goes one by one, so that the rest still land; one that
// changed is left out, not an error. One after another, the 3,440
// instances of 86 nodes lost at once took 0.6 s to mark while agents
// reported, each transaction waiting on etcd for the one before.
func updateStatuses[T api.Object](ctx context.Context, m *Manager, objs []T) ([]T, error) {
	size := func(obj T) int { b, _ := json.Marshal(obj); return len(b) }
	todo := batches(objs, m.s.BindBatch(), size)
	done := make([][]T, len(todo))
	err := inFlight(len(todo), func(i int) error {
		batch := todo[i]
		t := m.s.Txn()
		for _, obj := range batch {
			t.UpdateStatus(obj, obj.GetMetadata().Revision)
		}
		if len(batch) > 1 && t.Commit(ctx) == nil {
			done[i] = batch
			return nil
		}
		var errs []error
		for _, obj := range batch {
			err := m.s.UpdateStatus(ctx, obj, obj.GetMetadata().Revision)
			switch {
			case err == nil:
				done[i] = append(done[i], obj)
			case !errdefs.IsConflict(err) && !errdefs.IsNotFound(err):
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	return slices.Concat(done...), err
}

// unschedulable records why stored instances wait, once per distinct
// reason: their status in batches, events for the first few of each
// owner and one on the owner for the rest.
func (m *Manager) unschedulable(ctx context.Context, stale []*api.Instance) error {
	done, err := m.updateInstanceStatuses(ctx, stale)
	errs := []error{err}
	type key struct {
		owner  api.Owner
		ns     string
		reason string
	}
	shown := map[api.Owner]int{}
	more := map[key]int{}
	for _, in := range done {
		reason := strings.TrimPrefix(in.Status.Message, "unschedulable: ")
		o := in.Spec.Owner
		if shown[o] < eventsPerOwner {
			shown[o]++
			m.event(ctx, in, api.EventWarning, "Unschedulable", reason)
			continue
		}
		more[key{o, in.Metadata.Namespace, reason}]++
	}
	for k, n := range more {
		owner, err := api.New(k.owner.Kind)
		if err != nil {
			continue
		}
		md := owner.GetMetadata()
		md.Namespace, md.Name = k.ns, k.owner.Name
		m.event(ctx, owner, api.EventWarning, "Unschedulable", fmt.Sprintf("%d more instances: %s", n, k.reason))
	}
	return errors.Join(errs...)
}

// instanceGroup is the scheduler's group of an instance: its owner.
func instanceGroup(in *api.Instance) string {
	return in.Metadata.Namespace + "/" + string(in.Spec.Owner.Kind) + "/" + in.Spec.Owner.Name
}

// schedInstance is the scheduler's view of an instance.
func schedInstance(in *api.Instance) (scheduler.Instance, error) {
	return schedInstanceIn(in, instanceGroup(in))
}

// schedInstanceIn is schedInstance with the instance's group given.
func schedInstanceIn(in *api.Instance, group string) (scheduler.Instance, error) {
	t := in.Spec.Template
	// Init and sidecar containers count too (Template.Requests).
	req := t.Requests()
	si := scheduler.Instance{
		ID:       in.Metadata.Namespace + "/" + in.Metadata.Name,
		Group:    group,
		Priority: in.Spec.Priority,
		Resources: scheduler.Resources{MilliCPU: req.MilliCPU(), MemoryBytes: int64(req.Memory),
			Pids: req.Pids},
		Spread:       in.Spec.Placement.Spread,
		AntiAffinity: in.Spec.Placement.AntiAffinity,
	}
	if t.Resources.Exclusive {
		si.ExclusiveCPUs = int(t.Resources.CPU)
	}
	// A published port is the service's, forwarded to its VIP by every
	// node, not bound by each instance: it does not keep replicas apart.
	for _, c := range in.Spec.Placement.Constraints {
		sc, err := schedConstraint(c)
		if err != nil {
			return si, err
		}
		si.Constraints = append(si.Constraints, sc)
	}
	return si, nil
}

// schedConstraint is c as the scheduler reads it.
func schedConstraint(c api.Constraint) (scheduler.Constraint, error) {
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
		return sc, fmt.Errorf("constraint on %q: unknown operator %q", c.Key, c.Op)
	}
	return sc, nil
}

// eligibleNodes are the nodes a global service with placement p runs on:
// ready, schedulable (not cordoned or draining) and matching its constraints.
func eligibleNodes(nodes []*api.Node, p api.Placement) []string {
	var out []string
next:
	for _, n := range nodes {
		if n.Status.Condition != api.NodeReady || n.Spec.Unschedulable || n.Spec.Draining {
			continue
		}
		for _, c := range p.Constraints {
			sc, err := schedConstraint(c)
			if err != nil || !sc.Matches(n.Metadata.Name, n.Metadata.Labels) {
				continue next
			}
		}
		out = append(out, n.Metadata.Name)
	}
	return out
}

// noEligibleMessage says why a global service with placement p has no
// node to run on, naming a constraint that left out nodes whose own
// report of its label would have matched it.
func noEligibleMessage(nodes []*api.Node, p api.Placement) string {
	usable := 0
	reported := make([]int, len(p.Constraints))
	for _, n := range nodes {
		if n.Status.Condition != api.NodeReady || n.Spec.Unschedulable || n.Spec.Draining {
			continue
		}
		usable++
		for i, c := range p.Constraints {
			sc, err := schedConstraint(c)
			if err == nil && !sc.Matches(n.Metadata.Name, n.Metadata.Labels) && scheduler.ReportedMatch(sc, n.Metadata.Name, n.Metadata.Labels) {
				reported[i]++
			}
		}
	}
	msg := fmt.Sprintf("no node to run on: none of the %d Ready, schedulable nodes matches the placement", usable)
	for i, c := range p.Constraints {
		if reported[i] > 0 {
			sc, _ := schedConstraint(c)
			msg += fmt.Sprintf("; %s: %s", sc, scheduler.ReportedLabelHint(reported[i], c.Key))
			break
		}
	}
	return msg
}

// pinnedNode is the node a placement pins an instance to (node.name == N).
func pinnedNode(p api.Placement) string {
	for _, c := range p.Constraints {
		if c.Key == scheduler.NodeNameKey && c.Op == api.OpEq && len(c.Values) == 1 {
			return c.Values[0]
		}
	}
	return ""
}
