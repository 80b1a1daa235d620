package apiserver

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/store"
)

// Remote operations: an instance's logs, exec, attach, cp, port-forward
// and stats are subresources the server authorises and then proxies, as
// they are, to the agent of the instance's node (internal/agent's
// RemoteHandler lists its side):
//
//	GET  /v1/namespaces/{ns}/instances/{name}/logs         frames; ?follow&tail&since&timestamps&previous
//	GET  /v1/namespaces/{ns}/instances/{name}/attach       frames until the container exits
//	GET  /v1/namespaces/{ns}/instances/{name}/exec         WebSocket; ?cmd=..&env=..&tty&stdin&cols&rows;
//	                                                       &resolve: {name} may be a service's or job's (execTarget)
//	GET  /v1/namespaces/{ns}/instances/{name}/cp?path=P    a tar of P
//	PUT  /v1/namespaces/{ns}/instances/{name}/cp?path=DIR  unpack the body's tar into DIR
//	GET  /v1/namespaces/{ns}/instances/{name}/portforward  WebSocket; ?port=
//	GET  /v1/namespaces/{ns}/instances/{name}/stats        client.InstanceStats
//	POST /v1/namespaces/{ns}/instances/{name}/checkpoint   a CRIU dump (gzipped tar), left running
//	POST /v1/namespaces/{ns}/instances/{name}/restore      the body's checkpoint put back in place
//	POST /v1/namespaces/{ns}/instances/{name}/migrate      api.Migration; ?to=NODE (migrate.go)
//	GET  /v1/nodes/{name}/metrics                          the node agent's Prometheus metrics
//	GET  /v1/tunnel/{node}                                 Upgrade: berth-tunnel (agents only)
//
// The instance operations take ?container=NAME: one of the instance's
// init or sidecar containers, or "main" (the default).
//
// Every one is for admins: NodeAuthorizer refuses a node any
// subresource but its own assignments. Each exec, attach, cp (either
// way), checkpoint and restore, and each port-forward session, is
// recorded as an audit event on the instance (who, what: the command,
// the path, the port).
//
// A node's agent reaches the server, never the other way round: it opens
// GET /v1/tunnel/{node} with its node certificate (or, in `berth up`, on
// the root-only socket), the server answers 101 and takes the connection
// as a yamux session whose streams it opens, one per proxied request.
// Agents open a tunnel to every server they know, so whichever server a
// client asks can reach every node.
//
// Why these transports: the agent dials out, so a node needs no open
// port (nor an address the server can reach), and the tunnel is the
// node's own mTLS connection; yamux (hashicorp/yamux, as Nomad and
// Consul use) carries many streams over it with keepalives that find a
// dead peer in seconds, and each stream is plain HTTP/1.1, so the
// server's side is httputil.ReverseProxy. Exec and port-forward need both
// directions at once: they are WebSockets (coder/websocket), which pass
// through that proxy as an Upgrade, work the same on the unix socket and
// over TLS, frame messages (exec's channels) and are what a browser (the
// dashboard) speaks. One-way streams (logs, cp, stats) stay plain HTTP
// bodies.

// tunnels are the nodes' open tunnels to this server.
type tunnels struct {
	mu sync.Mutex
	m  map[string]*tunnel
}

type tunnel struct {
	sess      *yamux.Session
	proxy     *httputil.ReverseProxy
	transport *http.Transport
}

// client makes requests of the node's agent (http://agent/...) itself.
func (t *tunnel) client() *http.Client { return &http.Client{Transport: t.transport} }

func (t *tunnels) get(node string) *tunnel {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[node]
}

// put makes tn the node's tunnel, closing the one it replaces.
func (t *tunnels) put(node string, tn *tunnel) {
	t.mu.Lock()
	old := t.m[node]
	if t.m == nil {
		t.m = map[string]*tunnel{}
	}
	t.m[node] = tn
	t.mu.Unlock()
	if old != nil {
		old.sess.Close()
	}
}

func (t *tunnels) drop(node string, tn *tunnel) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[node] == tn {
		delete(t.m, node)
	}
}

// Connected lists the nodes whose agents have a tunnel to this server.
func (s *Server) Connected() []string {
	s.tunnels.mu.Lock()
	defer s.tunnels.mu.Unlock()
	var out []string
	for n, t := range s.tunnels.m {
		if !t.sess.IsClosed() {
			out = append(out, n)
		}
	}
	return out
}

const tunnelPrefix = "/v1/tunnel/"

