package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
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
	name, ok := nodecert.NodeName(leaf)
	if !ok || api.ValidateName(name) != nil {
		return Identity{}, fmt.Errorf("client certificate %q: %w: not a node certificate", leaf.Subject.CommonName, errdefs.ErrUnauthorized)
	}
	return Identity{Name: nodecert.Prefix + name, Node: name}, nil
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
// may do anything, anonymous callers only join, the metrics token only
// scrapes (ScrapeRoute), and a node:
//
//   - reads (list, get, watch) nodes, services, instances and events, and
//     its own assignments;
//   - writes its own Node object and its status;
//   - writes the status of instances bound to it, as the store says now;
//   - writes the named volumes it holds (spec.node names it);
//   - records events about itself and its instances (see admitNodeEvent);
//   - renews its own certificate.
//
// Which fields of those objects it may write is checked per route, on the
// body (admitOwnNode, admitInstanceStatus).
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
		case id.Scraper && ScrapeRoute(r):
			return nil
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

// authorizeNode decides what a node's certificate may do.
// Long because it is the table of what a node's certificate may reach: one
// short case per route.
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
		case q.kind == api.KindInstance && q.sub == "data" && q.name != "":
			// A node reads the configs and secrets of its own instances only.
			var in api.Instance
			if err := st.GetInto(ctx, &in, q.namespace, q.name); err != nil {
				return err
			}
			if in.Spec.Node != node {
				return deny(fmt.Sprintf("a node reads the data of its own instances only; it is bound to node %q", in.Spec.Node))
			}
			return nil
		case q.kind == "" && q.plural == "registry" && r.URL.Path == "/v1/registry":
			// Mirrors, CAs and whether to pull directly: no credentials.
			return nil
		case q.sub != "" || !nodeReadable[q.kind]:
			return deny("")
		}
		return nil
	case http.MethodPut:
		switch {
		case q.kind == api.KindNode && (q.sub == "" || q.sub == "status" || q.sub == "instancestatus"):
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
				return nodeUsesVolume(ctx, st, node, q.namespace, q.name, deny)
			case err != nil:
				return err
			case v.Spec.Node != node:
				return deny(fmt.Sprintf("it lives on node %q", v.Spec.Node))
			}
			return nil
		}
	case http.MethodPost:
		switch {
		case q.kind == api.KindEvent && q.name == "" && q.namespace != "":
			return nil
		case q.kind == api.KindNode && q.sub == "certificate":
			if q.name != node {
				return deny("a node renews only its own certificate")
			}
			return nil
		}
	}
	return deny("")
}

// nodeUsesVolume lets a node record a new named volume only when an
// instance bound to it mounts one by that name, as its agent does on the
// instance's first start: else a node could claim names other nodes'
// instances will ask for, and hold them off those nodes.
func nodeUsesVolume(ctx context.Context, st *store.Store, node, namespace, name string, deny func(string) error) error {
	insts, _, err := store.List[api.Instance](ctx, st, namespace)
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.Spec.Node == node && in.Spec.Template.Uses(name) {
			return nil
		}
	}
	return deny(fmt.Sprintf("no instance bound to node %q uses it", node))
}

// forbiddenField is a node's write refused because of one field: a 403
// whose body names the field, as a 422 does.
type forbiddenField struct {
	node   string
	ref    string
	field  string
	reason string
}

func (e *forbiddenField) Error() string {
	return fmt.Sprintf("node %q: %s: %v: %s: %s", e.node, e.ref, errdefs.ErrForbidden, e.field, e.reason)
}

func (e *forbiddenField) Unwrap() error { return errdefs.ErrForbidden }

