package schedtest

import (
	"fmt"

	"github.com/berth-dev/berth/internal/scheduler"
)

// Cluster stands in for the store: the authoritative nodes and allocations
// with a revision that every change bumps. Schedulers take snapshots,
// plan on them and commit optimistically.
type Cluster struct {
	state    *scheduler.State
	revision int64
}

// NewCluster starts a cluster with the given nodes and no allocations.
func NewCluster(nodes []scheduler.Node) (*Cluster, error) {
	s, err := scheduler.NewState(nodes, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return &Cluster{state: s, revision: 1}, nil
}

// Revision is the revision of the last change.
func (c *Cluster) Revision() int64 { return c.revision }

// Snapshot returns a copy of the state at the current revision.
func (c *Cluster) Snapshot() (*scheduler.State, int64) {
	return c.state.Clone(), c.revision
}

// State is the live state; read it, change it through Cluster methods.
func (c *Cluster) State() *scheduler.State { return c.state }

// Commit applies a plan made from an older snapshot: its evictions, then
// the placements that still fit. Those that no longer fit are returned,
// not applied.
func (c *Cluster) Commit(p *scheduler.Plan) []scheduler.Conflict {
	conflicts := c.state.Apply(p)
	c.revision++
	return conflicts
}

// Place plans a batch on the live state and commits it at once, as a
// scheduler with no concurrent writers does.
func (c *Cluster) Place(batch []scheduler.Instance, opts scheduler.Options) *scheduler.Plan {
	p := c.state.Place(batch, opts)
	c.revision++
	return p
}

// AddNode adds a node.
func (c *Cluster) AddNode(n scheduler.Node) error {
	return c.change(c.state.AddNode(n))
}

// SetReady marks a node Ready or NotReady.
func (c *Cluster) SetReady(name string, ready bool) error {
	return c.change(c.state.SetReady(name, ready))
}

// SetLabels replaces a node's labels.
func (c *Cluster) SetLabels(name string, labels map[string]string) error {
	return c.change(c.state.SetLabels(name, labels))
}

// RemoveNode deletes a node and the instances on it.
func (c *Cluster) RemoveNode(name string) ([]string, error) {
	ids, err := c.state.RemoveNode(name)
	return ids, c.change(err)
}

// AddAllocation records an instance bound outside the scheduler.
func (c *Cluster) AddAllocation(a scheduler.Allocation) error {
	return c.change(c.state.AddAllocation(a))
}

// RemoveInstance deletes an allocation, as when an instance stops.
func (c *Cluster) RemoveInstance(id string) error {
	return c.change(c.state.RemoveAllocation(id))
}

func (c *Cluster) change(err error) error {
	if err != nil {
		return fmt.Errorf("cluster at revision %d: %w", c.revision, err)
	}
	c.revision++
	return nil
}