func (s *Server) routeRemote(m *routeMux) {
	for _, op := range []string{"logs", "attach", "exec", "cp", "portforward", "stats"} {
		m.HandleFunc("GET /v1/namespaces/{ns}/instances/{name}/"+op, s.instanceOp(op))
	}
	m.HandleFunc("PUT /v1/namespaces/{ns}/instances/{name}/cp", s.instanceOp("cp"))
	m.HandleFunc("POST /v1/namespaces/{ns}/instances/{name}/checkpoint", s.instanceOp("checkpoint"))
	m.HandleFunc("POST /v1/namespaces/{ns}/instances/{name}/restore", s.instanceOp("restore"))
	m.HandleFunc("POST /v1/namespaces/{ns}/instances/{name}/migrate", s.migrateInstance)
	m.HandleFunc("GET /v1/nodes/{name}/metrics", s.nodeMetrics)
	s.Mount(tunnelPrefix, http.HandlerFunc(s.serveTunnel))
}

// serveTunnel takes an agent's connection as its node's tunnel. Only the
// node itself (by its certificate) or an admin may open it.
func (s *Server) serveTunnel(w http.ResponseWriter, r *http.Request) {
	id, _ := IdentityFrom(r.Context())
	node := strings.TrimPrefix(r.URL.Path, tunnelPrefix)
	switch {
	case r.Method != http.MethodGet:
		writeError(w, fmt.Errorf("%s %s: %w", r.Method, r.URL.Path, errdefs.ErrNotFound))
		return
	case api.ValidateName(node) != nil:
		writeError(w, fmt.Errorf("tunnel: %w: %q is not a node name", errdefs.ErrInvalidArgument, node))
		return
	case !id.Admin && id.Node != node:
		if id.Node == "" {
			writeError(w, fmt.Errorf("%s: %w: only a node opens its tunnel", id.Name, errdefs.ErrForbidden))
			return
		}
		writeError(w, fmt.Errorf("node %q: %w: may not open the tunnel of node %q", id.Node, errdefs.ErrForbidden, node))
		return
	case !strings.EqualFold(r.Header.Get("Upgrade"), client.TunnelProtocol):
		writeError(w, fmt.Errorf("tunnel of node %q: %w: want Upgrade: %s", node, errdefs.ErrInvalidArgument, client.TunnelProtocol))
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, fmt.Errorf("tunnel of node %q: %w", node, err))
		return
	}
	_ = conn.SetDeadline(time.Time{})
	local := conn.LocalAddr().Network() == "unix"
	sess, err := yamux.Client(client.TunnelConn(bufferedConn{Conn: conn, r: brw.Reader}), client.TunnelConfig(local))
	if err != nil {
		conn.Close()
		return
	}
	answered := make(chan struct{}) // a stream opened before the 101 would precede it on the wire
	tn := &tunnel{sess: sess, transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			select {
			case <-answered:
				return sess.Open()
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		},
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     time.Minute,
	}}
	tn.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.Header.Del("Authorization")
		},
		Transport: tn.transport,
		// Streams (logs -f) go out as they come.
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			writeError(w, fmt.Errorf("node %q: %w: %w", node, errdefs.ErrUnavailable, err))
		},
	}
	// The tunnel is listed before the answer, so that whoever saw the
	// agent's upgrade succeed finds it; streams wait for the answer.
	s.tunnels.put(node, tn)
	if _, err := io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: "+client.TunnelProtocol+"\r\n\r\n"); err != nil {
		sess.Close()
	} else {
		s.log.Info("node tunnel open", "node", node, "from", conn.RemoteAddr())
	}
	close(answered)
	s.holdTunnel(r, id, sess)
	s.tunnels.drop(node, tn)
	s.log.Info("node tunnel closed", "node", node)
}

// holdTunnel returns when the tunnel's session closes; a node's is
// closed once its certificate stops working (revoked, or the node
// removed), as its watches end, so that no admin's request goes on to a
// node the cluster no longer trusts.
func (s *Server) holdTunnel(r *http.Request, id Identity, sess *yamux.Session) {
	var creds <-chan struct{}
	if id.Node != "" && s.creds != nil {
		creds = s.creds.Changed(id.Node)
	}
	// The connection is hijacked: its request's context is no measure of it.
	r = r.WithContext(context.WithoutCancel(r.Context()))
	for {
		select {
		case <-sess.CloseChan():
			return
		case <-creds:
			creds = s.creds.Changed(id.Node)
			if err := s.checkNodeCert(r, id); err != nil {
				s.log.Info("node tunnel closed: its certificate stopped working", "node", id.Node, "err", err)
				sess.Close()
				return
			}
		}
	}
}