// admitOwnNode checks a node's write of its own Node object, in, against
// the stored one (nil when the node registers for the first time), and
// completes it. A node speaks only for what it observes; the rest of the
// spec belongs to admins and the control plane:
//
//   - podSubnet, unschedulable and draining must be as stored (zero on
//     first registration): a PUT that changes them is refused, naming the
//     field;
//   - labels outside the node.berth/ prefix are admins': they must be as
//     stored; the node's own go under the prefix, so that a placement
//     constraint trusts them only when it names the prefix;
//   - capacityLimit is the server's and admins': the first registration
//     sets it to the capacity reported then (a node with none yet gets the
//     capacity recorded before, if any), and a node may leave it out (it
//     is kept) but not change it;
//   - capacity and topology are recorded as reported, capped by
//     capacityLimit: each capacity field at most the limit's, and no more
//     logical CPUs in the topology than the limit's milliCPU allows.
//
// It reports what it capped, for the record.
func admitOwnNode(node string, in, stored *api.Node) (capped []string, err error) {
	ref := api.Ref(api.KindNode, "", node)
	deny := func(field, reason string) error {
		return &forbiddenField{node: node, ref: ref, field: field, reason: reason}
	}
	var cur api.NodeSpec
	var curLabels map[string]string
	if stored != nil {
		cur, curLabels = stored.Spec, stored.Metadata.Labels
	}
	switch {
	case in.Spec.PodSubnet != cur.PodSubnet:
		return nil, deny("spec.podSubnet", fmt.Sprintf("the control plane assigns it (%q), a node may not set it to %q", cur.PodSubnet, in.Spec.PodSubnet))
	case in.Spec.Unschedulable != cur.Unschedulable:
		return nil, deny("spec.unschedulable", fmt.Sprintf("admins cordon and uncordon (it is %t)", cur.Unschedulable))
	case in.Spec.Draining != cur.Draining:
		return nil, deny("spec.draining", fmt.Sprintf("admins drain (it is %t)", cur.Draining))
	case in.Spec.DrainMigrate != cur.DrainMigrate:
		return nil, deny("spec.drainMigrate", fmt.Sprintf("admins drain (it is %t)", cur.DrainMigrate))
	}
	for k, v := range in.Metadata.Labels {
		if strings.HasPrefix(k, api.NodeReportedLabelPrefix) {
			continue
		}
		if old, ok := curLabels[k]; !ok || old != v {
			return nil, deny(fmt.Sprintf("metadata.labels[%q]", k), "labels without the "+api.NodeReportedLabelPrefix+" prefix are set by admins; report it as "+api.NodeReportedLabelPrefix+k)
		}
	}
	for k, v := range curLabels {
		if _, ok := in.Metadata.Labels[k]; !ok && !strings.HasPrefix(k, api.NodeReportedLabelPrefix) {
			return nil, deny(fmt.Sprintf("metadata.labels[%q]", k), fmt.Sprintf("set by admins to %q; a node may not remove it", v))
		}
	}
	var none api.NodeCapacity
	switch {
	case in.Spec.CapacityLimit != none && in.Spec.CapacityLimit != cur.CapacityLimit:
		return nil, deny("spec.capacityLimit", fmt.Sprintf("the server sets it at the first registration and admins change it (it is %+v)", cur.CapacityLimit))
	case cur.CapacityLimit != none:
		in.Spec.CapacityLimit = cur.CapacityLimit
	case cur.Capacity != none:
		// A node registered before limits, or made by an admin with a
		// capacity: what was recorded then is the limit.
		in.Spec.CapacityLimit = cur.Capacity
	default:
		in.Spec.CapacityLimit = in.Spec.Capacity
	}
	return capNode(&in.Spec), nil
}

// capNode holds a node's reported capacity and topology to its limit and
// says which fields it lowered.
func capNode(spec *api.NodeSpec) []string {
	var capped []string
	lim, c := spec.CapacityLimit, &spec.Capacity
	if lim.MilliCPU > 0 && c.MilliCPU > lim.MilliCPU {
		c.MilliCPU, capped = lim.MilliCPU, append(capped, fmt.Sprintf("capacity.milliCPU to %d", lim.MilliCPU))
	}
	if lim.Memory > 0 && c.Memory > lim.Memory {
		c.Memory, capped = lim.Memory, append(capped, fmt.Sprintf("capacity.memory to %d", lim.Memory))
	}
	if lim.Pids > 0 && c.Pids > lim.Pids {
		c.Pids, capped = lim.Pids, append(capped, fmt.Sprintf("capacity.pids to %d", lim.Pids))
	}
	if lim.MilliCPU > 0 {
		budget := int((lim.MilliCPU + 999) / 1000)
		var cores []api.CPUCore
		for _, core := range spec.Topology.Cores {
			if len(core.Threads) > budget {
				break
			}
			budget -= len(core.Threads)
			cores = append(cores, core)
		}
		if len(cores) < len(spec.Topology.Cores) {
			capped = append(capped, fmt.Sprintf("topology to %d cores", len(cores)))
			spec.Topology.Cores = cores
		}
	}
	return capped
}

