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
)

// statusRecorder notes the status a handler answered; it passes flushes
// and hijacks (watch streams, WebSockets, tunnels) through.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(p []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(p)
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
// router matched, the prefix of a mounted handler, or "other".
func (s *Server) observe(r *http.Request, rec *statusRecorder, start time.Time) {
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
	metrics.APIRequestDuration.WithLabelValues(r.Method, route, strconv.Itoa(code)).Observe(time.Since(start).Seconds())
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
