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
	HeaderMigrationDumpTook = "Berth-Dump-Took"
	// HeaderMigrationSent, the source's trailer of a direct stream
	// (MigrationDirect), is the bytes it sent to the target.
	HeaderMigrationSent = "Berth-Sent"
	// HeaderMigrationDirect, "1" in the source's answer, says its stream
	// goes to the target's offer: the answer's body is empty.
	HeaderMigrationDirect = "Berth-Direct"
	// MigrationPagesProtocol is the Upgrade of the agents' page streams
	// of a post-copy migration.
	MigrationPagesProtocol = "berth-pages"
)

// MigrateOptions are the choices of a migration (POST .../migrate?to=&postCopy=).
type MigrateOptions struct {
	// To is the target node; empty: the Ready, schedulable node with the
	// fewest instances.
	To string
	// PostCopy restores the instance on the target before its memory has
	// come: only its few MiB of other state cross while it runs nowhere,
	// and its pages follow, each fetched from the source when first
	// touched, the rest in the background. Downtime no longer grows with
	// memory; the price is that, from the restore until the last page has
	// come, losing either node or the link between them loses the
	// instance's memory (it restarts afresh, and an event says so).
	PostCopy bool
}

// Migration is the answer to POST
// /v1/namespaces/{ns}/instances/{name}/migrate: where the instance went,
// how long it took and how long it did not run.
type Migration struct {
	Instance string `json:"instance"`
	From     string `json:"from"`
	To       string `json:"to"`
	// PostCopy says the memory followed the restore (MigrateOptions).
	PostCopy bool `json:"postCopy,omitempty"`
	// IP is the instance's address on its new node (connections to the
	// old one were closed: their peers connect again).
	IP string `json:"ip,omitempty"`
	// Bytes is the size of the CRIU images sent, and with PostCopy the
	// memory that followed.
	Bytes int64 `json:"bytes"`
	// Direct says the images went straight from From's agent to To's
	// (MigrationDirect), not relayed through the server.
	Direct bool `json:"direct,omitempty"`
	// Duration runs from the request to the instance running on To;
	// Downtime from the final dump's start to the end of the restore.
	Duration time.Duration `json:"duration"`
	Downtime time.Duration `json:"downtime"`
	// Stages is where the time went: prepare (the target, before the
	// freeze), dump (the source's final dump), transfer (from the dump's
	// end to the last image received), restore (on the target) and
	// switch (the instance's record moved to the target, so the
	// service's VIP sends to it).
	Stages MigrationStages `json:"stages"`
	// FrozenAt is when the source froze the instance for its final dump,
	// RestoredAt when it ran again on To (each node's clock), SwitchedAt
	// when its record moved to To, so that the service's VIP sends there
	// (the server's): the downtime's ends, for a client's timeline.
	FrozenAt   time.Time `json:"frozenAt,omitzero"`
	RestoredAt time.Time `json:"restoredAt,omitzero"`
	SwitchedAt time.Time `json:"switchedAt,omitzero"`
}

// MigrationStages are the parts of a migration's time (Migration.Stages).
type MigrationStages struct {
	Prepare  time.Duration `json:"prepare"`
	Dump     time.Duration `json:"dump"`
	Transfer time.Duration `json:"transfer"`
	Restore  time.Duration `json:"restore"`
	Switch   time.Duration `json:"switch"`
	// PostCopy runs from the restore to the last page received
	// (MigrateOptions.PostCopy); the instance runs meanwhile.
	PostCopy time.Duration `json:"postCopy,omitempty"`
}

// MigrationDirect is a target agent's offer, as it prepares, to receive
// a migration's images straight from the source's agent: where it
// listens, the SHA-256 (hex) of the certificate it answers with there,
// and the token (hex) the source sends first.
type MigrationDirect struct {
	Addr  string `json:"addr"`
	Cert  string `json:"cert"`
	Token string `json:"token"`
}

// MigrationRestored is what a target node's agent answers once it has
// restored a migrating instance.
type MigrationRestored struct {
	ContainerID string    `json:"containerID"`
	Pid         int       `json:"pid"`
	IP          string    `json:"ip,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	// ReceivedAt is when the last of the images came, RestoredAt when
	// the container ran again.
	ReceivedAt time.Time `json:"receivedAt"`
	RestoredAt time.Time `json:"restoredAt"`
}

// LiveMigratable says why instances of t cannot be migrated live, or nil
// when they can: a checkpoint holds one container, their executor must
// dump with CRIU, exclusive CPUs stay with the node that granted them, and
// so does the data of named volumes and host paths (node-local: the
// processes would come back to other files, or none). The container's
// own writable layer moves with it.
func (t *Template) LiveMigratable() error {
	if len(t.Containers) > 0 {
		return fmt.Errorf("an instance with init or sidecar containers is not migrated: a checkpoint holds one container, and restored alone it would lose the others")
	}
	for _, v := range t.Volumes {
		switch {
		case v.Name != "":
			return fmt.Errorf("named volume %s is node-local: its data cannot move with the instance; use migration: restart", v.Name)
		case v.HostPath != "":
			return fmt.Errorf("host path %s is node-local: its data cannot move with the instance; use migration: restart", v.HostPath)
		}
	}
	switch {
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
