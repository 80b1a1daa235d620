// Package dashboard serves berth's web dashboard under /ui/ on the API's
// listeners: a page of vanilla JS, embedded in the binary, that draws the
// cluster from one server-sent event stream per browser and acts through
// the same API and authorisation as the CLI.
//
//	GET  /ui/                 the page, or the sign-in form without a session
//	POST /ui/login            {token}: sign in with the admin token
//	GET  /ui/login?code=C     sign in with a one-time code (berth dashboard)
//	POST /ui/logout
//	POST /ui/codes            a one-time sign-in code; only callers the
//	                          listener found to be admins (the CLI), never a cookie
//	GET  /ui/stream           the cluster as a snapshot, then batches of changes (SSE)
//	GET  /ui/logs?namespace=NS&name=NAME&tail=N
//	                          an instance's last N lines (200 unless given), then
//	                          its new ones as they come (SSE, through the API's logs route)
//	GET  /ui/metrics?since=MS&top=N&instance=NS/NAME
//	                          CPU and memory samples for the charts (see stats.go)
//	POST /ui/act              {action, kind, namespace, name, replicas}: scale or
//	                          roll back a service, restart a service or instance,
//	                          remove a service or job, cordon, uncordon or drain a node
//	GET  /ui/assets/...       the page's script and style
//
// A session is a random id in an HttpOnly, SameSite=Strict cookie (Secure
// over TLS). Every POST from a signed-in page must come from the page's own
// origin (the Origin header) and carry the session's CSRF token.
package dashboard

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/apiserver"
)

//go:embed assets
var assets embed.FS

// Prefix is where the dashboard is mounted.
const Prefix = api.DashboardPrefix

// CodesPath is where the CLI asks for one-time sign-in codes.
const CodesPath = api.DashboardCodesPath

const (
	cookieName = "berth_session"
	sessionTTL = 12 * time.Hour
	codeTTL    = 5 * time.Minute
)

// Options configure a Handler.
type Options struct {
	// Client reaches the API as an admin; the dashboard reads and acts
	// through it.
	Client *client.Client
	// Token is the admin token that signs in; empty when the API has no
	// TCP listener, and then only one-time codes do.
	Token  string
	Logger *slog.Logger
}

// Handler is the dashboard.
type Handler struct {
	c     *client.Client
	token string
	log   *slog.Logger
	hub   *hub
	mux   *http.ServeMux
	page  *template.Template
	login *template.Template

	mu       sync.Mutex
	sessions map[string]session   // id → session
	codes    map[string]time.Time // one-time code → expiry
}

type session struct {
	csrf    string
	expires time.Time
}

// New returns the dashboard; Run must run for its views to be live.
func New(opts Options) *Handler {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{c: opts.Client, token: opts.Token, log: log, hub: newHub(opts.Client, log),
		sessions: map[string]session{}, codes: map[string]time.Time{}}
	h.page = template.Must(template.ParseFS(assets, "assets/index.html"))
	h.login = template.Must(template.ParseFS(assets, "assets/login.html"))
	sub, _ := fs.Sub(assets, "assets")
	m := http.NewServeMux()
	m.HandleFunc("GET /ui/{$}", h.index)
	m.HandleFunc("GET /ui/login", h.loginCode)
	m.HandleFunc("POST /ui/login", h.loginToken)
	m.HandleFunc("POST /ui/logout", h.logout)
	m.HandleFunc("POST "+CodesPath, h.newCode)
	m.HandleFunc("GET /ui/stream", h.stream)
	m.HandleFunc("POST /ui/act", h.act)
	m.HandleFunc("GET /ui/logs", h.logs)
	m.HandleFunc("GET /ui/metrics", h.metrics)
	m.Handle("GET /ui/assets/", http.StripPrefix("/ui/assets/", http.FileServerFS(sub)))
	m.HandleFunc("GET /ui", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, Prefix, http.StatusFound) })
	h.mux = m
	return h
}

