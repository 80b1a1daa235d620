package apiserver

import (
	"net/http"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/store"
)

// The reasons of the audit events the server records as callers reach
// into instances (recordRemoteOp). Only the server writes them: no node
// may record an event with one (admitNodeEvent), and the store keeps
// each kind of them to a quota of its own (store.RecordAuditEvent).
const (
	reasonExec        = "Exec"
	reasonAttach      = "Attach"
	reasonCopyIn      = "CopyIn"
	reasonCopyOut     = "CopyOut"
	reasonPortForward = "PortForward"
	reasonCheckpoint  = "Checkpoint"
	reasonRestore     = "Restore"
)

var auditReasons = []string{reasonExec, reasonAttach, reasonCopyIn, reasonCopyOut, reasonPortForward, reasonCheckpoint, reasonRestore}

// auditReason is the reason of the audit event an instance operation
// (instanceOp) records; "" for one that records none (logs, stats).
func auditReason(op, method string) string {
	switch op {
	case "exec":
		return reasonExec
	case "attach":
		return reasonAttach
	case "cp":
		if method == http.MethodPut {
			return reasonCopyIn
		}
		return reasonCopyOut
	case "portforward":
		return reasonPortForward
	case "checkpoint":
		return reasonCheckpoint
	case "restore":
		return reasonRestore
	}
	return ""
}

// isAuditReason says whether reason is an audit event's, or passes for
// one: whether it makes the same kind (store.AuditKind).
func isAuditReason(reason string) bool {
	kind := store.AuditKind(reason)
	for _, r := range auditReasons {
		if kind != "" && kind == store.AuditKind(r) {
			return true
		}
	}
	return false
}

// forwardSessions gather a caller's port-forward connections to one port
// of one instance into sessions, so that the audit record says once that
// the caller forwarded the port, not once per connection: a browser or a
// load test through a forward opens connections by the thousand. A
// session ends forwardIdle after its last connection closed. One that
// goes on is recorded again, with the count of connections since, by the
// first connection forwardRefresh after its last record: shorter than an
// event lives at least (half the store's event TTL of an hour), so that
// a session in use always has a record.
type forwardSessions struct {
	mu    sync.Mutex
	m     map[forwardKey]*forwardSession
	swept time.Time
}

// forwardKey names a session: who (the caller and its address), which
// instance (by UID: a new one of the same name is another), which
// container and which port.
type forwardKey struct {
	who, uid, container, port string
}

type forwardSession struct {
	open     int
	ended    time.Time // when the last connection closed, while none is open
	recorded time.Time // when the session was last recorded
	since    int       // connections since then, not counting the recorded one
}

const (
	forwardIdle    = time.Minute
	forwardRefresh = 20 * time.Minute
)

// begin counts a connection of session k at now. It says whether to
// record it, and then how many connections the session had since its
// last record, this one included (0 for a new session), and when that
// record was; done, called with the time the connection ends, closes it.
func (f *forwardSessions) begin(k forwardKey, now time.Time) (record bool, n int, last time.Time, done func(time.Time)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[forwardKey]*forwardSession{}
	}
	if now.Sub(f.swept) >= forwardIdle {
		for key, s := range f.m {
			if s.open == 0 && now.Sub(s.ended) >= forwardIdle {
				delete(f.m, key)
			}
		}
		f.swept = now
	}
	s := f.m[k]
	switch {
	case s == nil || s.open == 0 && now.Sub(s.ended) >= forwardIdle:
		s = &forwardSession{recorded: now}
		f.m[k] = s
		record = true
	case now.Sub(s.recorded) >= forwardRefresh:
		record, n, last = true, s.since+1, s.recorded
		s.recorded, s.since = now, 0
	default:
		s.since++
	}
	s.open++
	return record, n, last, func(end time.Time) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if s.open--; s.open == 0 {
			s.ended = end
		}
	}
}
