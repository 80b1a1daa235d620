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
// With spec.drainMigrate, running service instances whose template says
// migration: live (and whose executor can checkpoint) are moved with
// their memory instead, one at a time per node, through Options.Migrate;
// one whose move fails is restarted elsewhere like the others (the
// failure is an event on the instance). Instances that cannot move live
// (migration: restart, the built-in executor, init or sidecar containers)
// are restarted, as a drain without --migrate does, and the NodeDraining
// event says which.
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
	// Live says the instance is to move with its memory: the drain
	// migrates, its template says migration: live and it can, and no
	// move of it has failed.
	Live bool
}

// Key names the instance as "namespace/name".
func (i DrainInstance) Key() string { return i.Namespace + "/" + i.Name }

// DrainResult is what to do for one draining node.
type DrainResult struct {
	// Evict names ("namespace/name") the instances to delete now.
	Evict []string
	// Migrate names the instances to move live to other nodes.
	Migrate []string
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
		case in.Live && in.Owner == api.KindService && in.Phase == api.PhaseRunning:
			res.Migrate = append(res.Migrate, in.Key())
		case in.Owner == api.KindJob && in.Phase != api.PhasePending && in.Phase != api.PhaseScheduled:
			res.Waiting = append(res.Waiting, in.Key())
		default:
			res.Evict = append(res.Evict, in.Key())
		}
	}
	sort.Strings(res.Evict)
	sort.Strings(res.Migrate)
	sort.Strings(res.Waiting)
	res.Done = len(res.Evict) == 0 && len(res.Migrate) == 0 && len(res.Waiting) == 0
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
//
// Long because it is one pass over the draining nodes whose steps share the
// snapshot it changes as it goes.
func (m *Manager) drainPass(ctx context.Context, sn *snapshot) error {
	// Nodes as they were when none was draining still have none.
	if sn.nodeGen != 0 && sn.nodeGen == m.noDrains {
		return nil
	}
	draining := map[string]*api.Node{}
	var names []string
	for _, n := range sn.nodes {
		if n.Spec.Draining {
			draining[n.Metadata.Name] = n
			names = append(names, n.Metadata.Name)
		}
	}
	if len(names) == 0 {
		m.noDrains = sn.nodeGen
		return nil
	}
	sort.Strings(names)
	on := map[string][]DrainInstance{}
	var notLive []string
	for _, in := range sn.instances {
		n := draining[in.Spec.Node]
		if n == nil {
			continue
		}
		di := DrainInstance{Namespace: in.Metadata.Namespace, Name: in.Metadata.Name, Owner: in.Spec.Owner.Kind, Phase: phaseOf(in)}
		// An instance of several containers cannot move live whatever its
		// template says: the drain names it among those it restarts.
		if n.Spec.DrainMigrate && m.opt.Migrate != nil && (in.Spec.Template.Migration == api.MigrationLive || len(in.Spec.Template.Containers) > 0) {
			if err := in.Spec.Template.LiveMigratable(); err != nil {
				notLive = append(notLive, fmt.Sprintf("%s (%v)", di.Key(), err))
			} else {
				di.Live = !m.moves.failed(di.Key())
			}
		}
		on[in.Spec.Node] = append(on[in.Spec.Node], di)
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
			msg := fmt.Sprintf("evicted %d instances to move them to other nodes: %s", len(evicted), strings.Join(evicted, ", "))
			if n.Spec.DrainMigrate {
				msg += "; restarted, not migrated live: their template says migration: restart, or their move failed"
				if len(notLive) > 0 {
					sort.Strings(notLive)
					msg += ", or they cannot move live: " + strings.Join(notLive, ", ")
				}
			}
			m.event(ctx, n, api.EventNormal, "NodeDraining", msg)
		}
		if started := m.moves.start(ctx, m, name, res.Migrate); len(started) > 0 {
			m.event(ctx, n, api.EventNormal, "NodeDraining",
				fmt.Sprintf("migrating %d instances live to other nodes: %s", len(started), strings.Join(started, ", ")))
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
		n.Spec.Draining, n.Spec.DrainMigrate = false, false
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
		// Afresh: sn.instances may be the cache's (see snapshot.lent).
		kept := make([]*api.Instance, 0, len(sn.instances))
		for _, in := range sn.instances {
			if !gone[in.Metadata.Namespace+"/"+in.Metadata.Name] {
				kept = append(kept, in)
			} else {
				sn.touch(in)
			}
		}
		sn.instances, sn.instancesOwn = kept, true
	}
	return errors.Join(errs...)
}

// moves are the live migrations draining nodes have under way: at most
// one batch per node at a time, each instance moved one after the other.
type moves struct {
	mu     sync.Mutex
	busy   map[string]bool   // nodes with a batch under way
	broken map[string]string // instances whose move failed: why
}

func (mv *moves) failed(key string) bool {
	mv.mu.Lock()
	defer mv.mu.Unlock()
	_, ok := mv.broken[key]
	return ok
}

// start moves keys off node in the background unless a batch for node is
// under way, and returns what it started; the manager passes again as
// each move ends.
func (mv *moves) start(ctx context.Context, m *Manager, node string, keys []string) []string {
	if len(keys) == 0 || m.opt.Migrate == nil {
		return nil
	}
	mv.mu.Lock()
	defer mv.mu.Unlock()
	if mv.busy[node] {
		return nil
	}
	if mv.busy == nil {
		mv.busy, mv.broken = map[string]bool{}, map[string]string{}
	}
	mv.busy[node] = true
	go func() {
		for _, key := range keys {
			ns, name, _ := strings.Cut(key, "/")
			res, err := m.opt.Migrate(ctx, ns, name, "")
			mv.mu.Lock()
			if err != nil {
				mv.broken[key] = err.Error()
				m.log.Warn("drain: live migration failed; the instance will be restarted elsewhere", "node", node, "instance", key, "err", err)
			} else {
				m.log.Info("drain: migrated live", "node", node, "instance", key, "to", res.To, "downtime", res.Downtime)
			}
			mv.mu.Unlock()
			m.again()
		}
		mv.mu.Lock()
		delete(mv.busy, node)
		mv.mu.Unlock()
		m.again()
	}()
	return keys
}
