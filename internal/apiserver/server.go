// Package apiserver serves berth's REST/JSON API under /v1 from the store.
//
//	GET    /healthz
//	GET    /v1/version                             the build the server runs
//	GET    /v1/{kind}                              list (all namespaces, or ?namespace=)
//	GET    /v1/namespaces/{ns}/{kind}              list in a namespace
//	       ...?watch=1&revision=N                  changes after revision N, as NDJSON
//	                                               (SSE with Accept: text/event-stream)
//	GET    /v1/namespaces/{ns}/{kind}/{name}       get
//	PUT    /v1/namespaces/{ns}/{kind}/{name}       apply: create or update the spec (a service's
//	                                               or job's image tag is pinned to its digest,
//	                                               see ImagePinner); a service or job whose spec
//	                                               and labels are as stored is not written
//	       ...?dryRun=1                            check it and answer what would be stored,
//	                                               storing nothing (header Berth-Apply: dry-run)
//	PUT    /v1/namespaces/{ns}/{kind}/{name}/status
//	DELETE /v1/namespaces/{ns}/{kind}/{name}
//	POST   /v1/namespaces/{ns}/services/{name}/scale   {"replicas": N}
//	POST   /v1/namespaces/{ns}/{kind}/{name}/restart   services, jobs, instances
//	POST   /v1/namespaces/{ns}/instances/{name}/bind   {"node": "n1", "cpuset": [2, 3]}
//	GET    /v1/namespaces/{ns}/instances/{name}/data  the files and env its configs and secrets
//	                                               give it (its node, or admins)
//	POST   /v1/namespaces/{ns}/cronjobs/{name}/trigger  start a run now: its job
//	POST   /v1/namespaces/{ns}/events              record an event
//	GET|PUT|DELETE /v1/nodes/{name}, PUT /v1/nodes/{name}/status
//	GET    /v1/nodes/{name}/assignments            instances bound to the node (?watch=1)
//	PUT    /v1/nodes/{name}/instancestatus         a batch of the node's instances' status (api.StatusBatch)
//	POST   /v1/nodes/{name}/cordon|uncordon|drain  see nodeactions.go
//	POST   /v1/nodes/{name}/certificate            {"csr"}: the node's renewed certificate (the node itself)
//	POST   /v1/nodes/{name}/revoke                 refuse the node's certificates (admins; DELETE does too)
//	POST   /v1/join                                {"token", "node", "csr"}: a node's certificate
//	GET|POST /v1/tokens, DELETE /v1/tokens/{id}    join tokens (admins only)
//	GET|PUT /v1/registry                           the cluster's registry settings (mirrors, CAs,
//	                                               insecure registries, direct pulls; nodes read)
//	GET|PUT /v1/namespaces/{ns}/instances/{name}/logs|attach|exec|cp|portforward|stats
//	                                               proxied to the node's agent, see remote.go
//	GET    /v1/tunnel/{node}                       an agent's tunnel (remote.go)
//
// Writes may carry a revision precondition, as an If-Match header or as
// metadata.revision in the body; a stale one gets 409. Invalid input gets
// 422 (400 when the body is not JSON at all) with the field and reason; a
// body over the size limit gets 413. Errors are JSON:
//
//	{"error": "...", "code": "InvalidArgument", "field": "spec.replicas", "reason": "...", "fields": [...]}
//
// The server listens on a unix socket only root can use, and on TCP only
// with TLS and a bearer token. With a cluster CA, TCP callers may instead
// present a node certificate (see NodeAuthorizer for what nodes may do),
// and callers with neither may join.
package apiserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
	"github.com/berth-dev/berth/internal/store"
	"github.com/berth-dev/berth/internal/version"
)

// DefaultMaxBodyBytes bounds request bodies unless Config says otherwise.
const DefaultMaxBodyBytes = 1 << 20

// Config configures a Server.
type Config struct {
	Store *store.Store
	// MaxBodyBytes bounds request bodies; DefaultMaxBodyBytes when zero.
	MaxBodyBytes int64
	Logger       *slog.Logger
	// Authorize, when set, is asked about every request after its caller
	// is authenticated; an error denies it (wrap errdefs.ErrForbidden).
	// NodeAuthorizer when nil: admins do anything, nodes what agents need.
	Authorize func(ctx context.Context, id Identity, r *http.Request) error
	// CA, when set, signs the certificates of nodes that join
	// (POST /v1/join) and vouches for them on TLS listeners.
	CA *pki.CA
	// NodeCertTTL is how long the node certificates it signs last;
	// DefaultNodeCertTTL when zero.
	NodeCertTTL time.Duration
	// NodeTTL is how long a node's heartbeat lease lasts; DefaultNodeTTL when zero.
	NodeTTL time.Duration
	// WatchHeartbeat is how often a quiet watch stream gets a heartbeat
	// line; DefaultWatchHeartbeat when zero.
	WatchHeartbeat time.Duration
	// AllowedHostPaths, when set, are the only host directories (and
	// what lies under them) a hostPath volume may mount.
	AllowedHostPaths []string
	// SealKey seals secrets at rest; without it, secrets are refused.
	SealKey *seal.Key
	// MetricsToken, when set, is a second bearer token on TLS listeners
	// that may scrape metrics (see ScrapeRoute) and nothing else.
	MetricsToken string
	// SlowWrite is the time over which an API write by anyone but a node
	// is logged, with where its time went; DefaultSlowWrite when zero.
	SlowWrite time.Duration
}

// DefaultNodeCertTTL is how long a node certificate lasts: a week, which
// its agent renews before it ends.
const DefaultNodeCertTTL = 7 * 24 * time.Hour

