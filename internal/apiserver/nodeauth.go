package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/store"
)

// Anonymous is the identity of a TLS caller with no credentials, which
// the cluster authenticator admits to POST /v1/join alone.
var Anonymous = Identity{Name: "anonymous"}

const joinPath = "/v1/join"

func isJoin(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Path == joinPath }

// NodeCertificate admits TLS requests whose client certificate, verified
// against the cluster CA in the handshake, names a node.
func NodeCertificate(r *http.Request) (Identity, error) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return Identity{}, fmt.Errorf("%w: no client certificate", errdefs.ErrUnauthorized)
	}
	if len(r.TLS.VerifiedChains) == 0 {
		// The listener did not check the certificate against the CA.
		return Identity{}, fmt.Errorf("client certificate %q: %w: not verified", r.TLS.PeerCertificates[0].Subject.CommonName, errdefs.ErrUnauthorized)
	}
	leaf := r.TLS.VerifiedChains[0][0]
	name, ok := pki.NodeName(leaf)
	if !ok || api.ValidateName(name) != nil {
		return Identity{}, fmt.Errorf("client certificate %q: %w: not a node certificate", leaf.Subject.CommonName, errdefs.ErrUnauthorized)
	}
	return Identity{Name: pki.NodePrefix + name, Node: name}, nil
}

// ClusterAuthenticator is the TCP authenticator of a server with a
// cluster CA: a node certificate makes a node, the bearer token an admin,
// and a caller with neither may only join.
func ClusterAuthenticator(token string) Authenticator {
	bearer := BearerToken(token)
	return func(r *http.Request) (Identity, error) {
		switch {
		case r.TLS == nil:
			return Identity{}, fmt.Errorf("%w: TLS is required", errdefs.ErrUnauthorized)
		case len(r.TLS.PeerCertificates) > 0:
			return NodeCertificate(r)
		case r.Header.Get("Authorization") != "":
			return bearer(r)
		case isJoin(r):
			return Anonymous, nil
		}
		return Identity{}, fmt.Errorf("%w: no credentials: present a node certificate or a bearer token", errdefs.ErrUnauthorized)
	}
}

// NodeAuthorizer is the default Authorize rule (Config.Authorize): admins
// may do anything, anonymous callers only join, and a node:
//
//   - reads (list, get, watch) nodes, services, instances and events, and
//     its own assignments;
//   - writes its own Node object and its status;
//   - writes the status of instances bound to it, as the store says now;
//   - writes the named volumes it holds (spec.node names it);
//   - records events, and joins again.
//
// Anything else is forbidden, with a message naming the node and the
// object.
func NodeAuthorizer(st *store.Store) func(ctx context.Context, id Identity, r *http.Request) error {
	return func(ctx context.Context, id Identity, r *http.Request) error {
		switch {
		case id.Admin:
			return nil
		case id.Node != "":
			return authorizeNode(ctx, st, id.Node, r)
		case isJoin(r):
			return nil
		}
		return fmt.Errorf("%s: %w: no credentials: present a node certificate or a bearer token", id.Name, errdefs.ErrUnauthorized)
	}
}

// nodeReadable are the kinds a node reads.
var nodeReadable = map[api.Kind]bool{api.KindNode: true, api.KindService: true, api.KindInstance: true, api.KindEvent: true,
	api.KindVolume: true}

// request is what a request path names, as far as authorization cares.
type request struct {
	method    string
	kind      api.Kind // empty when the path names no kind
	plural    string
	namespace string
	name      string
	sub       string // status, assignments, scale, restart, bind
}