// bufferedConn reads first what the server had read past the request.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// forward sends r to node's agent at path, with query.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, node, path string, query url.Values) {
	tn := s.tunnels.get(node)
	if tn == nil || tn.sess.IsClosed() {
		writeError(w, fmt.Errorf("node %q: %w: its agent has no tunnel to this server", node, errdefs.ErrUnavailable))
		return
	}
	out := r.Clone(r.Context())
	out.URL = &url.URL{Scheme: "http", Host: "agent", Path: path, RawQuery: query.Encode()}
	out.Host = "agent"
	out.RequestURI = ""
	tn.proxy.ServeHTTP(w, out)
}

// instanceOp proxies an instance subresource to the agent of its node.
func (s *Server) instanceOp(op string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ns, name := r.PathValue("ns"), r.PathValue("name")
		var in *api.Instance
		var err error
		switch {
		case op == "exec" && r.URL.Query().Get("resolve") == "1":
			in, err = s.execTarget(r.Context(), ns, name)
		case op == "exec":
			// Read as execTarget reads, without a raft round.
			in = &api.Instance{}
			err = s.store.GetIntoLocal(r.Context(), in, ns, name)
		default:
			in = &api.Instance{}
			err = s.store.GetInto(r.Context(), in, ns, name)
		}
		if err != nil {
			writeError(w, err)
			return
		}
		name = in.Metadata.Name
		if in.Spec.Node == "" {
			writeError(w, fmt.Errorf("%s: %w: bound to no node yet", api.Ref(api.KindInstance, ns, name), errdefs.ErrFailedPrecondition))
			return
		}
		if op == "checkpoint" && len(in.Spec.Template.Containers) > 0 {
			// A checkpoint holds one container; restored alone, it would lose the others.
			writeError(w, fmt.Errorf("%s: %w: it has init or sidecar containers, and a checkpoint holds only one container",
				api.Ref(api.KindInstance, ns, name), errdefs.ErrFailedPrecondition))
			return
		}
		metrics.RemoteStreams.WithLabelValues(op).Inc()
		if reason := auditReason(op, r.Method); reason != "" {
			who, q := caller(r), r.URL.Query()
			msg, record := auditMessage(q, in, who, reason), true
			if reason == reasonPortForward {
				// Once per session, not per connection (forwardSessions).
				var n int
				var last time.Time
				var end func(time.Time)
				record, n, last, end = s.forwards.begin(forwardKey{who: who, uid: in.Metadata.UID, container: q.Get("container"), port: q.Get("port")}, time.Now())
				defer func() { end(time.Now()) }()
				if n > 0 {
					msg = fmt.Sprintf("%s forwarded %d more connections to port %s on node %s since %s", who, n, q.Get("port"), in.Spec.Node, last.UTC().Format(time.RFC3339))
				}
			}
			if record {
				// The event is written beside the operation, not before it:
				// an etcd write (a disk sync) in front of every exec was the
				// longest wait of a remote exec's tail. The handler still
				// returns only once it is written, though a short answer
				// (an error) may reach the caller first.
				done := make(chan struct{})
				go func() {
					defer close(done)
					s.recordRemoteOp(r, in, reason, msg)
				}()
				defer func() { <-done }()
			}
		}
		q := r.URL.Query()
		cname := q.Get("container")
		if _, ok := in.Spec.Template.Container(cname); !ok {
			writeError(w, &api.ValidationError{Fields: []api.FieldError{{Field: "container",
				Reason: fmt.Sprintf("%s has no container %q (it has %s)", api.Ref(api.KindInstance, ns, name), cname, strings.Join(in.Spec.Template.ContainerNames(), ", "))}}})
			return
		}
		// The container the status names saves the agent a search.
		q.Del("containerID")
		q.Del("resolve")
		if in.Status.ContainerID != "" && (cname == "" || cname == api.MainContainer) {
			q.Set("containerID", in.Status.ContainerID)
		}
		s.forward(w, r, in.Spec.Node, "/v1/instances/"+url.PathEscape(in.Metadata.UID)+"/"+op, q)
	}
}