// Run follows the cluster for the views until ctx ends.
func (h *Handler) Run(ctx context.Context) error {
	h.hub.run(ctx)
	return nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
	// "same-origin", not "no-referrer": under no-referrer browsers send
	// "Origin: null" with the page's own POSTs, which the CSRF check refuses.
	w.Header().Set("Referrer-Policy", "same-origin")
	h.mux.ServeHTTP(w, r)
}

func randomID() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// current is the request's session, if its cookie names a live one.
func (h *Handler) current(r *http.Request) (session, bool) {
	ck, err := r.Cookie(cookieName)
	if err != nil {
		return session{}, false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.sessions[ck.Value]
	if !ok || time.Now().After(s.expires) {
		delete(h.sessions, ck.Value)
		return session{}, false
	}
	return s, true
}

func (h *Handler) startSession(w http.ResponseWriter, r *http.Request) {
	id := randomID()
	h.mu.Lock()
	now := time.Now()
	for k, s := range h.sessions {
		if now.After(s.expires) {
			delete(h.sessions, k)
		}
	}
	h.sessions[id] = session{csrf: randomID(), expires: now.Add(sessionTTL)}
	h.mu.Unlock()
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: id, Path: Prefix, HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(sessionTTL / time.Second)})
	http.Redirect(w, r, Prefix, http.StatusSeeOther)
}

// sameOrigin says whether a request comes from a page of this server: its
// Origin header (which browsers send with every POST) names this host.
func sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return u.Scheme == scheme && u.Host == r.Host
}

func (h *Handler) showLogin(w http.ResponseWriter, status int, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = h.login.Execute(w, map[string]any{"Error": msg, "HasToken": h.token != ""})
}