// DefaultNodeTTL is how long a node stays alive after its last heartbeat.
const DefaultNodeTTL = api.NodeTTL

// DefaultWatchHeartbeat is the heartbeat interval of quiet watch streams.
const DefaultWatchHeartbeat = 15 * time.Second

// Server is the API's HTTP handler and listeners.
type Server struct {
	store     *store.Store
	maxBody   int64
	log       *slog.Logger
	authorize func(ctx context.Context, id Identity, r *http.Request) error
	ca        *pki.CA
	// creds follows which node certificates work (nil without a CA).
	creds       *store.NodeCredentialCache
	credsRun    credsRunner
	nodeCertTTL time.Duration
	heartbeat   time.Duration
	nodeTTL     time.Duration
	mux         *routeMux
	mounts      []mount        // see Mount
	pinner      ImagePinner    // the first mounted handler that is one
	tunnels     tunnels        // the nodes' agents, see remote.go
	migrating   imagesInFlight // images live migrations restore, by target node
	ready       readyNodes     // nodes seen stored Ready, see heartbeatOnly
	watches     nodeWatches    // each node's open watches, held to api.MaxNodeWatches

	// forwards are port-forwards, as their audit events count them (audit.go).
	forwards forwardSessions

	allowedHostPaths []string
	sealKey          *seal.Key
	metricsToken     string
	slowWrite        time.Duration
}

