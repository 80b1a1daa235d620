package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
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

// watchBeat is how often r's stream gets a heartbeat while quiet: this
// server's pace, or the slower one r asks for (api.WatchHeartbeatParam),
// at most api.MaxWatchHeartbeat; an error names a pace that is none.
func (s *Server) watchBeat(r *http.Request) (time.Duration, error) {
	asked := r.URL.Query().Get(api.WatchHeartbeatParam)
	if asked == "" {
		return s.heartbeat, nil
	}
	d, err := time.ParseDuration(asked)
	if err != nil || d <= 0 {
		return 0, &api.ValidationError{Fields: []api.FieldError{{Field: api.WatchHeartbeatParam,
			Reason: fmt.Sprintf("%q is not a positive duration such as 1m", asked)}}}
	}
	return min(max(d, s.heartbeat), api.MaxWatchHeartbeat), nil
}

// serveWatch streams events as newline-delimited JSON, or as server-sent
// events when the client accepts text/event-stream, until the client goes
// away or the watch fails. SSE events carry the revision as their id, so
// a reconnecting EventSource resumes where it was (Last-Event-ID).
// Long because one loop serves both encodings, both sources (a channel,
// a node's assignment feed), the heartbeat, a node's credential changes
// and the batching of bursts, which share its buffer.
func (s *Server) serveWatch(w http.ResponseWriter, r *http.Request, src watchSource) {
	every, err := s.watchBeat(r)
	if err != nil {
		writeError(w, err)
		return
	}
	sse := strings.Contains(r.Header.Get("Accept"), "text/event-stream")
	if sse {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
	} else {
		w.Header().Set("Content-Type", "application/x-ndjson")
	}
	w.Header().Set(api.WatchHeartbeatHeader, every.String())
	w.WriteHeader(http.StatusOK)
	kind := r.PathValue("kind")
	if kind == "" {
		kind = "assignments"
	}
	metrics.APIWatches.WithLabelValues(kind).Inc()
	defer metrics.APIWatches.WithLabelValues(kind).Dec()
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	// buf holds what the next flush sends; between bursts it is back in
	// watchBufs, so that an idle watch (most of thousands of nodes') holds
	// none.
	var buf []byte
	// put adds ev to what the next flush sends.
	put := func(ev WatchEvent) {
		if buf == nil {
			buf = (*watchBufs.Get().(*[]byte))[:0]
		}
		if sse {
			buf = append(buf, "event: "+ev.Type+"\n"...)
			if ev.Revision != 0 {
				buf = append(append(append(buf, "id: "...), jsonInt(ev.Revision)...), '\n')
			}
			buf = appendEvent(append(buf, "data: "...), ev)
			buf = append(buf, '\n', '\n')
		} else {
			buf = append(appendEvent(buf, ev), '\n')
		}
	}
	flush := func() bool {
		_, err := w.Write(buf)
		if cap(buf) <= maxWatchWrite<<1 {
			b := buf[:0]
			watchBufs.Put(&b)
		}
		buf = nil
		if err == nil {
			err = rc.Flush()
		}
		return err == nil
	}
	write := func(ev WatchEvent) bool {
		put(ev)
		return flush()
	}
	beat := time.NewTicker(every)
	defer beat.Stop()
	// A node's stream ends once its certificate stops working, not at
	// its next request: checked again whenever the credentials change.
	id, _ := IdentityFrom(r.Context())
	var creds <-chan struct{}
	if id.Node != "" && s.creds != nil {
		creds = s.creds.Changed(id.Node)
	}
	events := src.events
	var ready <-chan struct{}
	var batch []store.WatchEvent
	if src.feed != nil {
		ready = src.feed.Ready()
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
		case <-ready:
			// A feed hands over all it holds at once.
			batch = src.feed.Take(batch[:0])
			for _, ev := range batch {
				if ev.Err != nil {
					put(WatchEvent{Type: "Error", Error: ev.Err.Error(), Code: errdefs.Code(ev.Err)})
					flush()
					return
				}
				put(toWire(ev))
				if len(buf) >= maxWatchWrite && !flush() {
					return
				}
			}
			if clear(batch); cap(batch) > watchBatchKeep {
				batch = nil // a burst's room is not kept for the watch's life
			}
			if len(buf) > 0 && !flush() {
				return
			}
			continue
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
		put(toWire(ev))
		// A burst (a thousand instances bound at once) goes out in a few
		// writes, not a frame, a TLS record and a flush for each event.
		for more := len(buf) < maxWatchWrite; more; {
			select {
			case ev, ok = <-events:
				switch {
				case !ok:
					flush()
					return
				case ev.Err != nil:
					put(WatchEvent{Type: "Error", Error: ev.Err.Error(), Code: errdefs.Code(ev.Err)})
					flush()
					return
				}
				put(toWire(ev))
				more = len(buf) < maxWatchWrite
			default:
				more = false
			}
		}
		if !flush() {
			return
		}
	}
}

// watchSource is what serveWatch streams: a channel of events, or a
// store Feed (a node's assignments), whose events it takes in batches
// with no goroutine between.
type watchSource struct {
	events <-chan store.WatchEvent
	feed   *store.Feed
}

// watchBatchKeep is the most room for events a node's watch keeps
// between bursts: it is idle most of its life.
const watchBatchKeep = 8

// maxWatchWrite is about the most a watch stream writes at once.
const maxWatchWrite = 256 << 10

// watchBufs holds the buffers of watch streams between bursts: kept by
// each stream, 15,000 nodes' streams held 190 MB of buffers sized for
// their largest burst (those bigger than a burst goes are not kept).
var watchBufs = sync.Pool{New: func() any { return new([]byte) }}

// appendEvent appends ev's JSON. Its object is already JSON, as the
// store gives it (store.Wire): json.Marshal would scan and copy it again.
func appendEvent(b []byte, ev WatchEvent) []byte {
	if ev.Object == nil {
		e, _ := json.Marshal(ev)
		return append(b, e...)
	}
	b = append(b, `{"type":`...)
	b = strconv.AppendQuote(b, ev.Type)
	if ev.Revision != 0 {
		b = append(b, `,"revision":`...)
		b = strconv.AppendInt(b, ev.Revision, 10)
	}
	b = append(b, `,"object":`...)
	b = append(b, ev.Object...)
	return append(b, '}')
}

func toWire(ev store.WatchEvent) WatchEvent {
	b := ev.Raw
	if b == nil {
		b, _ = json.Marshal(ev.Object)
	}
	return WatchEvent{Type: string(ev.Type), Revision: ev.Revision, Object: b}
}

func jsonInt(n int64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// nodeWatches counts the watches each node holds open on this server,
// to hold each to api.MaxNodeWatches.
type nodeWatches struct {
	mu sync.Mutex
	n  map[string]int
}

// take counts one more watch of node's, or refuses it at the limit; the
// caller calls release when the watch ends.
func (c *nodeWatches) take(node string) (release func(), err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[node] >= api.MaxNodeWatches {
		return nil, fmt.Errorf("node %q: %w: it holds %d watches open, the most a node may (api.MaxNodeWatches); close one first",
			node, errdefs.ErrTooManyRequests, c.n[node])
	}
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[node]++
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.n[node]--; c.n[node] <= 0 {
			delete(c.n, node)
		}
	}, nil
}