func (h *Handler) index(w http.ResponseWriter, r *http.Request) {
	s, ok := h.current(r)
	if !ok {
		h.showLogin(w, http.StatusUnauthorized, "")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_ = h.page.Execute(w, map[string]any{"CSRF": s.csrf})
}

func (h *Handler) loginToken(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		h.showLogin(w, http.StatusForbidden, "Sign-in refused: the form was not sent from this server's page.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	got := r.PostFormValue("token")
	if h.token == "" || got == "" || subtle.ConstantTimeCompare([]byte(got), []byte(h.token)) != 1 {
		h.showLogin(w, http.StatusUnauthorized, "Wrong token.")
		return
	}
	h.startSession(w, r)
}

func (h *Handler) loginCode(w http.ResponseWriter, r *http.Request) {
	code := r.URL.Query().Get("code")
	h.mu.Lock()
	exp, ok := h.codes[code]
	delete(h.codes, code) // one use, right or wrong
	h.mu.Unlock()
	if code == "" || !ok || time.Now().After(exp) {
		h.showLogin(w, http.StatusUnauthorized, "This sign-in link is unknown, used or expired: run berth dashboard again.")
		return
	}
	h.startSession(w, r)
}

func (h *Handler) logout(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.checkAction(w, r); !ok {
		return
	}
	if ck, err := r.Cookie(cookieName); err == nil {
		h.mu.Lock()
		delete(h.sessions, ck.Value)
		h.mu.Unlock()
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName, Path: Prefix, MaxAge: -1, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// newCode mints a one-time sign-in code for a caller the API listener
// authenticated as an admin (the CLI over the unix socket or with the
// token). A browser's cookie never does.
func (h *Handler) newCode(w http.ResponseWriter, r *http.Request) {
	id, ok := apiserver.IdentityFrom(r.Context())
	if !ok || !id.Admin {
		writeError(w, fmt.Errorf("%w: sign-in codes are for admins of the API", errdefs.ErrUnauthorized))
		return
	}
	code := randomID()
	h.mu.Lock()
	now := time.Now()
	for c, exp := range h.codes {
		if now.After(exp) {
			delete(h.codes, c)
		}
	}
	h.codes[code] = now.Add(codeTTL)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"code": code, "path": Prefix + "login?code=" + code})
}

// checkAction admits a POST of a signed-in page: a live session, the
// page's own origin and the session's CSRF token.
func (h *Handler) checkAction(w http.ResponseWriter, r *http.Request) (session, bool) {
	s, ok := h.current(r)
	switch {
	case !ok:
		writeError(w, fmt.Errorf("%w: sign in first", errdefs.ErrUnauthorized))
	case !sameOrigin(r):
		writeError(w, fmt.Errorf("%w: request from another origin (%q)", errdefs.ErrForbidden, r.Header.Get("Origin")))
	case subtle.ConstantTimeCompare([]byte(r.Header.Get("X-CSRF-Token")), []byte(s.csrf)) != 1:
		writeError(w, fmt.Errorf("%w: missing or wrong CSRF token", errdefs.ErrForbidden))
	default:
		return s, true
	}
	return session{}, false
}

// action is what the page asks for.
type action struct {
	Action    string `json:"action"` // scale, restart, remove, cordon, uncordon, drain
	Kind      string `json:"kind"`   // service, job, instance, node
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Replicas  *int   `json:"replicas,omitempty"`
}

func (h *Handler) act(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.checkAction(w, r); !ok {
		return
	}
	var a action
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		writeError(w, fmt.Errorf("%w: action body: %w", errdefs.ErrInvalidArgument, err))
		return
	}
	if a.Namespace == "" {
		a.Namespace = "default"
	}
	ctx := r.Context()
	var err error
	switch a.Action + " " + a.Kind {
	case "scale service":
		if a.Replicas == nil {
			err = fmt.Errorf("%w: replicas: needed to scale", errdefs.ErrInvalidArgument)
			break
		}
		_, err = h.c.Services().Scale(ctx, a.Namespace, a.Name, *a.Replicas)
	case "restart service":
		_, err = h.c.Services().Restart(ctx, a.Namespace, a.Name)
	case "restart instance":
		_, err = h.c.Instances().Restart(ctx, a.Namespace, a.Name)
	case "rollback service":
		err = h.rollback(ctx, a.Namespace, a.Name)
	case "remove service":
		err = h.c.Delete(ctx, api.KindService, a.Namespace, a.Name, 0)
	case "remove job":
		err = h.c.Delete(ctx, api.KindJob, a.Namespace, a.Name, 0)
	case "cordon node":
		_, err = h.c.Nodes().Cordon(ctx, a.Name)
	case "uncordon node":
		_, err = h.c.Nodes().Uncordon(ctx, a.Name)
	case "drain node":
		_, err = h.c.Nodes().Drain(ctx, a.Name)
	default:
		err = fmt.Errorf("%w: action %q on a %q: want scale|rollback service, restart service|instance, remove service|job, cordon|uncordon|drain node",
			errdefs.ErrInvalidArgument, a.Action, a.Kind)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}` + "\n"))
}

// rollback puts a service's previous template back, as berth rollout
// undo does: applied at the revision read, so a change meanwhile is not
// overwritten, and read again on a conflict.
func (h *Handler) rollback(ctx context.Context, ns, name string) error {
	for try := 0; ; try++ {
		svc, err := h.c.Services().Get(ctx, ns, name)
		if err != nil {
			return err
		}
		target, err := svc.RollbackTarget(0)
		if err != nil {
			return err
		}
		svc.Spec.Template = target.Template
		_, err = h.c.Services().Apply(ctx, svc)
		if errdefs.IsConflict(err) && try < 5 {
			continue
		}
		return err
	}
}

// stream sends the browser a snapshot and then the hub's batches, as
// server-sent events, until the browser goes.
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.current(r); !ok {
		writeError(w, fmt.Errorf("%w: sign in first", errdefs.ErrUnauthorized))
		return
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, fmt.Errorf("%w: streaming unsupported", errdefs.ErrUnavailable))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	// The snapshot of a large cluster is repetitive JSON: gzip takes a
	// thousand instances from ~300 KB to a tenth of that. Each event is
	// flushed through the compressor, so nothing waits in it.
	var out io.Writer = w
	flush := fl.Flush
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		zw := gzip.NewWriter(w)
		defer zw.Close()
		out = zw
		flush = func() { _ = zw.Flush(); fl.Flush() }
	}
	snap, ch := h.hub.subscribe()
	defer h.hub.unsubscribe(ch)
	fmt.Fprintf(out, "event: snapshot\ndata: %s\n\n", snap)
	flush()
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case b, ok := <-ch:
			if !ok {
				return
			}
			fmt.Fprintf(out, "event: batch\ndata: %s\n\n", b)
			flush()
		case <-ping.C:
			fmt.Fprint(out, ": ping\n\n")
			flush()
		}
	}
}

// maxLogTail bounds the lines a log view starts with.
const maxLogTail = 5000

// logs follows an instance's output through the API's logs route (the
// node's agent serves it) and sends it as server-sent events: "line" for
// each line, then "end" when the container is gone, or "failed".
func (h *Handler) logs(w http.ResponseWriter, r *http.Request) {
	if _, ok := h.current(r); !ok {
		writeError(w, fmt.Errorf("%w: sign in first", errdefs.ErrUnauthorized))
		return
	}
	q := r.URL.Query()
	ns, name := cmp.Or(q.Get("namespace"), "default"), q.Get("name")
	if name == "" {
		writeError(w, fmt.Errorf("%w: name: the instance whose logs to show is needed", errdefs.ErrInvalidArgument))
		return
	}
	tail := 200
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxLogTail {
			writeError(w, fmt.Errorf("%w: tail %q: want a count of lines from 1 to %d", errdefs.ErrInvalidArgument, v, maxLogTail))
			return
		}
		tail = n
	}
	fl, ok := w.(http.Flusher)
	if !ok {
		writeError(w, fmt.Errorf("%w: streaming unsupported", errdefs.ErrUnavailable))
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	fl.Flush()
	sse := &sseLines{w: w, flush: fl.Flush}
	err := h.c.InstanceLogs(r.Context(), ns, name, client.LogOptions{Follow: true, Tail: tail},
		sse.stream("out"), sse.stream("err"))
	if r.Context().Err() != nil {
		return
	}
	sse.mu.Lock()
	defer sse.mu.Unlock()
	if err != nil {
		b, _ := json.Marshal(map[string]string{"error": err.Error()})
		fmt.Fprintf(w, "event: failed\ndata: %s\n\n", b)
	} else {
		fmt.Fprint(w, "event: end\ndata: {}\n\n")
	}
	fl.Flush()
}

// maxLogLine is where a line without an end is cut into several.
const maxLogLine = 16 << 10

// sseLines turns an instance's two output streams into one stream of
// "line" events, a line at a time.
type sseLines struct {
	mu    sync.Mutex
	w     io.Writer
	flush func()
}

func (s *sseLines) stream(name string) io.Writer { return &lineWriter{s: s, stream: name} }

type lineWriter struct {
	s      *sseLines
	stream string
	part   []byte
}

func (l *lineWriter) Write(p []byte) (int, error) {
	l.s.mu.Lock()
	defer l.s.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		var line []byte
		if i := bytes.IndexByte(p, '\n'); i >= 0 {
			line, p = append(l.part, p[:i]...), p[i+1:]
		} else {
			l.part, p = append(l.part, p...), nil
			if len(l.part) < maxLogLine {
				break
			}
			line = l.part
		}
		l.part = nil
		b, _ := json.Marshal(map[string]string{"s": l.stream, "t": strings.ToValidUTF8(string(line), "\uFFFD")})
		if _, err := fmt.Fprintf(l.s.w, "event: line\ndata: %s\n\n", b); err != nil {
			return 0, err
		}
	}
	l.s.flush()
	return n, nil
}

func writeError(w http.ResponseWriter, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(errdefs.HTTPStatus(err))
	_ = json.NewEncoder(w).Encode(map[string]string{"error": strings.TrimSpace(err.Error())})
}