// New returns a Server on cfg.Store.
func New(cfg Config) *Server {
	s := &Server{store: cfg.Store, maxBody: cfg.MaxBodyBytes, log: cfg.Logger, authorize: cfg.Authorize, ca: cfg.CA,
		allowedHostPaths: cfg.AllowedHostPaths, sealKey: cfg.SealKey, metricsToken: cfg.MetricsToken}
	if s.authorize == nil {
		s.authorize = NodeAuthorizer(cfg.Store)
	}
	if s.maxBody <= 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	s.heartbeat = cfg.WatchHeartbeat
	if s.heartbeat <= 0 {
		s.heartbeat = DefaultWatchHeartbeat
	}
	s.nodeCertTTL = cfg.NodeCertTTL
	if s.nodeCertTTL <= 0 {
		s.nodeCertTTL = DefaultNodeCertTTL
	}
	if s.ca != nil && s.store != nil {
		s.creds = s.store.NewNodeCredentialCache()
	}
	s.nodeTTL = cfg.NodeTTL
	if s.nodeTTL <= 0 {
		s.nodeTTL = DefaultNodeTTL
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.slowWrite = cfg.SlowWrite
	if s.slowWrite <= 0 {
		s.slowWrite = DefaultSlowWrite
	}
	m := &routeMux{ServeMux: http.NewServeMux()}
	m.HandleFunc("GET /healthz", s.healthz)
	m.HandleFunc("GET /v1/version", s.version)
	m.HandleFunc("GET /v1/{kind}", s.list)
	m.HandleFunc("GET /v1/namespaces/{ns}/{kind}", s.list)
	m.HandleFunc("GET /v1/namespaces/{ns}/{kind}/{name}", s.get)
	m.HandleFunc("PUT /v1/namespaces/{ns}/{kind}/{name}", s.apply)
	m.HandleFunc("PUT /v1/namespaces/{ns}/{kind}/{name}/status", s.putStatus)
	m.HandleFunc("DELETE /v1/namespaces/{ns}/{kind}/{name}", s.delete)
	m.HandleFunc("POST /v1/namespaces/{ns}/services/{name}/scale", s.scale)
	m.HandleFunc("POST /v1/namespaces/{ns}/{kind}/{name}/restart", s.restart)
	m.HandleFunc("POST /v1/namespaces/{ns}/instances/{name}/bind", s.bind)
	m.HandleFunc("GET /v1/namespaces/{ns}/instances/{name}/data", s.instanceData)
	m.HandleFunc("POST /v1/namespaces/{ns}/cronjobs/{name}/trigger", s.triggerCronJob)
	m.HandleFunc("POST /v1/namespaces/{ns}/events", s.recordEvent)
	m.HandleFunc("GET /v1/nodes/{name}", s.get)
	m.HandleFunc("PUT /v1/nodes/{name}", s.apply)
	m.HandleFunc("PUT /v1/nodes/{name}/status", s.putStatus)
	m.HandleFunc("DELETE /v1/nodes/{name}", s.delete)
	m.HandleFunc("GET /v1/nodes/{name}/assignments", s.assignments)
	m.HandleFunc("PUT /v1/nodes/{name}/instancestatus", s.putStatusBatch)
	m.HandleFunc("POST /v1/nodes/{name}/cordon", s.cordonNode)
	m.HandleFunc("POST /v1/nodes/{name}/uncordon", s.uncordonNode)
	m.HandleFunc("POST /v1/nodes/{name}/drain", s.drainNode)
	m.HandleFunc("POST /v1/nodes/{name}/certificate", s.renewCertificate)
	m.HandleFunc("POST /v1/nodes/{name}/revoke", s.revokeNode)
	m.HandleFunc("POST /v1/join", s.join)
	m.HandleFunc("GET /v1/registry", s.getRegistrySettings)
	m.HandleFunc("PUT /v1/registry", s.putRegistrySettings)
	m.HandleFunc("GET /v1/tokens", s.listTokens)
	m.HandleFunc("POST /v1/tokens", s.createToken)
	m.HandleFunc("DELETE /v1/tokens/{id}", s.revokeToken)
	s.routeRemote(m)
	s.routeProfiling()
	s.mux = m
	return s
}

// routeMux is the API's router, which also remembers its patterns (see
// Routes).
type routeMux struct {
	*http.ServeMux
	patterns []string
}

func (m *routeMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	m.patterns = append(m.patterns, pattern)
	m.ServeMux.HandleFunc(pattern, h)
}

// Routes lists the API's routes as its router knows them ("GET
// /v1/{kind}"), then the prefixes mounted next to it ("/v2/"): what an
// authorisation test must cover, each one.
func (s *Server) Routes() []string {
	out := slices.Clone(s.mux.patterns)
	for _, m := range s.mounts {
		out = append(out, m.prefix)
	}
	return out
}

// RouteOf is the entry of Routes that serves a request for method and
// path, "" when none does.
func (s *Server) RouteOf(method, path string) string {
	if m := s.mountOf(path); m != nil {
		return m.prefix
	}
	r, err := http.NewRequest(method, path, nil)
	if err != nil {
		return ""
	}
	_, pattern := s.mux.Handler(r)
	return pattern
}

// Handler serves the API to callers already authenticated: each request's
// context must carry an Identity (see WithIdentity), as the listeners'
// authenticators arrange. Requests without one are refused.
func (s *Server) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := IdentityFrom(r.Context())
		if !ok {
			writeError(w, fmt.Errorf("%w: no identity", errdefs.ErrUnauthorized))
			return
		}
		// The metrics token reads metrics and nothing else, mounted
		// handlers (the dashboard's sign-in) included.
		if id.Scraper && !ScrapeRoute(r) {
			writeError(w, fmt.Errorf("%w: the metrics token may only GET /metrics and /v1/nodes/NAME/metrics, not %s %s", errdefs.ErrForbidden, r.Method, r.URL.Path))
			return
		}
		// A node's certificate works only while the store lists it, for
		// every route, mounted ones too.
		if id.Node != "" {
			if err := s.checkNodeCert(r, id); err != nil {
				writeError(w, err)
				return
			}
			// Its writes (heartbeats that write the node's lease key,
			// status, events) are background work that waits in the
			// store's bulk lane, not ahead of an API client's in etcd:
			// at scale 0 -> N, 200 heartbeats' key writes were queued in
			// etcd ahead of a probe's one-object apply.
			r = r.WithContext(store.Bulk(r.Context()))
		}
		if m := s.mounted(r.URL.Path); m != nil {
			m.ServeHTTP(w, r)
			return
		}
		if s.authorize != nil && r.URL.Path != "/healthz" {
			if err := s.authorize(r.Context(), id, r); err != nil {
				writeError(w, err)
				return
			}
		}
		if id.Node != "" && isWatch(r.URL.Query().Get("watch")) {
			release, err := s.watches.take(id.Node)
			if err != nil {
				writeError(w, err)
				return
			}
			defer release()
		}
		s.mux.ServeHTTP(w, r)
	})
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.store.Revision(ctx); err != nil {
		writeError(w, fmt.Errorf("store: %w: %w", errdefs.ErrUnavailable, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// version answers which build of berth this server runs.
func (s *Server) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, version.Get())
}

// target is the object a request names.
type target struct {
	kind      api.Kind
	namespace string
	name      string
}

func (t target) ref() string { return api.Ref(t.kind, t.namespace, t.name) }

// parseTarget reads kind, namespace and name from the path. Node routes
// have no {kind}.
func parseTarget(r *http.Request) (target, error) {
	t := target{namespace: r.PathValue("ns"), name: r.PathValue("name")}
	plural := r.PathValue("kind")
	if seg := strings.Split(r.URL.Path, "/"); plural == "" && len(seg) > 4 && seg[2] == "namespaces" {
		plural = seg[4] // a route for one kind: .../services/{name}/scale
	}
	switch {
	case plural == "" && strings.HasPrefix(r.URL.Path, "/v1/nodes/"):
		t.kind = api.KindNode
	default:
		k, ok := api.KindFromPlural(plural)
		if !ok {
			return t, fmt.Errorf("kind %q: %w: use one of nodes, services, jobs, instances, events, volumes, configs, secrets, cronjobs", plural, errdefs.ErrNotFound)
		}
		t.kind = k
	}
	if t.kind == api.KindNode && t.namespace != "" {
		return t, fmt.Errorf("nodes: %w: nodes are not in a namespace, use /v1/nodes/{name}", errdefs.ErrNotFound)
	}
	if t.kind.Namespaced() && r.URL.Path != "/v1/"+plural && t.namespace == "" {
		t.namespace = api.DefaultNamespace
	}
	if t.namespace != "" {
		if err := api.ValidateName(t.namespace); err != nil {
			return t, &api.ValidationError{Fields: []api.FieldError{{Field: "metadata.namespace", Reason: err.Error()}}}
		}
	}
	// Names become etcd keys: only DNS labels, so that no name reaches
	// into another object's key.
	if t.name != "" {
		if err := api.ValidateName(t.name); err != nil {
			return t, &api.ValidationError{Fields: []api.FieldError{{Field: "metadata.name", Reason: err.Error()}}}
		}
	}
	return t, nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	obj, _ := api.New(t.kind)
	if err := s.store.GetInto(r.Context(), obj, t.namespace, t.name); err != nil {
		writeError(w, err)
		return
	}
	redact(obj)
	s.freshen(obj)
	writeJSON(w, http.StatusOK, obj)
}

// List is the body of a list response.
type List struct {
	// Revision is the store revision the list was read at; watch with it
	// to get every later change.
	Revision int64             `json:"revision"`
	Items    []json.RawMessage `json:"items"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	if t.namespace == "" && q.Get("namespace") != "" {
		t.namespace = q.Get("namespace")
		if err := api.ValidateName(t.namespace); err != nil {
			writeError(w, &api.ValidationError{Fields: []api.FieldError{{Field: "namespace", Reason: err.Error()}}})
			return
		}
	}
	if isWatch(q.Get("watch")) {
		if t.kind == api.KindSecret {
			writeError(w, fmt.Errorf("secrets: %w: secrets are not watched, list them", errdefs.ErrInvalidArgument))
			return
		}
		after, err := watchRevision(r)
		if err != nil {
			writeError(w, err)
			return
		}
		from := startAt(after)
		if from == 0 {
			// From now is from this request: the etcd watch is made on
			// its own goroutine, after the answer's headers may have gone,
			// and a change the client made once it had them could come
			// before the watch and never be sent.
			rev, err := s.store.Revision(r.Context())
			if err != nil {
				writeError(w, err)
				return
			}
			from = rev + 1
		}
		s.serveWatch(w, r, watchSource{events: s.store.WatchRaw(r.Context(), t.kind, t.namespace, from)})
		return
	}
	out := List{Items: []json.RawMessage{}}
	out.Revision, err = s.store.ListFunc(r.Context(), t.kind, t.namespace, func(value []byte, modRev int64) error {
		if t.kind != api.KindSecret {
			// Nothing to redact: the stored JSON, as the API gives it.
			b, err := store.Wire(t.kind, value, modRev)
			if err == nil && t.kind == api.KindNode {
				b = s.freshenWire(b)
			}
			out.Items = append(out.Items, b)
			return err
		}
		obj, _ := api.New(t.kind)
		if err := json.Unmarshal(value, obj); err != nil {
			return err
		}
		obj.GetMetadata().Revision = modRev
		obj.GetMetadata().Kind = t.kind
		redact(obj)
		b, err := json.Marshal(obj)
		out.Items = append(out.Items, b)
		return err
	})
	if err != nil {
		writeError(w, err)
		return
	}
	out.write(w)
}

// write sends the list as writeJSON would, without scanning each item's
// JSON again: a list of 300,000 instances is 150 MB of them.
func (l List) write(w http.ResponseWriter) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	// The buffer fits a small list: each node lists its assignments as
	// it joins, mostly none, and 64 KiB apiece was a gigabyte to collect
	// while 15,000 nodes joined.
	size := 64
	for _, it := range l.Items {
		if size += len(it) + 1; size >= 64<<10 {
			break
		}
	}
	b := make([]byte, 0, min(size, 64<<10))
	b = append(b, `{"revision":`...)
	b = strconv.AppendInt(b, l.Revision, 10)
	b = append(b, `,"items":[`...)
	for i, it := range l.Items {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, it...)
		if len(b) >= 64<<10 {
			if _, err := w.Write(b); err != nil {
				return
			}
			b = b[:0]
		}
	}
	b = append(b, "]}\n"...)
	_, _ = w.Write(b)
}

func isWatch(v string) bool { return v == "1" || v == "true" }

// startAt is the store revision a watch after revision after starts at;
// 0 (now) when the client gave none.
func startAt(after int64) int64 {
	if after == 0 {
		return 0
	}
	return after + 1
}

// watchRevision is the revision a watch starts after: ?revision=, or the
// Last-Event-ID of a reconnecting EventSource; 0 means from now.
func watchRevision(r *http.Request) (int64, error) {
	v := r.URL.Query().Get("revision")
	if v == "" {
		v = r.Header.Get("Last-Event-ID")
	}
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, &api.ValidationError{Fields: []api.FieldError{{Field: "revision", Reason: fmt.Sprintf("%q is not a revision", v)}}}
	}
	return n, nil
}

// readBody reads a size-limited body.
func (s *Server) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	limit := s.maxBody
	if k := r.PathValue("kind"); k == "configs" || k == "secrets" {
		// Data up to MaxDataBytes arrives in base64, a third larger.
		limit = max(limit, 2*api.MaxDataBytes)
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, fmt.Errorf("body: %w: over %d bytes", errdefs.ErrTooLarge, limit)
	}
	if err != nil {
		return nil, fmt.Errorf("body: %w", err)
	}
	if !json.Valid(b) {
		return nil, errMalformed
	}
	return b, nil
}

var errMalformed = fmt.Errorf("body: %w: not JSON", errdefs.ErrInvalidArgument)

// decodeObject reads the body as an object of t's kind, naming it from the
// path when the body leaves it out.
func (s *Server) decodeObject(w http.ResponseWriter, r *http.Request, t target) (api.Object, error) {
	b, err := s.readBody(w, r)
	if err != nil {
		return nil, err
	}
	obj, _ := api.New(t.kind)
	if err := api.DecodeStrict(b, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", t.ref(), err)
	}
	m := obj.GetMetadata()
	var fe []api.FieldError
	if m.Name == "" {
		m.Name = t.name
	} else if m.Name != t.name {
		fe = append(fe, api.FieldError{Field: "metadata.name", Reason: fmt.Sprintf("%q differs from %q in the path", m.Name, t.name)})
	}
	if t.kind.Namespaced() {
		if m.Namespace == "" {
			m.Namespace = t.namespace
		} else if m.Namespace != t.namespace {
			fe = append(fe, api.FieldError{Field: "metadata.namespace", Reason: fmt.Sprintf("%q differs from %q in the path", m.Namespace, t.namespace)})
		}
	}
	if m.Kind != "" && m.Kind != t.kind {
		fe = append(fe, api.FieldError{Field: "metadata.kind", Reason: fmt.Sprintf("%q is not %s", m.Kind, t.kind)})
	}
	if fe != nil {
		return nil, fmt.Errorf("%s: %w", t.ref(), &api.ValidationError{Fields: fe})
	}
	api.Default(obj)
	return obj, nil
}

// precondition is the revision a write names: If-Match, or else the
// body's metadata.revision.
func precondition(r *http.Request, obj api.Object) (int64, error) {
	if h := r.Header.Get("If-Match"); h != "" {
		n, err := strconv.ParseInt(strings.Trim(h, `"`), 10, 64)
		if err != nil || n <= 0 {
			return 0, &api.ValidationError{Fields: []api.FieldError{{Field: "If-Match", Reason: fmt.Sprintf("%q is not a revision", h)}}}
		}
		return n, nil
	}
	if obj != nil {
		return obj.GetMetadata().Revision, nil
	}
	return 0, nil
}

// apply stores an object as a client applies it.
// Long because an apply's checks run in one order (decode, validate, admit,
// pin, compare, store) and each answers the request itself when it fails.
func (s *Server) apply(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	obj, err := s.decodeObject(w, r, t)
	if err != nil {
		writeError(w, err)
		return
	}
	if t.kind == api.KindNode {
		s.ready.forget(t.name) // made anew, its status may be empty: the next beat looks
	}
	if x, ok := obj.(*api.Secret); ok {
		// Server-set: what a client sends is checked as data, never as stored.
		x.Sealed, x.Keys, x.Digest = "", nil, ""
	}
	if err := obj.Validate(); err != nil {
		writeError(w, wireError(t, err))
		return
	}
	if err := s.admitVolumes(r.Context(), obj); err != nil {
		writeError(w, err)
		return
	}
	if err := s.prepareData(obj); err != nil {
		writeError(w, err)
		return
	}
	var oldDigest string
	if t.kind == api.KindConfig || t.kind == api.KindSecret {
		oldDigest = s.dataDigest(r.Context(), t)
	}
	pinWarning, err := s.pinImage(r.Context(), obj)
	if err != nil {
		writeError(w, err)
		return
	}
	rev, err := precondition(r, obj)
	if err != nil {
		writeError(w, err)
		return
	}
	// A service or job whose labels and spec are as stored is left
	// alone: re-applying what `berth get -o yaml` printed writes nothing.
	// What is stored is read first from the etcd member's own state: a
	// linearizable read waits for etcd to apply all it has queued (under
	// load, the controller's batches: seconds). That read is only a guess,
	// confirmed by the update at its revision, which fails if the object
	// moved on; then, and for any answer given without a write (unchanged,
	// dry run, a create), it is read again linearizably.
	sent := sentByClient(obj)
	var cur api.Object
	var curRaw []byte // cur as stored, when read from the member's own state
	var created bool
	for local := rev == 0 && (t.kind == api.KindService || t.kind == api.KindJob) && !isWatch(r.URL.Query().Get("dryRun")); ; local = false {
		sent.restore()
		cur = nil
		if t.kind == api.KindService || t.kind == api.KindJob || isWatch(r.URL.Query().Get("dryRun")) {
			cur, _ = api.New(t.kind)
			var err error
			if local {
				curRaw, err = s.store.GetIntoLocalRaw(r.Context(), cur, t.namespace, t.name)
			} else {
				err = s.store.GetInto(r.Context(), cur, t.namespace, t.name)
			}
			if errdefs.IsNotFound(err) {
				cur = nil
			} else if err != nil {
				writeError(w, err)
				return
			} else {
				api.Default(cur) // stored before defaults were: compared as stored now
			}
		}
		if svc, ok := obj.(*api.Service); ok {
			s.keepDataDigest(r.Context(), svc, cur)
		}
		if rev == 0 {
			// A write that names the revision it read (a rollback, a read-modify-write)
			// says what it wants; only a file applied blind keeps what the server set.
			keepRestartedAt(cur, obj)
		}
		if local && cur == nil {
			// Not on this member, so most likely new: the create itself
			// tells, failing if the name is taken, with no linearizable
			// read first (which waits for all etcd has queued). Taken, it
			// is read again as stored.
			created, err = s.createNew(r.Context(), obj)
			if errdefs.IsAlreadyExists(err) {
				continue
			}
			break
		}
		if local && sameSpec(cur, obj) {
			continue
		}
		if cur != nil && (rev == 0 || rev == cur.GetMetadata().Revision) && (t.kind == api.KindService || t.kind == api.KindJob) && sameSpec(cur, obj) {
			w.Header().Set(ApplyResultHeader, "unchanged")
			if pinWarning != "" {
				w.Header().Add("Warning", "299 - "+strconv.Quote(pinWarning))
			}
			writeJSON(w, http.StatusOK, cur)
			return
		}
		if isWatch(r.URL.Query().Get("dryRun")) {
			if pinWarning != "" {
				w.Header().Add("Warning", "299 - "+strconv.Quote(pinWarning))
			}
			s.dryRunApply(w, r, t, obj, cur, rev)
			return
		}
		if local {
			err = s.updateAt(r.Context(), obj, curRaw, cur.GetMetadata().Revision)
			if errdefs.IsConflict(err) || errdefs.IsNotFound(err) {
				continue // the member was behind, or the object moved on: read again
			}
			break
		}
		if id, _ := IdentityFrom(r.Context()); id.Node != "" && t.kind == api.KindNode {
			created, err = s.applyOwnNode(r.Context(), id.Node, obj.(*api.Node), rev)
		} else if cur != nil && rev == 0 {
			created, err = s.applyOver(r.Context(), obj, cur.GetMetadata().Revision)
		} else {
			created, err = s.store.Apply(r.Context(), obj, rev)
		}
		break
	}
	if err != nil {
		writeError(w, wireError(t, err))
		return
	}
	s.pullSecretMissing(r.Context(), w, obj, pinWarning)
	if x, ok := obj.(*api.Secret); ok && x.Type == api.SecretTypeRegistryAuth {
		s.repinFor(r.Context(), t.namespace, t.name)
	}
	if (t.kind == api.KindConfig || t.kind == api.KindSecret) && oldDigest != "" {
		if d := s.dataDigest(r.Context(), t); d != oldDigest {
			if err := s.rollUsers(r.Context(), t); err != nil {
				writeError(w, err)
				return
			}
		}
	}
	redact(obj)
	code := http.StatusOK
	if created {
		code = http.StatusCreated
	}
	writeJSON(w, code, obj)
}

// applyOver applies obj over the object just read as stored, at revision
// read: an update at that revision, whose read is the etcd member's own
// state (see store.Txn), without first trying the create that store.Apply
// tries, which would fail. Each is a raft round queued behind whatever
// etcd has to apply (the controller's instance batches, under load).
// Changed since the read, obj is applied over the change, as store.Apply
// would; deleted, it is applied afresh.
func (s *Server) applyOver(ctx context.Context, obj api.Object, read int64) (created bool, err error) {
	if err := s.store.CheckApply(ctx, obj); err != nil {
		return false, err
	}
	err = s.store.Update(ctx, obj, read)
	if errdefs.IsConflict(err) {
		err = s.store.Update(ctx, obj, 0)
	}
	if !errdefs.IsNotFound(err) {
		return false, err
	}
	return s.store.Apply(ctx, obj, 0)
}

// updateAt updates obj over the object stored as raw at revision read, as
// applyOver does, but fails with a conflict or not found rather than
// applying over whatever is stored now: read is the member's own state,
// possibly behind, and what the apply kept from it must be taken again.
// The write starts from raw, with no second read (store.UpdateRead).
func (s *Server) updateAt(ctx context.Context, obj api.Object, raw []byte, read int64) error {
	if err := s.store.CheckApply(ctx, obj); err != nil {
		return err
	}
	return s.store.UpdateRead(ctx, obj, raw, read)
}

// createNew creates obj, which the member's own state does not have;
// errdefs.ErrAlreadyExists if it is there after all.
func (s *Server) createNew(ctx context.Context, obj api.Object) (created bool, err error) {
	if err := s.store.CheckApply(ctx, obj); err != nil {
		return false, err
	}
	if err := s.store.Create(ctx, obj); err != nil {
		return false, err
	}
	return true, nil
}

// sent is what an apply takes from the stored object instead of the
// client, as the client sent it, to take again from a later read.
type sent struct {
	tmpl        *api.Template
	restartedAt time.Time
	svc         *api.Service
	dataDigest  string
}

func sentByClient(obj api.Object) sent {
	var x sent
	switch o := obj.(type) {
	case *api.Service:
		x.svc, x.dataDigest = o, o.Spec.DataDigest
		x.tmpl = &o.Spec.Template
	case *api.Job:
		x.tmpl = &o.Spec.Template
	}
	if x.tmpl != nil {
		x.restartedAt = x.tmpl.RestartedAt
	}
	return x
}

func (x sent) restore() {
	if x.tmpl != nil {
		x.tmpl.RestartedAt = x.restartedAt
	}
	if x.svc != nil {
		x.svc.Spec.DataDigest = x.dataDigest
	}
}

// ApplyResultHeader says what an apply did when it wrote nothing:
// "unchanged" (the stored spec is the same) or "dry-run".
const ApplyResultHeader = "Berth-Apply"

// dryRunApply answers an apply with ?dryRun=1: checked like a real one,
// and answered with the object as it would be stored, but not stored.
func (s *Server) dryRunApply(w http.ResponseWriter, r *http.Request, t target, obj, cur api.Object, rev int64) {
	if cur != nil && rev != 0 && rev != cur.GetMetadata().Revision {
		writeError(w, fmt.Errorf("%s: %w: revision %d is stale, the object is at %d", t.ref(), errdefs.ErrConflict, rev, cur.GetMetadata().Revision))
		return
	}
	if cur == nil && rev != 0 {
		writeError(w, fmt.Errorf("%s: %w", t.ref(), errdefs.ErrNotFound))
		return
	}
	if err := s.store.CheckApply(r.Context(), obj); err != nil {
		writeError(w, wireError(t, err))
		return
	}
	w.Header().Set(ApplyResultHeader, "dry-run")
	if cur == nil {
		writeJSON(w, http.StatusCreated, obj)
		return
	}
	// What an update keeps: the stored status and server-set metadata.
	m, cm := obj.GetMetadata(), cur.GetMetadata()
	m.UID, m.Revision, m.CreatedAt = cm.UID, cm.Revision, cm.CreatedAt
	switch x := obj.(type) {
	case *api.Service:
		x.Status = cur.(*api.Service).Status
	case *api.Job:
		x.Status = cur.(*api.Job).Status
	case *api.Instance:
		x.Status = cur.(*api.Instance).Status
	case *api.Node:
		x.Status = cur.(*api.Node).Status
	}
	writeJSON(w, http.StatusOK, obj)
}

// keepRestartedAt carries the stored template's restartedAt into an
// applied one that does not set it: the server sets it (POST .../restart),
// and a file applied again after a restart, which never names it, must
// neither clear it nor roll the service once more.
func keepRestartedAt(cur, obj api.Object) {
	var from, to *api.Template
	switch x := obj.(type) {
	case *api.Service:
		if c, ok := cur.(*api.Service); ok {
			from, to = &c.Spec.Template, &x.Spec.Template
		}
	case *api.Job:
		if c, ok := cur.(*api.Job); ok {
			from, to = &c.Spec.Template, &x.Spec.Template
		}
	}
	if from != nil && to.RestartedAt.IsZero() {
		to.RestartedAt = from.RestartedAt
	}
}

// sameSpec reports whether two services or jobs have the same labels and spec.
func sameSpec(a, b api.Object) bool {
	spec := func(o api.Object) []byte {
		var v any
		switch x := o.(type) {
		case *api.Service:
			v = x.Spec
		case *api.Job:
			v = x.Spec
		}
		labels := o.GetMetadata().Labels
		if len(labels) == 0 {
			labels = nil
		}
		out, _ := json.Marshal([]any{labels, v})
		return out
	}
	return string(spec(a)) == string(spec(b))
}

func (s *Server) putStatus(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if !t.kind.HasStatus() {
		writeError(w, fmt.Errorf("%s: %w: %s have no status", t.ref(), errdefs.ErrNotFound, t.kind.Plural()))
		return
	}
	obj, err := s.decodeObject(w, r, t)
	if err != nil {
		writeError(w, err)
		return
	}
	rev, err := precondition(r, obj)
	if err != nil {
		writeError(w, err)
		return
	}
	switch x := obj.(type) {
	case *api.Instance:
		x.Status.TrimText()
	case *api.Node:
		x.Status.TrimText()
	}
	// A node's own status write is its heartbeat: it renews the node's
	// lease, first, so that the controller never sees a node Ready
	// without its lease and marks it NotReady in between.
	if t.kind == api.KindNode {
		if n := obj.(*api.Node); n.Status.Condition == api.NodeReady {
			// The beats' pace follows this server's TTL: an agent learns
			// it here, whatever its own default.
			w.Header().Set(api.HeartbeatIntervalHeader, api.HeartbeatInterval(s.nodeTTL).String())
			done, err := s.beat(r.Context(), n, rev)
			if err != nil {
				writeError(w, err)
				return
			}
			if done {
				// Nothing stored changed: the answer is the beat itself,
				// or nothing when the agent asks no more.
				if preferMinimal(r) {
					w.Header().Set("Preference-Applied", api.PreferMinimal)
					w.WriteHeader(http.StatusNoContent)
					return
				}
				writeJSON(w, http.StatusOK, n)
				return
			}
		}
		s.ready.forget(t.name)
	}
	if id, _ := IdentityFrom(r.Context()); id.Node != "" && t.kind == api.KindInstance {
		err = s.updateOwnInstanceStatus(r.Context(), id.Node, obj.(*api.Instance), rev)
	} else {
		err = s.store.UpdateStatus(r.Context(), obj, rev)
	}
	if err != nil {
		writeError(w, wireError(t, err))
		return
	}
	if n, ok := obj.(*api.Node); ok && n.Status.Condition == api.NodeReady {
		s.ready.note(t.name, n.Status.Message)
	}
	writeJSON(w, http.StatusOK, obj)
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	rev, err := precondition(r, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	if t.kind == api.KindVolume {
		if err := s.volumeInUse(r.Context(), t); err != nil {
			writeError(w, err)
			return
		}
	}
	if t.kind == api.KindNode {
		s.ready.forget(t.name)
		// A removed node's certificates stop working with it, and its
		// name is free for a new join.
		if err := s.revoke(r.Context(), t.name); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := s.store.Delete(r.Context(), t.kind, t.namespace, t.name, rev); err != nil {
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// actionRequest reads an action's body strictly into req and returns the
// revision precondition the request names, if any; what names the action
// in errors.
func (s *Server) actionRequest(w http.ResponseWriter, r *http.Request, what string, req any) (int64, error) {
	b, err := s.readBody(w, r)
	if err != nil {
		return 0, err
	}
	if err := api.DecodeStrict(b, req); err != nil {
		return 0, fmt.Errorf("%s: %w", what, err)
	}
	return precondition(r, nil)
}

// ScaleRequest is the body of a scale action.
type ScaleRequest struct {
	Replicas int `json:"replicas"`
}

func (s *Server) scale(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req ScaleRequest
	rev, err := s.actionRequest(w, r, "scale "+t.ref(), &req)
	if err != nil {
		writeError(w, err)
		return
	}
	obj, err := s.modify(r.Context(), t, rev, func(o api.Object) { o.(*api.Service).Spec.Replicas = req.Replicas })
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// BindRequest is the body of a bind action: the scheduler's placement of
// one instance.
type BindRequest struct {
	Node   string `json:"node"`
	CPUSet []int  `json:"cpuset,omitempty"`
}

func (s *Server) bind(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req BindRequest
	rev, err := s.actionRequest(w, r, "bind "+t.ref(), &req)
	if err != nil {
		writeError(w, err)
		return
	}
	if err := api.ValidateName(req.Node); err != nil {
		writeError(w, fmt.Errorf("bind %s: %w", t.ref(), &api.ValidationError{Fields: []api.FieldError{{Field: "node", Reason: err.Error()}}}))
		return
	}
	err = s.store.BindOne(r.Context(), store.Binding{Namespace: t.namespace, Name: t.name, Node: req.Node, CPUSet: req.CPUSet, Revision: rev})
	if err != nil {
		writeError(w, err)
		return
	}
	var in api.Instance
	if err := s.store.GetInto(r.Context(), &in, t.namespace, t.name); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, &in)
}

func (s *Server) restart(w http.ResponseWriter, r *http.Request) {
	t, err := parseTarget(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if t.kind != api.KindService && t.kind != api.KindJob && t.kind != api.KindInstance {
		writeError(w, fmt.Errorf("restart %s: %w: only services, jobs and instances restart", t.ref(), errdefs.ErrNotFound))
		return
	}
	rev, err := precondition(r, nil)
	if err != nil {
		writeError(w, err)
		return
	}
	now := time.Now().UTC()
	obj, err := s.modify(r.Context(), t, rev, func(o api.Object) {
		switch x := o.(type) {
		case *api.Service:
			x.Spec.Template.RestartedAt = now
		case *api.Job:
			x.Spec.Template.RestartedAt = now
		case *api.Instance:
			x.Spec.Template.RestartedAt = now
		}
	})
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, obj)
}

// modify reads an object, changes its spec and writes it back, again on a
// conflict unless the caller named a revision. A change that changes
// nothing writes nothing: no new revision, no watch event for every
// watcher to act on (a scale to the replicas it has, say).
func (s *Server) modify(ctx context.Context, t target, expect int64, change func(api.Object)) (api.Object, error) {
	for {
		obj, _ := api.New(t.kind)
		if err := s.store.GetInto(ctx, obj, t.namespace, t.name); err != nil {
			return nil, err
		}
		if expect != 0 && obj.GetMetadata().Revision != expect {
			return nil, fmt.Errorf("%s: %w: revision %d is stale, the object is at %d", t.ref(), errdefs.ErrConflict, expect, obj.GetMetadata().Revision)
		}
		before, err := json.Marshal(obj)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", t.ref(), err)
		}
		change(obj)
		if after, err := json.Marshal(obj); err == nil && bytes.Equal(before, after) {
			return obj, nil
		}
		if err := obj.Validate(); err != nil {
			return nil, wireError(t, err)
		}
		err = s.store.Update(ctx, obj, obj.GetMetadata().Revision)
		if err == nil || expect != 0 || !errdefs.IsConflict(err) || ctx.Err() != nil {
			return obj, err
		}
	}
}

func (s *Server) recordEvent(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("ns")
	b, err := s.readBody(w, r)
	if err != nil {
		writeError(w, err)
		return
	}
	var ev api.Event
	if err := api.DecodeStrict(b, &ev); err != nil {
		writeError(w, fmt.Errorf("event in namespace %q: %w", ns, err))
		return
	}
	if ev.Metadata.Namespace == "" {
		ev.Metadata.Namespace = ns
	}
	if ev.Metadata.Namespace != ns {
		writeError(w, &api.ValidationError{Fields: []api.FieldError{{Field: "metadata.namespace", Reason: fmt.Sprintf("%q differs from %q in the path", ev.Metadata.Namespace, ns)}}})
		return
	}
	ev.TrimText()
	if id, _ := IdentityFrom(r.Context()); id.Node != "" {
		if err := s.admitNodeEvent(r.Context(), id.Node, &ev); err != nil {
			writeError(w, err)
			return
		}
	}
	if err := s.store.RecordEvent(r.Context(), &ev); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusCreated, &ev)
}

func (s *Server) assignments(w http.ResponseWriter, r *http.Request) {
	node := r.PathValue("name")
	q := r.URL.Query()
	if isWatch(q.Get("watch")) {
		after, err := watchRevision(r)
		if err != nil {
			writeError(w, err)
			return
		}
		s.serveWatch(w, r, watchSource{feed: s.store.WatchAssignmentsRaw(r.Context(), node, startAt(after))})
		return
	}
	items, rev, err := s.store.AssignmentsCurrent(r.Context(), node)
	if err != nil {
		writeError(w, err)
		return
	}
	out := List{Revision: rev, Items: []json.RawMessage{}}
	for _, in := range items {
		b, _ := json.Marshal(in)
		out.Items = append(out.Items, b)
	}
	out.write(w)
}

// wireError gives the field paths of a validation error in the API's
// JSON shape rather than the spec file's.
func wireError(t target, err error) error {
	var v *api.ValidationError
	if !errors.As(err, &v) {
		return err
	}
	return fmt.Errorf("%s: %w", t.ref(), v.Wire(t.kind))
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// ErrorBody is the JSON body of every error response.
type ErrorBody struct {
	Error  string           `json:"error"`
	Code   string           `json:"code"`
	Field  string           `json:"field,omitempty"`
	Reason string           `json:"reason,omitempty"`
	Fields []api.FieldError `json:"fields,omitempty"`
}

func writeError(w http.ResponseWriter, err error) {
	status := errdefs.HTTPStatus(err)
	if errors.Is(err, errMalformed) {
		status = http.StatusBadRequest
	}
	body := ErrorBody{Error: err.Error(), Code: errdefs.Code(err)}
	var ff *forbiddenField
	if fe := api.FieldErrors(err); len(fe) > 0 {
		body.Field, body.Reason, body.Fields = fe[0].Field, fe[0].Reason, fe
	} else if errors.As(err, &ff) {
		body.Field, body.Reason = ff.field, ff.reason
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="berth"`)
	}
	writeJSON(w, status, body)
}