// execTarget is the instance an exec with ?resolve=1 runs in: name is an
// instance's, or a service's or job's, whose first running instance
// (api.FirstRunning) it is, as `berth exec` picks. A name that is two of
// these is refused, so that no command picks one silently. The CLI used
// to read each kind itself, a round trip apiece before the exec; the
// three kinds are read in one transaction from this server's etcd member,
// with no raft round: on a member of several, a value may trail the
// leader by an apply, which at worst sends the exec to a container that
// has just stopped, and the agent refuses it.
func (s *Server) execTarget(ctx context.Context, ns, name string) (*api.Instance, error) {
	objs := []api.Object{&api.Instance{}, &api.Service{}, &api.Job{}}
	there, err := s.store.GetEachLocal(ctx, ns, name, objs...)
	if err != nil {
		return nil, err
	}
	var found []api.Object
	for i, o := range objs {
		if there[i] {
			found = append(found, o)
		}
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("no instance, service or job named %q in namespace %q: %w", name, ns, errdefs.ErrNotFound)
	case 1:
	default:
		var refs []string
		for _, o := range found {
			refs = append(refs, strings.ToLower(string(o.GetKind()))+"/"+name)
		}
		return nil, fmt.Errorf("%q is ambiguous in namespace %q: %w: it names %s; say which: %s",
			name, ns, errdefs.ErrInvalidArgument, strings.Join(refs, " and "), strings.Join(refs, " or "))
	}
	if in, ok := found[0].(*api.Instance); ok {
		return in, nil
	}
	owner := found[0].GetKind()
	insts, _, err := store.List[api.Instance](ctx, s.store, ns)
	if err != nil {
		return nil, err
	}
	in := api.FirstRunning(api.OwnedBy(insts, owner, name))
	if in == nil {
		return nil, fmt.Errorf("%s: %w: it has no running instance", api.Ref(owner, ns, name), errdefs.ErrFailedPrecondition)
	}
	return in, nil
}

// caller says who sent r, and from where, for audit events.
func caller(r *http.Request) string {
	id, _ := IdentityFrom(r.Context())
	who := id.Name
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil && host != "" {
		who += " from " + host
	}
	return who
}

// auditMessage says what who did to an instance with an operation whose
// audit event has reason, as its query q asked.
func auditMessage(q url.Values, in *api.Instance, who, reason string) string {
	switch reason {
	case reasonExec:
		msg := fmt.Sprintf("%s ran %q on node %s", who, q["cmd"], in.Spec.Node)
		if q.Get("tty") == "1" {
			msg += " with a terminal"
		}
		return msg
	case reasonAttach:
		return fmt.Sprintf("%s attached on node %s", who, in.Spec.Node)
	case reasonCheckpoint:
		return fmt.Sprintf("%s checkpointed the instance on node %s", who, in.Spec.Node)
	case reasonRestore:
		return fmt.Sprintf("%s restored the instance from a checkpoint on node %s", who, in.Spec.Node)
	case reasonCopyIn:
		return fmt.Sprintf("%s copied files into %s on node %s", who, q.Get("path"), in.Spec.Node)
	case reasonCopyOut:
		return fmt.Sprintf("%s copied %s out of the instance on node %s", who, q.Get("path"), in.Spec.Node)
	case reasonPortForward:
		return fmt.Sprintf("%s began forwarding to port %s on node %s", who, q.Get("port"), in.Spec.Node)
	}
	return fmt.Sprintf("%s: %s on node %s", who, reason, in.Spec.Node)
}

// recordRemoteOp records who reached into an instance, and how, as an
// audit event.
func (s *Server) recordRemoteOp(r *http.Request, in *api.Instance, reason, msg string) {
	ev := &api.Event{
		Metadata: api.Metadata{Namespace: in.Metadata.Namespace},
		Time:     time.Now().UTC(),
		Object:   api.ObjectRef{Kind: api.KindInstance, Namespace: in.Metadata.Namespace, Name: in.Metadata.Name},
		Type:     api.EventNormal, Reason: reason, Message: msg, Source: "apiserver",
	}
	// The operation may end (and its request's context with it) first.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
	defer cancel()
	// An audit event: no flood of other events, nor of other kinds of
	// audit events, pushes it out.
	if err := s.store.RecordAuditEvent(ctx, ev); err != nil {
		s.log.Warn("record event", "instance", in.Metadata.Name, "reason", reason, "err", err)
	}
}

func (s *Server) nodeMetrics(w http.ResponseWriter, r *http.Request) {
	s.forward(w, r, r.PathValue("name"), "/metrics", nil)
}
