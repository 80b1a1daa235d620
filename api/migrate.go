package api

import (
	"fmt"
	"time"
)

// Migration policies of a service's template (Template.Migration): what
// a drain with --migrate does with its instances.
const (
	// MigrationRestart stops the instance and starts a new one elsewhere
	// (the default, and what a drain without --migrate always does).
	MigrationRestart = "restart"
	// MigrationLive moves the running processes with CRIU: checkpoint,
	// transfer, restore on another node. Only executors with CRIU support
	// (runtime: runc) can; others fall back to restart.
	MigrationLive = "live"
)

// Headers of the agents' migration routes: the instance (JSON, base64)
// sent to the target, which is not assigned it yet, and the source's
// trailer saying when the final dump began.
const (
	HeaderMigrationInstance = "Berth-Instance"
	HeaderMigrationFrozenAt = "Berth-Frozen-At"
)

// Migration is the answer to POST
// /v1/namespaces/{ns}/instances/{name}/migrate: where the instance went,
// how long it took and how long it did not run.
type Migration struct {
	Instance string `json:"instance"`
	From     string `json:"from"`
	To       string `json:"to"`
	// IP is the instance's address on its new node (connections to the
	// old one were closed: their peers connect again).
	IP string `json:"ip,omitempty"`
	// Bytes is the size of the CRIU images sent.
	Bytes int64 `json:"bytes"`
	// Duration runs from the request to the instance running on To;
	// Downtime from the final dump's start to the end of the restore.
	Duration time.Duration `json:"duration"`
	Downtime time.Duration `json:"downtime"`
}

// MigrationRestored is what a target node's agent answers once it has
// restored a migrating instance.
type MigrationRestored struct {
	ContainerID string    `json:"containerID"`
	Pid         int       `json:"pid"`
	IP          string    `json:"ip,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	RestoredAt  time.Time `json:"restoredAt"`
}

// LiveMigratable says why instances of t cannot be migrated live, or nil
// when they can: a checkpoint holds one container, their executor must
// dump with CRIU, and exclusive CPUs stay with the node that granted them.
func (t *Template) LiveMigratable() error {
	switch {
	case len(t.Containers) > 0:
		return fmt.Errorf("an instance with init or sidecar containers is not migrated: a checkpoint holds one container, and restored alone it would lose the others")
	case t.Runtime != "runc" && t.Runtime != "crun":
		rt := t.Runtime
		if rt == "" {
			rt = "berth (built-in)"
		}
		return fmt.Errorf("runtime %s cannot checkpoint: live migration needs runtime: runc", rt)
	case t.Resources.Exclusive:
		return fmt.Errorf("exclusive CPUs are not migrated: its CPUs belong to its node")
	}
	return nil
}
