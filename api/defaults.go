package api

import (
	"slices"
	"time"
)

// Defaults of a template's fields that a spec may leave out; the restart
// policy's depends on the owner (DefaultRestart). The pull policy's
// depends on the image's tag, which pinning rewrites, so it is left to
// EffectivePullPolicy and never written into a spec.
const (
	DefaultProtocol       = "tcp"
	DefaultHealthInterval = Duration(5 * time.Second)
	DefaultHealthTimeout  = Duration(time.Second)
	DefaultHealthFailures = 3
)

// WithDefaults is t with the defaults it leaves out filled in, for a
// template of an owner of that kind: the one place they are decided, for
// the API (which stores specs with them), the controllers and the agent.
func (t Template) WithDefaults(owner Kind) Template {
	return t.defaults(owner, true)
}

// withoutDefaults is t with every field that holds its default cleared,
// the inverse of WithDefaults: Hash hashes it, so that a template stored
// with its defaults written out (as the API stores them) and the same
// template stored without them (as before it did) make the same hash and
// an upgrade rolls nothing.
func (t Template) withoutDefaults(owner Kind) Template {
	return t.defaults(owner, false)
}

// defaults fills (fill) or clears (!fill) t's defaulted fields: one list
// of them for both directions. Slices and pointers are copied before they
// change, so t's caller sees no change.
func (t Template) defaults(owner Kind, fill bool) Template {
	setDefault(&t.Restart, DefaultRestart(owner), fill)
	setDefault(&t.Migration, MigrationRestart, fill)
	t.Ports = slices.Clone(t.Ports)
	for i := range t.Ports {
		setDefault(&t.Ports[i].Protocol, DefaultProtocol, fill)
	}
	t.Health = t.Health.defaults(fill)
	t.Containers = slices.Clone(t.Containers)
	for i := range t.Containers {
		c := &t.Containers[i]
		c.Health = c.Health.defaults(fill)
		if c.Sidecar {
			setDefault(&c.Restart, RestartAlways, fill)
		}
	}
	return t
}

// defaults is a copy of h with its timing defaults filled or cleared.
func (h *Health) defaults(fill bool) *Health {
	if h == nil {
		return nil
	}
	c := *h
	setDefault(&c.Interval, DefaultHealthInterval, fill)
	setDefault(&c.Timeout, DefaultHealthTimeout, fill)
	setDefault(&c.Failures, DefaultHealthFailures, fill)
	return &c
}

// setDefault sets an empty *v to def (fill), or empties a *v equal to def.
func setDefault[T comparable](v *T, def T, fill bool) {
	var zero T
	switch {
	case fill && *v == zero:
		*v = def
	case !fill && *v == def:
		*v = zero
	}
}

// NodeTTL is how long a node stays alive after its last heartbeat (a
// server's default), and NodeHeartbeatInterval how often its agent beats
// until the server says otherwise (see HeartbeatInterval).
const (
	NodeTTL               = 10 * time.Second
	NodeHeartbeatInterval = NodeTTL / 3
)

// HeartbeatIntervalHeader carries, on the answer to a node's heartbeat,
// how long its agent waits before the next: HeartbeatInterval of the
// server's node TTL, as a Go duration.
const HeartbeatIntervalHeader = "Berth-Heartbeat-Interval"

// A watch request may ask for heartbeats on its quiet stream less often
// than the server's pace with the query parameter WatchHeartbeatParam (a
// Go duration); the server grants up to MaxWatchHeartbeat, never more
// often than its own pace, and says what it granted in the answer's
// WatchHeartbeatHeader. A client that knows its link alive otherwise (an
// agent beats over it) asks for fewer: each heartbeat is a write, a TLS
// record and a syscall, and thousands of nodes' assignment watches
// beating every 15 s cost a settled server more than the nodes' own
// heartbeats.
const (
	WatchHeartbeatParam  = "heartbeat"
	WatchHeartbeatHeader = "Berth-Watch-Heartbeat"
	MaxWatchHeartbeat    = 5 * time.Minute
)

// PreferMinimal, in a node status write's Prefer header (RFC 7240), asks
// for no body in the answer when the write is a heartbeat that changes
// nothing stored: 204 No Content instead of the node. Thousands of nodes
// beat every few seconds; the node written back, in a frame of its own,
// was a good part of what each beat cost the server.
const PreferMinimal = "return=minimal"

// HeartbeatInterval is how often a node beats to stay alive for ttl: a
// third of it, so that a node outlives two beats lost in a row (each
// gives up after an interval). Each beat costs the server a request and
// etcd's leader a lease renewal: more often would buy nothing but load.
func HeartbeatInterval(ttl time.Duration) time.Duration { return ttl / 3 }