// what describes the request's target for messages.
func (q request) what() string {
	var obj string
	switch {
	case q.kind == "" && q.plural != "":
		obj = q.plural
	case q.kind == "":
		obj = "this path"
	case q.name == "":
		obj = q.kind.Plural()
		if q.namespace != "" {
			obj += fmt.Sprintf(" in namespace %q", q.namespace)
		}
	default:
		obj = api.Ref(q.kind, q.namespace, q.name)
	}
	switch {
	case q.method == http.MethodGet && q.sub != "":
		return "read the " + q.sub + " of " + obj
	case q.method == http.MethodGet:
		return "read " + obj
	case q.sub == "status":
		return "write the status of " + obj
	case q.sub != "":
		return q.sub + " " + obj
	case q.method == http.MethodDelete:
		return "delete " + obj
	case q.method == http.MethodPost:
		return "create " + obj
	}
	return "write " + obj
}

// parseRequest reads a request's path segment by segment from its
// escaped form, the way the router matches it, so that an escaped slash
// cannot make the two see different objects.
func parseRequest(r *http.Request) request {
	q := request{method: r.Method}
	if q.method == http.MethodHead {
		q.method = http.MethodGet
	}
	raw := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	seg := make([]string, len(raw))
	for i, s := range raw {
		u, err := url.PathUnescape(s)
		if err != nil {
			return q
		}
		seg[i] = u
	}
	if len(seg) < 2 || seg[0] != "v1" {
		return q
	}
	switch {
	case seg[1] == "nodes" && len(seg) <= 4:
		q.plural, q.kind = "nodes", api.KindNode
		if len(seg) > 2 {
			q.name = seg[2]
		}
		if len(seg) > 3 {
			q.sub = seg[3]
		}
	case seg[1] == "namespaces" && len(seg) >= 4 && len(seg) <= 6:
		q.namespace, q.plural = seg[2], seg[3]
		if len(seg) > 4 {
			q.name = seg[4]
		}
		if len(seg) > 5 {
			q.sub = seg[5]
		}
	case len(seg) == 2:
		q.plural = seg[1]
	default:
		q.plural = seg[1]
		return q
	}
	if k, ok := api.KindFromPlural(q.plural); ok {
		q.kind = k
	}
	return q
}

func authorizeNode(ctx context.Context, st *store.Store, node string, r *http.Request) error {
	if r.URL.Path == "/healthz" || isJoin(r) {
		return nil
	}
	q := parseRequest(r)
	deny := func(why string) error {
		if why != "" {
			why = ": " + why
		}
		return fmt.Errorf("node %q: %w: may not %s%s", node, errdefs.ErrForbidden, q.what(), why)
	}
	switch q.method {
	case http.MethodGet:
		switch {
		case q.kind == api.KindNode && q.sub == "assignments":
			if q.name != node {
				return deny("a node reads only its own assignments")
			}
			return nil
		case q.sub != "" || !nodeReadable[q.kind]:
			return deny("")
		}
		return nil
	case http.MethodPut:
		switch {
		case q.kind == api.KindNode && (q.sub == "" || q.sub == "status"):
			if q.name != node {
				return deny("a node writes only its own node object")
			}
			return nil
		case q.kind == api.KindInstance && q.sub == "status" && q.name != "":
			var in api.Instance
			if err := st.GetInto(ctx, &in, q.namespace, q.name); err != nil {
				return err
			}
			if in.Spec.Node != node {
				if in.Spec.Node == "" {
					return deny("it is bound to no node")
				}
				return deny(fmt.Sprintf("it is bound to node %q", in.Spec.Node))
			}
			return nil
		case q.kind == api.KindVolume && q.sub == "" && q.name != "":
			// A node records the named volumes it makes; the body's
			// spec.node must name it too (checked when the body is read).
			var v api.Volume
			err := st.GetInto(ctx, &v, q.namespace, q.name)
			switch {
			case errdefs.IsNotFound(err):
				return nil
			case err != nil:
				return err
			case v.Spec.Node != node:
				return deny(fmt.Sprintf("it lives on node %q", v.Spec.Node))
			}
			return nil
		}
	case http.MethodPost:
		if q.kind == api.KindEvent && q.name == "" && q.namespace != "" {
			return nil
		}
	}
	return deny("")
}
