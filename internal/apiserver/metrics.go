package apiserver

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/store"
)

// statusRecorder notes the status a handler answered; it passes flushes
// and hijacks (watch streams, WebSockets, tunnels) through.
type statusRecorder struct {
	http.ResponseWriter
	code int
	// header, when set, adds to the response's header as it is written.
	header func(http.Header)
	// pieces, on HTTP/2, has the answer written in pieces of at most
	// answerPiece bytes.
	pieces bool
}

// answerPiece is the most an answer over HTTP/2 hands the response writer
// at once: it buffers 4 KiB and sends what fits in its buffer as frames
// of at most 4 KiB, but a larger write bypasses it and goes out in frames
// as large as the client allows, and the connection's framer keeps a
// buffer as big as the largest frame it has written, for the
// connection's life: a node's, as long as the node, with a watch's
// bursts, its assignments' lists and its images' layers on it.
const answerPiece = 4 << 10

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
		if s.header != nil {
			s.header(s.ResponseWriter.Header())
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.WriteHeader(http.StatusOK)
	}
	if !s.pieces {
		return s.ResponseWriter.Write(p)
	}
	n := 0
	for len(p) > 0 {
		k := min(len(p), answerPiece)
		m, err := s.ResponseWriter.Write(p[:k])
		n += m
		if err != nil {
			return n, err
		}
		p = p[k:]
	}
	return n, nil
}

func (s *statusRecorder) Flush() {
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if s.code == 0 {
		s.code = http.StatusSwitchingProtocols
	}
	return http.NewResponseController(s.ResponseWriter).Hijack()
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// observe records a request's latency under its route: the pattern the
// router matched, the prefix of a mounted handler, or "other"; and a
// write's, timed by tm, by phase (see observePhases).
func (s *Server) observe(r *http.Request, rec *statusRecorder, start time.Time, tm *store.Timing) {
	route := r.Pattern
	if route != "" {
		// "GET /v1/..." → "/v1/...": the method is a label of its own.
		if _, p, ok := strings.Cut(route, " "); ok {
			route = p
		}
	} else {
		route = "other"
		for _, m := range s.mounts {
			if strings.HasPrefix(r.URL.Path, m.prefix) || r.URL.Path == strings.TrimSuffix(m.prefix, "/") {
				route = m.prefix
				break
			}
		}
	}
	code := rec.code
	if code == 0 {
		code = http.StatusOK
	}
	took := time.Since(start)
	metrics.APIRequestDuration.WithLabelValues(r.Method, route, strconv.Itoa(code)).Observe(took.Seconds())
	if tm != nil {
		s.observePhases(r, route, code, took, tm)
	}
}

// serverTiming sets a write's Server-Timing header (the W3C's), in
// milliseconds, as its answer is written: its time in etcd reads, in the
// bulk lane, in etcd write transactions, the rest in the server
// ("handler": decoding, checks, waiting for a CPU), and "total" since the
// request reached its handler; "ahead" is the most write transactions
// the store had in etcd when one of its writes was sent, "lane" of them
// the bulk lane's; "writes" how many write transactions it sent (more
// than one: a conflict tried again); "start" is when the handler started, in microseconds
// since the Unix epoch. A client that times its writes tells from it what
// the slowest waited on, and, on the same host (one clock), how long the
// request took to reach the handler and the answer to come back (the
// network, the connection's goroutines waiting for a CPU, the client's
// own).
func serverTiming(h http.Header, start time.Time, tm *store.Timing) {
	took := time.Since(start)
	read, lane, write := tm.Read(), tm.Lane(), tm.Write()
	ms := func(d time.Duration) string { return strconv.FormatFloat(d.Seconds()*1000, 'f', 1, 64) }
	h.Set("Server-Timing", fmt.Sprintf("read;dur=%s, lane;dur=%s, write;dur=%s, handler;dur=%s, total;dur=%s, ahead;desc=\"%d lane %d\", writes;desc=%d, start;desc=%d",
		ms(read), ms(lane), ms(write), ms(max(0, took-read-lane-write)), ms(took), tm.Ahead(), tm.LaneAhead(), tm.Writes(), start.UnixMicro()))
}

// isWrite says whether a request of method changes something: those are
// what the API's latency goal (a mutating call's p99) is about.
func isWrite(method string) bool {
	return method == http.MethodPut || method == http.MethodPost || method == http.MethodDelete || method == http.MethodPatch
}

// DefaultSlowWrite is the time over which an API write by anyone but a
// node is logged with its phases: the mutating API's latency goal, 1 s
// at the 99th percentile. Nodes' writes (status reports, heartbeats)
// wait behind each other by design, and no one waits on them.
const DefaultSlowWrite = time.Second

// callerOf is the caller label of a request from id: admin, node or
// other (the metrics token, a joining node, a caller refused).
func callerOf(id Identity) string {
	switch {
	case id.Node != "":
		return "node"
	case id.Admin:
		return "admin"
	}
	return "other"
}

// observePhases records where a write's time went: in etcd reads, in
// the bulk lane, in etcd write transactions, and the rest ("server":
// decoding, checks, encoding, and waiting for a CPU). A write by anyone
// but a node that took over the slow-write threshold is logged with the
// same figures, so that the slowest ones can be told apart.
func (s *Server) observePhases(r *http.Request, route string, code int, took time.Duration, tm *store.Timing) {
	id, _ := IdentityFrom(r.Context())
	caller := callerOf(id)
	read, lane, write := tm.Read(), tm.Lane(), tm.Write()
	rest := max(0, took-read-lane-write)
	for _, p := range []struct {
		phase string
		d     time.Duration
	}{{"read", read}, {"lane", lane}, {"write", write}, {"server", rest}} {
		metrics.APIWritePhaseDuration.WithLabelValues(caller, p.phase).Observe(p.d.Seconds())
	}
	if caller != "node" && took >= s.slowWrite {
		s.log.Warn("slow write", "method", r.Method, "route", route, "path", r.URL.Path, "code", code, "caller", caller,
			"took", took.Round(time.Microsecond), "read", read.Round(time.Microsecond), "lane", lane.Round(time.Microsecond),
			"write", write.Round(time.Microsecond), "server", rest.Round(time.Microsecond))
	}
}

// AdminOnly serves h (a handler to Mount, such as the profiles) to admins
// alone: nodes and the metrics token are forbidden, others unauthorized.
func AdminOnly(h http.Handler) http.Handler {
	return only(h, func(id Identity) bool { return id.Admin }, "the admin token")
}

// Scrapers serves h (a handler to Mount, such as /metrics) to admins and
// to the metrics token: nodes are forbidden, others unauthorized.
func Scrapers(h http.Handler) http.Handler {
	return only(h, func(id Identity) bool { return id.Admin || id.Scraper }, "the admin or the metrics token")
}

func only(h http.Handler, allowed func(Identity) bool, needs string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := IdentityFrom(r.Context())
		switch {
		case ok && allowed(id):
			h.ServeHTTP(w, r)
		case ok && (id.Node != "" || id.Scraper):
			writeError(w, fmt.Errorf("%s: %w: %s needs %s", id.Name, errdefs.ErrForbidden, r.URL.Path, needs))
		default:
			writeError(w, fmt.Errorf("%w: %s needs %s", errdefs.ErrUnauthorized, r.URL.Path, needs))
		}
	})
}
