package apiserver

// Node actions:
//
//	POST /v1/nodes/{name}/cordon     keep new instances off the node
//	POST /v1/nodes/{name}/drain      cordon, and move the node's instances off it;
//	                                 ?migrate=1 moves those whose template says
//	                                 migration: live with CRIU (spec.drainMigrate)
//	POST /v1/nodes/{name}/uncordon   schedulable again; ends a drain in progress
//
// A drain is a cluster-wide lock in the spirit of a reboot lock: at most
// MaxDraining nodes drain at once, and a drain asked for beyond that is
// refused with 409, naming the nodes still draining. The controller ends
// a drain (clears spec.draining, leaving spec.unschedulable) once nothing
// is left on the node; only then does the node's slot free up.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// DefaultMaxDraining is how many nodes may drain at once unless
// SetMaxDraining says otherwise.
const DefaultMaxDraining = 1

// drainLimits holds each Server's SetMaxDraining.
var drainLimits sync.Map // *Server → int

// SetMaxDraining sets how many nodes may drain at once; n < 1 restores
// DefaultMaxDraining. Call it before serving.
func (s *Server) SetMaxDraining(n int) {
	if n < 1 {
		drainLimits.Delete(s)
		return
	}
	drainLimits.Store(s, n)
}

// MaxDraining is how many nodes may drain at once.
func (s *Server) MaxDraining() int {
	if v, ok := drainLimits.Load(s); ok {
		return v.(int)
	}
	return DefaultMaxDraining
}

// drainRetries bounds how often a drain reads again after losing a race
// with another write to the nodes it compares.
const drainRetries = 20

func (s *Server) cordonNode(w http.ResponseWriter, r *http.Request) {
	s.nodeAction(w, r, "cordon", func(n *api.Node) { n.Spec.Unschedulable = true })
}

func (s *Server) uncordonNode(w http.ResponseWriter, r *http.Request) {
	s.nodeAction(w, r, "uncordon", func(n *api.Node) { n.Spec.Unschedulable, n.Spec.Draining, n.Spec.DrainMigrate = false, false, false })
}

// nodeAction changes one node's spec, under the request's revision
// precondition if it names one.
func (s *Server) nodeAction(w http.ResponseWriter, r *http.Request, what string, change func(*api.Node)) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rev, err := precondition(r, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	obj, err := s.modify(r.Context(), t, rev, func(o api.Object) { change(o.(*api.Node)) })
	if err != nil {
		writeError(w, fmt.Errorf("%s %s: %w", what, t.ref(), err))
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) drainNode(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var migrate bool
	switch q := r.URL.Query().Get("migrate"); q {
	case "", "0", "false":
	case "1", "true":
		migrate = true
	default:
		writeError(w, &api.ValidationError{Fields: []api.FieldError{{Field: "migrate", Reason: fmt.Sprintf("must be 1 or 0, got %q", q)}}})
		return
	}
	n, err := DrainNode(r.Context(), s.store, t.name, s.MaxDraining(), migrate)
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, n)
}

// DrainNode marks node unschedulable and draining unless limit nodes drain
// already; then it fails with errdefs.ErrConflict naming them. Draining a
// node that drains already changes nothing.
//
// Two drains racing must not both pass the check. Every drain therefore
// writes, in the transaction that marks its node, the node with the
// lowest name too (unchanged), both at the revisions its check read
// them at: of two drains, the second to commit finds that node changed
// and reads again, and then sees the first one's node draining.
//
// With migrate, instances whose template says migration: live move with
// their memory (spec.drainMigrate); asked of a node draining already, it
// turns that on.
func DrainNode(ctx context.Context, st *store.Store, node string, limit int, migrate bool) (*api.Node, error) {
	if limit < 1 {
		limit = DefaultMaxDraining
	}
	ref := api.Ref(api.KindNode, "", node)
	for attempt := 0; ; attempt++ {
		nodes, _, err := store.List[api.Node](ctx, st, "")
		if err != nil {
			return nil, err
		}
		var target, anchor *api.Node
		var draining []string
		for _, n := range nodes {
			switch {
			case n.Metadata.Name == node:
				target = n
			case n.Spec.Draining:
				draining = append(draining, n.Metadata.Name)
			}
			if anchor == nil || n.Metadata.Name < anchor.Metadata.Name {
				anchor = n
			}
		}
		if target == nil {
			return nil, fmt.Errorf("drain %s: %w", ref, errdefs.ErrNotFound)
		}
		if target.Spec.Draining && (target.Spec.DrainMigrate || !migrate) {
			return target, nil
		}
		if len(draining) >= limit && !target.Spec.Draining {
			slices.Sort(draining)
			return nil, fmt.Errorf("drain %s: %w: %d of at most %d nodes are draining already (%s); wait until they are drained, or uncordon one",
				ref, errdefs.ErrConflict, len(draining), limit, strings.Join(draining, ", "))
		}
		target.Spec.Unschedulable, target.Spec.Draining = true, true
		target.Spec.DrainMigrate = target.Spec.DrainMigrate || migrate
		txn := st.Txn().Update(target, target.Metadata.Revision)
		if anchor != target {
			txn.Update(anchor, anchor.Metadata.Revision)
		}
		err = txn.Commit(ctx)
		if err == nil {
			return target, nil
		}
		if !errdefs.IsConflict(err) || attempt >= drainRetries || ctx.Err() != nil {
			return nil, fmt.Errorf("drain %s: %w", ref, err)
		}
	}
}
