package controller

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Draining a node (spec.draining, set with spec.unschedulable through
// POST /v1/nodes/{name}/drain) moves what runs on it elsewhere:
//
//   - service instances are deleted; the service controller makes
//     replacements in the same pass, and the scheduler places them on
//     other nodes, since this one is unschedulable;
//   - job instances not started yet (Pending, Scheduled) are deleted too;
//     the job controller makes their index again, at no cost to the
//     backoff limit;
//   - job instances that have started are left to finish: killing a
//     batch shard throws its work away. The drain waits for them, and an
//     event (DrainWaiting) names them.
//
// When nothing live is left on the node, the drain is finished: spec.draining
// goes back to false, spec.unschedulable stays, and a NodeDrained event
// says so. Uncordoning the node makes it schedulable again.

// DrainInstance is an instance on a draining node, as the drain sees it.
type DrainInstance struct {
	Namespace string
	Name      string
	Owner     api.Kind
	Phase     api.Phase
}

// Key names the instance as "namespace/name".
func (i DrainInstance) Key() string { return i.Namespace + "/" + i.Name }

// DrainResult is what to do for one draining node.
type DrainResult struct {
	// Evict names ("namespace/name") the instances to delete now.
	Evict []string
	// Waiting names the job instances the drain waits to finish.
	Waiting []string
	// Done says nothing is left on the node: the drain is finished.
	Done bool
}

// ComputeDrain decides, for the instances bound to a draining node, which
// go now and which the drain waits for. Finished instances do not count.
func ComputeDrain(insts []DrainInstance) DrainResult {
	var res DrainResult
	for _, in := range insts {
		switch {
		case in.Phase.Terminal():
		case in.Owner == api.KindJob && in.Phase != api.PhasePending && in.Phase != api.PhaseScheduled:
			res.Waiting = append(res.Waiting, in.Key())
		default:
			res.Evict = append(res.Evict, in.Key())
		}
	}
	sort.Strings(res.Evict)
	sort.Strings(res.Waiting)
	res.Done = len(res.Evict) == 0 && len(res.Waiting) == 0
	return res
}

// drainNotes remembers, per manager and node, the last DrainWaiting
// message recorded, so that a drain waiting over many passes says so once.
var drainNotes = struct {
	sync.Mutex
	m map[*Manager]map[string]string
}{m: map[*Manager]map[string]string{}}

// noteWaiting reports whether msg is new for node, and remembers it; an
// empty msg forgets the node.
func (m *Manager) noteWaiting(node, msg string) bool {
	drainNotes.Lock()
	defer drainNotes.Unlock()
	notes := drainNotes.m[m]
	if notes == nil {
		notes = map[string]string{}
		drainNotes.m[m] = notes
	}
	if msg == "" {
		delete(notes, node)
		return false
	}
	if notes[node] == msg {
		return false
	}
	notes[node] = msg
	return true
}

// drainPass works on draining nodes. Instances it deletes leave sn, so
// that the service and job controllers replace them in the same pass.
func (m *Manager) drainPass(ctx context.Context, sn *snapshot) error {
	draining := map[string]*api.Node{}
	var names []string
	for _, n := range sn.nodes {
		if n.Spec.Draining {
			draining[n.Metadata.Name] = n
			names = append(names, n.Metadata.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	on := map[string][]DrainInstance{}
	for _, in := range sn.instances {
		if draining[in.Spec.Node] != nil {
			on[in.Spec.Node] = append(on[in.Spec.Node], DrainInstance{Namespace: in.Metadata.Namespace,
				Name: in.Metadata.Name, Owner: in.Spec.Owner.Kind, Phase: phaseOf(in)})
		}
	}
	var errs []error
	gone := map[string]bool{}
	for _, name := range names {
		n := draining[name]
		res := ComputeDrain(on[name])
		var evicted []string
		for _, key := range res.Evict {
			ns, iname, _ := strings.Cut(key, "/")
			if err := m.s.Delete(ctx, api.KindInstance, ns, iname, 0); err != nil && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("drain node %s: %w", name, err))
				continue
			}
			gone[key] = true
			evicted = append(evicted, key)
		}
		if len(evicted) > 0 {
			m.event(ctx, n, api.EventNormal, "NodeDraining",
				fmt.Sprintf("evicted %d instances to move them to other nodes: %s", len(evicted), strings.Join(evicted, ", ")))
		}
		if len(res.Waiting) > 0 {
			msg := fmt.Sprintf("waiting for %d job instances to finish: %s", len(res.Waiting), strings.Join(res.Waiting, ", "))
			if m.noteWaiting(name, msg) {
				m.event(ctx, n, api.EventNormal, "DrainWaiting", msg)
			}
		}
		if !res.Done {
			continue
		}
		m.noteWaiting(name, "")
		n = own(n)
		n.Spec.Draining = false
		if err := m.s.Update(ctx, n, n.Metadata.Revision); err != nil {
			// Changed meanwhile (uncordoned, or a heartbeat): the next pass looks again.
			if !errdefs.IsConflict(err) && !errdefs.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("drain node %s: %w", name, err))
			}
			continue
		}
		m.event(ctx, n, api.EventNormal, "NodeDrained", "nothing is left on the node; it stays unschedulable until uncordoned")
	}
	if len(gone) > 0 {
		kept := sn.instances[:0]
		for _, in := range sn.instances {
			if !gone[in.Metadata.Namespace+"/"+in.Metadata.Name] {
				kept = append(kept, in)
			}
		}
		sn.instances = kept
	}
	return errors.Join(errs...)
}
