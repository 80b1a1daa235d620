// Package controller holds the control plane's reconcilers: services keep
// their replica count, jobs run their indices to completion, and nodes
// that stop heartbeating lose their instances. Each is a pure Compute
// function over a snapshot (clock passed in) returning the writes to make;
// thin runners (runner.go and one *_pass.go file per pass) feed them from
// the store and apply the result.
// Run twice on the same snapshot, a Compute returns the same answer, and
// re-listing after a crash converges from wherever things were.
package controller

import (
	"time"

	"github.com/berth-dev/berth/api"
)

// Instance is what a controller needs to know of one instance.
type Instance struct {
	Namespace string
	Name      string
	Phase     api.Phase
	Node      string
	// Target is the node the instance's placement pins it to
	// (node.name == N), if any: where a global service's unbound instance goes.
	Target    string
	Healthy   bool
	CreatedAt time.Time
	// SpecHash identifies the template the instance was made from.
	SpecHash string
	// Restarts, Reason and ExitCode are the agent's report of it.
	Restarts int
	Reason   string
	ExitCode int
	// Index and Attempt place a job instance; unused for services.
	Index   int
	Attempt int
	// Deleting marks an instance already being removed.
	Deleting bool
}

// Key names the instance as "namespace/name".
func (i Instance) Key() string { return i.Namespace + "/" + i.Name }