// nodePhases are the instance phases a node may report: what it sees of
// a container it runs. Pending, Scheduled and Lost are the control
// plane's.
var nodePhases = map[api.Phase]bool{api.PhaseStarting: true, api.PhaseRunning: true, api.PhaseSucceeded: true, api.PhaseFailed: true}

// admitInstanceStatus checks the status a node writes for an instance
// bound to it (NodeAuthorizer has checked the binding): a phase a node may
// report, and an IP in the node's pod subnet (none when it has none). The
// store keeps the stored spec and metadata whatever the body says; the
// node may not move scheduledAt, the scheduler's, so it is kept too.
func admitInstanceStatus(node *api.Node, in, stored *api.Instance) error {
	ref := api.RefOf(in)
	deny := func(field, reason string) error {
		return &forbiddenField{node: node.Metadata.Name, ref: ref, field: field, reason: reason}
	}
	if in.Spec.Node != "" && in.Spec.Node != stored.Spec.Node {
		return deny("spec.node", fmt.Sprintf("the scheduler binds instances; this one is bound to %q", stored.Spec.Node))
	}
	if !nodePhases[in.Status.Phase] {
		return deny("status.phase", fmt.Sprintf("a node reports Starting, Running, Succeeded or Failed, not %q", in.Status.Phase))
	}
	if in.Status.IP != "" {
		ip, err := netip.ParseAddr(in.Status.IP)
		subnet, serr := netip.ParsePrefix(node.Spec.PodSubnet)
		switch {
		case err != nil:
			return deny("status.ip", fmt.Sprintf("%q is not an IP address", in.Status.IP))
		case serr != nil:
			return deny("status.ip", fmt.Sprintf("%s is outside node %q's pod subnet: it has none", ip, node.Metadata.Name))
		case !subnet.Contains(ip.Unmap()):
			return deny("status.ip", fmt.Sprintf("%s is outside node %q's pod subnet %s", ip, node.Metadata.Name, subnet))
		}
	}
	in.Status.ScheduledAt = stored.Status.ScheduledAt
	return nil
}

// nodeEventSource is the source the server writes on events a node
// records, whatever the node said.
func nodeEventSource(node string) string { return "agent/" + node }

// admitNodeEvent checks an event a node records: about itself or an
// instance bound to it (in the instance's namespace), with the server's
// word for its source, and not passing for an audit event (who reached
// into an instance), which only the server records: neither by its name
// nor by its reason. The server's clock gives its time.
func (s *Server) admitNodeEvent(ctx context.Context, node string, ev *api.Event) error {
	switch {
	case store.IsAuditName(ev.Metadata.Name):
		return &forbiddenField{node: node, ref: "event", field: "metadata.name", reason: fmt.Sprintf("%q has the form of the server's audit events", ev.Metadata.Name)}
	case isAuditReason(ev.Reason):
		return &forbiddenField{node: node, ref: "event", field: "reason", reason: fmt.Sprintf("%s is the reason of the server's audit events", ev.Reason)}
	}
	deny := func(reason string) error {
		return &forbiddenField{node: node, ref: "event", field: "object", reason: reason}
	}
	switch ev.Object.Kind {
	case api.KindNode:
		if ev.Object.Name != node {
			return deny(fmt.Sprintf("a node records events about itself, not node %q", ev.Object.Name))
		}
	case api.KindInstance:
		var in api.Instance
		err := s.store.GetInto(ctx, &in, ev.Object.Namespace, ev.Object.Name)
		if errdefs.IsNotFound(err) {
			return deny(fmt.Sprintf("instance %s/%s is not bound to node %q", ev.Object.Namespace, ev.Object.Name, node))
		}
		if err != nil {
			return err
		}
		if in.Spec.Node != node {
			return deny(fmt.Sprintf("instance %s/%s is bound to %q, not to node %q", ev.Object.Namespace, ev.Object.Name, in.Spec.Node, node))
		}
		if ev.Metadata.Namespace != ev.Object.Namespace {
			// Listed in another namespace, it would pass for one about
			// that namespace's instance of the name.
			return &forbiddenField{node: node, ref: "event", field: "metadata.namespace",
				reason: fmt.Sprintf("an event about instance %s/%s is recorded in namespace %q, not %q", ev.Object.Namespace, ev.Object.Name, ev.Object.Namespace, ev.Metadata.Namespace)}
		}
	default:
		return deny(fmt.Sprintf("a node records events about itself and its instances, not about %s", ev.Object.Kind.Plural()))
	}
	ev.Source = nodeEventSource(node)
	// The time orders events' names, and so which are pruned first: a
	// node's clock, or a node, could otherwise push out others' events.
	ev.Time = time.Now().UTC()
	return nil
}

