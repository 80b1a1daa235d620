package apiserver

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/store"
)

// WatchEvent is one line of a watch stream. Type is Added, Modified,
// Deleted, Heartbeat (sent when the stream is quiet, to be ignored), or
// Error (then Error and Code say why, and the stream ends).
// Revision is the change's revision: watching again with it resumes right
// after this event.
type WatchEvent struct {
	Type     string          `json:"type"`
	Revision int64           `json:"revision,omitempty"`
	Object   json.RawMessage `json:"object,omitempty"`
	Error    string          `json:"error,omitempty"`
	Code     string          `json:"code,omitempty"`
}

// serveWatch streams events as newline-delimited JSON, or as server-sent
// events when the client accepts text/event-stream, until the client goes
// away or the watch fails. SSE events carry the revision as their id, so
// a reconnecting EventSource resumes where it was (Last-Event-ID).
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, events <-chan store.WatchEvent) {
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.WriteHeader(http.StatusOK)
	kind := r.PathValue("kind")
	if kind == "" {
		kind = "assignments"
	}
	metrics.APIWatches.WithLabelValues(kind).Inc()
	defer metrics.APIWatches.WithLabelValues(kind).Dec()
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	write := func(ev WatchEvent) bool {
		b, _ := json.Marshal(ev)
		var err error
		if sse {
			_, err = w.Write([]byte("event: " + ev.Type + "\n"))
			if err == nil && ev.Revision != 0 {
				_, err = w.Write([]byte("id: " + jsonInt(ev.Revision) + "\n"))
			}
			if err == nil {
				_, err = w.Write(append(append([]byte("data: "), b...), '\n', '\n'))
			}
		} else {
			_, err = w.Write(append(b, '\n'))
		}
		if err == nil {
			err = rc.Flush()
		}
		return err == nil
	}
	beat := time.NewTicker(s.heartbeat)
	defer beat.Stop()
	// A node's stream ends once its certificate stops working, not at
	// its next request: checked again whenever the credentials change.
	id, _ := IdentityFrom(r.Context())
	var creds <-chan struct{}
	if id.Node != "" && s.creds != nil {
		creds = s.creds.Changed(id.Node)
	}
	for {
		var ev store.WatchEvent
		var ok bool
		select {
		case <-creds:
			creds = s.creds.Changed(id.Node)
			if err := s.checkNodeCert(r, id); err != nil {
				write(WatchEvent{Type: "Error", Error: err.Error(), Code: errdefs.Code(err)})
				return
			}
			continue
		case ev, ok = <-events:
		case <-beat.C:
			// Lets the client tell a quiet stream from a dead peer.
			if !write(WatchEvent{Type: "Heartbeat"}) {
				return
			}
			continue
		case <-r.Context().Done():
			return
		}
		if !ok {
			return
		}
		if ev.Err != nil {
			write(WatchEvent{Type: "Error", Error: ev.Err.Error(), Code: errdefs.Code(ev.Err)})
			return
		}
		if !write(toWire(ev)) {
			return
		}
	}
}

func toWire(ev store.WatchEvent) WatchEvent {
	b, _ := json.Marshal(ev.Object)
	return WatchEvent{Type: string(ev.Type), Revision: ev.Revision, Object: b}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