// applyOwnNode writes a node's own Node object once admitOwnNode lets it,
// on the stored revision it was checked against (again when that moved,
// unless the caller named a revision).
func (s *Server) applyOwnNode(ctx context.Context, node string, in *api.Node, expect int64) (created bool, err error) {
	for i := 0; ; i++ {
		var stored *api.Node
		cur := &api.Node{}
		switch err := s.store.GetInto(ctx, cur, "", node); {
		case errdefs.IsNotFound(err):
		case err != nil:
			return false, err
		default:
			stored = cur
		}
		// A stale write is a conflict, whatever it says: the caller reads
		// again and sees what changed (an admin's cordon or label).
		if expect != 0 && (stored == nil || stored.Metadata.Revision != expect) {
			return false, fmt.Errorf("%s: %w: revision %d is stale", api.Ref(api.KindNode, "", node), errdefs.ErrConflict, expect)
		}
		n := *in // admitOwnNode completes a copy: a retry starts from the body again
		capped, err := admitOwnNode(node, &n, stored)
		if err != nil {
			return false, err
		}
		if stored == nil && expect == 0 {
			err = s.store.Create(ctx, &n)
		} else {
			rev := expect
			if rev == 0 {
				rev = stored.Metadata.Revision
			}
			err = s.store.Update(ctx, &n, rev)
		}
		if expect == 0 && i < 20 && ctx.Err() == nil && (errdefs.IsConflict(err) || errdefs.IsAlreadyExists(err) || errdefs.IsNotFound(err)) {
			continue
		}
		if err != nil {
			return false, err
		}
		*in = n
		if len(capped) > 0 {
			s.log.Warn("node reported more than its capacity limit", "node", node, "capped", capped)
			ev := &api.Event{Object: api.ObjectRef{Kind: api.KindNode, Name: node}, Type: api.EventWarning, Reason: "CapacityCapped",
				Message: "reported more than spec.capacityLimit; kept " + strings.Join(capped, ", "), Source: "apiserver"}
			if err := s.store.RecordEvent(ctx, ev); err != nil {
				s.log.Warn("record event", "node", node, "err", err)
			}
		}
		return stored == nil, nil
	}
}

// updateOwnInstanceStatus writes a node's status for one of its
// instances once admitInstanceStatus lets it, on the revision it was
// checked against, so that a rebinding in between cannot slip through
// (again when that moved, unless the caller named a revision).
func (s *Server) updateOwnInstanceStatus(ctx context.Context, node string, in *api.Instance, expect int64) error {
	for i := 0; ; i++ {
		var stored api.Instance
		if err := s.store.GetInto(ctx, &stored, in.Metadata.Namespace, in.Metadata.Name); err != nil {
			return err
		}
		if stored.Spec.Node != node {
			return &forbiddenField{node: node, ref: api.RefOf(in), field: "spec.node", reason: fmt.Sprintf("the instance is bound to %q", stored.Spec.Node)}
		}
		var n api.Node
		if err := s.store.GetInto(ctx, &n, "", node); err != nil {
			return fmt.Errorf("status of %s from node %q: %w", api.RefOf(in), node, err)
		}
		obj := *in
		if err := admitInstanceStatus(&n, &obj, &stored); err != nil {
			return err
		}
		rev := expect
		if rev == 0 {
			rev = stored.Metadata.Revision
		}
		err := s.store.UpdateStatus(ctx, &obj, rev)
		if expect == 0 && i < 20 && ctx.Err() == nil && errdefs.IsConflict(err) {
			continue
		}
		if err == nil {
			*in = obj
		}
		return err
	}
}
