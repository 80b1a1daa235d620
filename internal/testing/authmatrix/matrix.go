// Package authmatrix is the authorisation matrix: every route a node
// certificate can reach, sent as each kind of caller (the admin, node n1
// on its own objects, n1 on n2's, a joined node since deleted, no
// credential), each with the code it must get, attacks included: a pod
// subnet taken, a cordon lifted, 64,000 CPUs, labels, an instance IP
// outside the node's subnet, another node's instance, an event forged
// about another node, another node's image pulled from the registry.
// Run fails on any deviation.
//
// It runs against a loopback API server (internal/apiserver) and against
// a cluster on the network-namespace LAN with its controllers live
// (test/e2e). Every cell starts from objects made anew, which no
// controller acts for: the instances belong to a finished job (its
// instances stay as they are until it is removed), the unbound one asks
// for more CPUs than any node has (the scheduler leaves it), and the nodes
// are cordoned and heartbeat by the reset itself (their agents, if any,
// are stopped). A drain waits on job instances rather than evicting them.
package authmatrix

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
)

// The callers, in the order of each row's expected codes.
const (
	Admin   = iota // the bearer token
	Self           // node n1, on its own objects
	Other          // node n1, on node n2's objects
	Deleted        // node d1, joined and registered, then removed by an admin
	None           // TLS, no credentials
	Callers
)

var callerNames = [Callers]string{"admin", "n1 on its own", "n1 on n2's", "deleted node", "no credential"}

// Env is the cluster the matrix runs against.
type Env struct {
	// URL is the API server's.
	URL        string
	AdminToken string
	Admin      *client.Client
	// HTTP is each caller's HTTP client: trusting the cluster's CA, with
	// its node certificate (Self and Other: n1's; Deleted: d1's), and on
	// a LAN dialling from the node's host. The admin's gets the token.
	HTTP [Callers]*http.Client
	// Deleted is the name of the joined node an admin removed.
	Deleted string
	// Owner owns the matrix's instances: a finished job.
	Owner api.Owner
	// Images, when set, are the images of n1's and n2's instances (by
	// node name), which the registry the server mounts at /v2/ holds:
	// rows then pull them, each node its own only.
	Images map[string]Image
	// Routes and RouteOf, when set, are the server's (apiserver.Server's
	// Routes and RouteOf): Run then fails unless its rows reach every
	// route, and every kind of a route that takes {kind}, so that a route
	// added without rows here is found.
	Routes  []string
	RouteOf func(method, path string) string
}

// routeKeys are what covering route means: the route itself, or one per
// kind it serves when its pattern takes {kind} (every kind under /v1/,
// the namespaced ones under /v1/namespaces/).
func routeKeys(route string) []string {
	if !strings.Contains(route, "{kind}") {
		return []string{route}
	}
	var out []string
	for _, k := range api.Kinds {
		if strings.Contains(route, "/namespaces/") && !k.Namespaced() {
			continue
		}
		out = append(out, route+" kind="+k.Plural())
	}
	return out
}

// routeKey is the key of routeKeys a request for path that route serves
// counts for.
func routeKey(route, path string) string {
	_, pattern, _ := strings.Cut(route, " ")
	if !strings.Contains(pattern, "{kind}") {
		return route
	}
	p, _, _ := strings.Cut(path, "?")
	ps, seg := strings.Split(pattern, "/"), strings.Split(p, "/")
	for i, s := range ps {
		if s == "{kind}" && i < len(seg) {
			return route + " kind=" + seg[i]
		}
	}
	return route
}

// uncovered lists the keys of routes no row reaches.
func uncovered(routes []string, routeOf func(method, path string) string, rows []row, nodes []string) []string {
	seen := map[string]bool{}
	for _, r := range rows {
		for _, n := range nodes {
			p := r.path(n)
			if route := routeOf(r.method, p); route != "" {
				seen[routeKey(route, p)] = true
			}
		}
	}
	var out []string
	for _, route := range routes {
		for _, k := range routeKeys(route) {
			if !seen[k] {
				out = append(out, k)
			}
		}
	}
	return out
}

// Image is an image of the registry at /v2/, and digests of its parts.
type Image struct {
	Repository string // "demo/app"
	Manifest   string // its manifest's digest
	Layer      string // one of its layers' digest
}

// row is one request and the code each caller gets.
type row struct {
	name   string
	method string
	// path and body are made for the node the caller acts on: n2 for
	// the admin (so that deleting or revoking it spares n1), n1 for n1 on
	// its own, n2 for n1 on n2's, the deleted node for it.
	path func(node string) string
	body func(node string) string
	want [Callers]int
	// setup, when set, prepares the node's objects after the reset.
	setup func(t *testing.T, node string)
	// check, when set, looks at what a request that passed did.
	check func(t *testing.T, caller int)
}

// Run sends every row as every caller, each from a fresh reset.
//
// Long because it is the table itself: each row is a route, its callers and the
// answers it expects, read top to bottom like the matrix it checks.
func Run(t *testing.T, e Env) {
	ctx := t.Context()
	targets := [Callers]string{"n2", "n1", "n2", e.Deleted, "n1"}
	// The nodes' own pod subnets (/24s) when they have them, as on a LAN.
	subnets := map[string]string{"n1": "10.244.1.0/24", "n2": "10.244.2.0/24", e.Deleted: "10.244.9.0/24"}
	for _, n := range []string{"n1", "n2"} {
		if node, err := e.Admin.Nodes().Get(ctx, "", n); err == nil && node.Spec.PodSubnet != "" {
			subnets[n] = node.Spec.PodSubnet
		}
	}
	prefix := func(node string) string { return strings.TrimSuffix(subnets[node], ".0/24") }
	other := func(node string) string {
		if node == "n1" {
			return "n2"
		}
		return "n1"
	}
	owner := e.Owner
	reset := func() {
		t.Helper()
		for _, n := range []string{"n1", "n2"} {
			capy := api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000}
			node := &api.Node{Metadata: api.Metadata{Name: n},
				Spec: api.NodeSpec{Address: "10.0.0.1", PodSubnet: subnets[n]}}
			if stored, err := e.Admin.Nodes().Get(ctx, "", n); err == nil {
				node = stored
				node.Metadata.Revision = 0
			}
			node.Metadata.Labels = map[string]string{"zone": "a"}
			node.Spec.Unschedulable, node.Spec.Draining = true, false
			node.Spec.Capacity, node.Spec.CapacityLimit = capy, capy
			if _, err := e.Admin.Nodes().Apply(ctx, node); err != nil {
				t.Fatal(err)
			}
			// The node's lease, which no agent holds: else its instances would be given up as Lost.
			hb := &api.Node{Metadata: api.Metadata{Name: n}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}}
			if _, err := e.Admin.Nodes().UpdateStatus(ctx, hb); err != nil {
				t.Fatal(err)
			}
			img := "demo/busybox:1"
			if i, ok := e.Images[n]; ok {
				img = i.Repository + "@" + i.Manifest
			}
			in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-" + n},
				Spec: api.InstanceSpec{Template: &api.Template{Image: img}, Owner: owner, Node: n}}
			// Anew each time: a row may have given it up as Lost, for good.
			if err := e.Admin.Instances().Delete(ctx, "default", in.Metadata.Name, 0); err != nil && !errdefs.IsNotFound(err) {
				t.Fatal(err)
			}
			if _, err := e.Admin.Instances().Apply(ctx, in); err != nil {
				t.Fatal(err)
			}
			in.Status = api.InstanceStatus{Phase: api.PhaseRunning, IP: prefix(n) + ".5"}
			if _, err := e.Admin.Instances().UpdateStatus(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		if err := e.Admin.Instances().Delete(ctx, "default", "free", 0); err != nil && !errdefs.IsNotFound(err) {
			t.Fatal(err)
		}
		if _, err := e.Admin.Instances().Apply(ctx, &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "free"},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1", Resources: api.Resources{CPU: 1000}}, Owner: owner}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.Admin.Services().Apply(ctx, api.RunService("web", "demo/busybox:1", nil)); err != nil {
			t.Fatal(err)
		}
		for _, v := range []string{"vol-n1", "vol-n2", "vol-" + e.Deleted} {
			if err := e.Admin.Volumes().Delete(ctx, "default", v, 0); err != nil && !errdefs.IsNotFound(err) {
				t.Fatal(err)
			}
		}
	}
	reset()
	token, err := e.Admin.Tokens().Create(ctx, "matrix", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, _ := nodecert.NewKey("x")
	csrBody, _ := json.Marshal(map[string]string{"csr": string(csr)})

	// Bodies.
	stored := func(change func(n *api.Node)) func(string) string {
		return func(node string) string {
			n, err := e.Admin.Nodes().Get(ctx, "", node)
			if err != nil { // the deleted node: gone
				n = &api.Node{Metadata: api.Metadata{Name: node, Labels: map[string]string{}}}
			}
			n.Metadata.Revision = 0
			change(n)
			b, _ := json.Marshal(n)
			return string(b)
		}
	}
	status := func(phase api.Phase, ip func(node string) string) func(string) string {
		return func(node string) string {
			b, _ := json.Marshal(api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-" + node},
				Status: api.InstanceStatus{Phase: phase, IP: ip(node)}})
			return string(b)
		}
	}
	event := func(obj func(node string) api.ObjectRef) func(string) string {
		return func(node string) string {
			b, _ := json.Marshal(api.Event{Metadata: api.Metadata{Namespace: "default"}, Object: obj(node),
				Type: api.EventWarning, Reason: "Forged", Source: "controller", Time: time.Now()})
			return string(b)
		}
	}
	fixed := func(s string) func(string) string { return func(string) string { return s } }
	at := func(format string) func(string) string {
		return func(node string) string { return strings.ReplaceAll(format, "{node}", node) }
	}
	svc, _ := json.Marshal(api.RunService("web", "demo/busybox:1", []string{"sleep", "2"}))
	inst, _ := json.Marshal(api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-n1"},
		Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: owner, Node: "n2"}})

	const (
		ok  = http.StatusOK
		new = http.StatusCreated
		gon = http.StatusNoContent
		no  = http.StatusForbidden
		who = http.StatusUnauthorized
		// any is the answer of a caller authorised: the route's own,
		// whatever it is, so neither 401 nor 403.
		any = -1
	)
	rows := []row{
		{name: "health", method: "GET", path: at("/healthz"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "version", method: "GET", path: at("/v1/version"), want: [Callers]int{ok, no, no, who, who}},
		{name: "list nodes", method: "GET", path: at("/v1/nodes"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "get node", method: "GET", path: at("/v1/nodes/{node}"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "register as read", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(*api.Node) {}), want: [Callers]int{ok, ok, no, who, who}},
		{name: "attack: take a pod subnet", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.PodSubnet = subnets["n2"] }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: lift a cordon", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Unschedulable = false }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: drain by migration", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.DrainMigrate = true }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: end a drain", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Draining, n.Spec.Unschedulable = true, true }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: 64000 CPUs", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Capacity.MilliCPU = 64_000_000 }),
			want: [Callers]int{ok, ok, no, who, who}, check: func(t *testing.T, caller int) {
				if caller != Self {
					return
				}
				if n, _ := e.Admin.Nodes().Get(ctx, "", "n1"); n.Spec.Capacity.MilliCPU != 2000 {
					t.Errorf("n1 claimed 64000 CPUs and %dm were stored, want its limit 2000m", n.Spec.Capacity.MilliCPU)
				}
			}},
		{name: "attack: raise the capacity limit", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.CapacityLimit.MilliCPU = 64_000_000 }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: a label placement trusts", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Metadata.Labels["gpu"] = "yes" }),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "a reported label", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Metadata.Labels["node.berth/gpu"] = "yes" }),
			want: [Callers]int{ok, ok, no, who, who}},
		{name: "heartbeat", method: "PUT", path: at("/v1/nodes/{node}/status"), body: func(node string) string {
			return fmt.Sprintf(`{"metadata":{"name":%q},"status":{"condition":"Ready","lastHeartbeat":%q}}`, node, time.Now().UTC().Format(time.RFC3339))
		}, want: [Callers]int{ok, ok, no, who, who}},
		{name: "batch instance status", method: "PUT", path: at("/v1/nodes/{node}/instancestatus"), body: func(node string) string {
			return fmt.Sprintf(`{"items":[{"namespace":"default","name":"web-%s","status":{"phase":"Running","ip":"%s.8"}}]}`, node, prefix(node))
		}, want: [Callers]int{ok, ok, no, who, who}},
		{name: "delete a node", method: "DELETE", path: at("/v1/nodes/{node}"), want: [Callers]int{gon, no, no, who, who}},
		{name: "revoke a node", method: "POST", path: at("/v1/nodes/{node}/revoke"), want: [Callers]int{gon, no, no, who, who}},
		{name: "renew a certificate", method: "POST", path: at("/v1/nodes/{node}/certificate"), body: fixed(string(csrBody)), want: [Callers]int{no, ok, no, who, who}},
		{name: "assignments", method: "GET", path: at("/v1/nodes/{node}/assignments"), want: [Callers]int{ok, ok, no, who, who}},
		{name: "cordon", method: "POST", path: at("/v1/nodes/{node}/cordon"), want: [Callers]int{ok, no, no, who, who}},
		{name: "uncordon", method: "POST", path: at("/v1/nodes/{node}/uncordon"), want: [Callers]int{ok, no, no, who, who}},
		{name: "drain", method: "POST", path: at("/v1/nodes/{node}/drain"), want: [Callers]int{ok, no, no, who, who}},
		{name: "drain by migration", method: "POST", path: at("/v1/nodes/{node}/drain?migrate=1"), want: [Callers]int{ok, no, no, who, who}},
		{name: "drain by a bad flag", method: "POST", path: at("/v1/nodes/{node}/drain?migrate=maybe"), want: [Callers]int{http.StatusUnprocessableEntity, no, no, who, who}},
		{name: "list instances", method: "GET", path: at("/v1/instances"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "get an instance", method: "GET", path: at("/v1/namespaces/default/instances/web-{node}"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "instance status in the subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(n string) string { return prefix(n) + ".7" }), want: [Callers]int{ok, ok, no, who, who}},
		{name: "attack: instance ip outside the subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(string) string { return "192.0.2.66" }), want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: instance ip in another node's subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(n string) string { return prefix(other(n)) + ".7" }), want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: phase Lost", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseLost, func(string) string { return "" }), want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: status of an unbound instance", method: "PUT", path: at("/v1/namespaces/default/instances/free/status"),
			body: fixed(`{"metadata":{"namespace":"default","name":"free"},"status":{"phase":"Running"}}`), want: [Callers]int{ok, no, no, who, who}},
		{name: "attack: rebind by apply", method: "PUT", path: at("/v1/namespaces/default/instances/web-n1"), body: fixed(string(inst)), want: [Callers]int{ok, no, no, who, who}},
		{name: "bind", method: "POST", path: at("/v1/namespaces/default/instances/free/bind"), body: fixed(`{"node":"n1"}`), want: [Callers]int{ok, no, no, who, who}},
		// The instance runs the built-in executor: an admin is told it cannot move.
		{name: "attack: migrate an instance", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/migrate"),
			want: [Callers]int{http.StatusPreconditionFailed, no, no, who, who}},
		{name: "attack: migrate an instance after the restore (post-copy)", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/migrate?postCopy=true"),
			want: [Callers]int{http.StatusPreconditionFailed, no, no, who, who}},
		{name: "migrate by a bad postCopy flag", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/migrate?postCopy=maybe"),
			want: [Callers]int{http.StatusUnprocessableEntity, no, no, who, who}},
		// No agent has a tunnel here: an admin's restore gets that far.
		{name: "attack: restore an instance", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/restore"),
			want: [Callers]int{http.StatusServiceUnavailable, no, no, who, who}},
		{name: "restart an instance", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/restart"), want: [Callers]int{ok, no, no, who, who}},
		{name: "delete an instance", method: "DELETE", path: at("/v1/namespaces/default/instances/web-{node}"), want: [Callers]int{gon, no, no, who, who}},
		{name: "event about its node", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(n string) api.ObjectRef { return api.ObjectRef{Kind: api.KindNode, Name: n} }), want: [Callers]int{new, new, no, who, who},
			check: func(t *testing.T, caller int) {
				if caller != Self {
					return
				}
				evs, _, _ := e.Admin.Events().List(ctx, "default")
				for _, ev := range evs {
					if ev.Reason == "Forged" && ev.Object.Name == "n1" && ev.Source != "agent/n1" {
						t.Errorf("n1's event stored with source %q, want agent/n1", ev.Source)
					}
				}
			}},
		{name: "event about its instance", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(n string) api.ObjectRef {
				return api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-" + n}
			}), want: [Callers]int{new, new, no, who, who}},
		{name: "attack: event about a service", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(string) api.ObjectRef {
				return api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"}
			}),
			want: [Callers]int{new, no, no, who, who}},
		{name: "list events", method: "GET", path: at("/v1/events"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "list services", method: "GET", path: at("/v1/services"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "apply a service", method: "PUT", path: at("/v1/namespaces/default/services/web"), body: fixed(string(svc)), want: [Callers]int{ok, no, no, who, who}},
		{name: "scale a service", method: "POST", path: at("/v1/namespaces/default/services/web/scale"), body: fixed(`{"replicas":5}`), want: [Callers]int{ok, no, no, who, who}},
		{name: "restart a service", method: "POST", path: at("/v1/namespaces/default/services/web/restart"), want: [Callers]int{ok, no, no, who, who}},
		{name: "delete a service", method: "DELETE", path: at("/v1/namespaces/default/services/web"), want: [Callers]int{gon, no, no, who, who}},
		{name: "list jobs", method: "GET", path: at("/v1/jobs"), want: [Callers]int{ok, no, no, who, who}},
		{name: "read an instance's data (its registry credentials too)", method: "GET", path: at("/v1/namespaces/default/instances/web-{node}/data"),
			want: [Callers]int{ok, ok, no, who, who}},
		{name: "read the registry settings", method: "GET", path: at("/v1/registry"), want: [Callers]int{ok, ok, ok, who, who}},
		{name: "attack: let agents pull directly", method: "PUT", path: at("/v1/registry"), body: fixed(`{"agentsPullDirect":true}`),
			want: [Callers]int{ok, no, no, who, who}},
		{name: "list tokens", method: "GET", path: at("/v1/tokens"), want: [Callers]int{ok, no, no, who, who}},
		{name: "create a token", method: "POST", path: at("/v1/tokens"), body: fixed(`{}`), want: [Callers]int{new, no, no, who, who}},
		{name: "revoke a token", method: "DELETE", path: at("/v1/tokens/aaaaaaaa"), want: [Callers]int{http.StatusNotFound, no, no, who, who}},
		{name: "join", method: "POST", path: at("/v1/join"), body: func(node string) string {
			b, _ := json.Marshal(map[string]string{"token": token.Token, "node": "j-" + node + fmt.Sprint(time.Now().UnixNano()), "csr": string(csr)})
			return string(b)
		}, want: [Callers]int{ok, ok, ok, who, ok}},
	}
	// A named volume: a node records those its instances use, on itself.
	volume := func(on func(node string) string) func(string) string {
		return func(node string) string {
			return fmt.Sprintf(`{"spec":{"node":%q,"path":"/var/lib/berth/volumes/default/data"}}`, on(node))
		}
	}
	usesVolume := func(t *testing.T, node string) {
		in, err := e.Admin.Instances().Get(ctx, "default", "web-"+node)
		if err != nil {
			return // the deleted node has none
		}
		in.Metadata.Revision = 0
		in.Spec.Template.Volumes = []api.VolumeMount{{Name: "vol-" + node, Path: "/data"}}
		if _, err := e.Admin.Instances().Apply(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	rows = append(rows,
		row{name: "record its instance's volume", method: "PUT", path: at("/v1/namespaces/default/volumes/vol-{node}"), body: volume(func(n string) string { return n }),
			setup: usesVolume, want: [Callers]int{new, new, no, who, who}},
		row{name: "attack: a volume on another node", method: "PUT", path: at("/v1/namespaces/default/volumes/vol-{node}"), body: volume(other),
			setup: usesVolume, want: [Callers]int{new, no, no, who, who}},
		row{name: "attack: squat a volume no instance of it uses", method: "PUT", path: at("/v1/namespaces/default/volumes/vol-{node}"), body: volume(func(n string) string { return n }),
			want: [Callers]int{new, no, no, who, who}},
		row{name: "attack: bring back a lost instance", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body:  status(api.PhaseRunning, func(n string) string { return prefix(n) + ".7" }),
			setup: func(t *testing.T, node string) { setPhase(t, e, node, api.PhaseLost) }, want: [Callers]int{any, http.StatusPreconditionFailed, no, who, who}},
		row{name: "attack: bring back a lost instance in a batch", method: "PUT", path: at("/v1/nodes/{node}/instancestatus"), body: func(node string) string {
			return fmt.Sprintf(`{"items":[{"namespace":"default","name":"web-%s","status":{"phase":"Running","ip":"%s.8"}}]}`, node, prefix(node))
		}, setup: func(t *testing.T, node string) { setPhase(t, e, node, api.PhaseLost) }, want: [Callers]int{ok, ok, no, who, who},
			check: func(t *testing.T, caller int) {
				if in, _ := e.Admin.Instances().Get(ctx, "default", "web-n1"); caller == Self && in.Status.Phase != api.PhaseLost {
					t.Errorf("n1 brought its lost instance back as %s in a batch", in.Status.Phase)
				}
			}},
		row{name: "attack: half a megabyte of status message", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: func(node string) string {
				b, _ := json.Marshal(api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-" + node},
					Status: api.InstanceStatus{Phase: api.PhaseFailed, Message: strings.Repeat("x", 512<<10), Reason: strings.Repeat("r", 4096)}})
				return string(b)
			}, want: [Callers]int{ok, ok, no, who, who}, check: func(t *testing.T, caller int) {
				in, err := e.Admin.Instances().Get(ctx, "default", "web-"+targets[caller])
				if err == nil && (len(in.Status.Message) > api.MaxStatusMessage || len(in.Status.Reason) > api.MaxStatusWord) {
					t.Errorf("%s stored a status message of %d bytes and a reason of %d, want at most %d and %d", callerNames[caller],
						len(in.Status.Message), len(in.Status.Reason), api.MaxStatusMessage, api.MaxStatusWord)
				}
			}},
		row{name: "attack: half a megabyte of status message in a batch", method: "PUT", path: at("/v1/nodes/{node}/instancestatus"), body: func(node string) string {
			return fmt.Sprintf(`{"items":[{"namespace":"default","name":"web-%s","status":{"phase":"Failed","message":%q}}]}`, node, strings.Repeat("x", 512<<10))
		}, want: [Callers]int{ok, ok, no, who, who}, check: func(t *testing.T, caller int) {
			in, err := e.Admin.Instances().Get(ctx, "default", "web-"+targets[caller])
			if err == nil && len(in.Status.Message) > api.MaxStatusMessage {
				t.Errorf("%s stored a status message of %d bytes in a batch, want at most %d", callerNames[caller], len(in.Status.Message), api.MaxStatusMessage)
			}
		}},
		row{name: "attack: half a megabyte of heartbeat message", method: "PUT", path: at("/v1/nodes/{node}/status"), body: func(node string) string {
			return fmt.Sprintf(`{"metadata":{"name":%q},"status":{"condition":"Ready","lastHeartbeat":%q,"message":%q}}`, node, time.Now().UTC().Format(time.RFC3339), strings.Repeat("x", 512<<10))
		}, want: [Callers]int{ok, ok, no, who, who}, check: func(t *testing.T, caller int) {
			n, err := e.Admin.Nodes().Get(ctx, "", targets[caller])
			if err == nil && len(n.Status.Message) > api.MaxStatusMessage {
				t.Errorf("%s stored a node status message of %d bytes, want at most %d", callerNames[caller], len(n.Status.Message), api.MaxStatusMessage)
			}
		}},
		row{name: "attack: an event of half a megabyte", method: "POST", path: at("/v1/namespaces/default/events"), body: func(node string) string {
			b, _ := json.Marshal(api.Event{Metadata: api.Metadata{Namespace: "default"}, Object: api.ObjectRef{Kind: api.KindNode, Name: node},
				Type: api.EventWarning, Reason: "Big", Message: strings.Repeat("x", 512<<10), Time: time.Now()})
			return string(b)
		}, want: [Callers]int{new, new, no, who, who}, check: func(t *testing.T, caller int) {
			evs, _, _ := e.Admin.Events().List(ctx, "default")
			for _, ev := range evs {
				if ev.Reason == "Big" && len(ev.Message) > api.MaxStatusMessage {
					t.Errorf("%s recorded an event message of %d bytes, want at most %d", callerNames[caller], len(ev.Message), api.MaxStatusMessage)
				}
			}
		}},
		row{name: "attack: an address of a kilobyte", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Address = strings.Repeat("a", 1024) }),
			want: [Callers]int{http.StatusUnprocessableEntity, http.StatusUnprocessableEntity, no, who, who}},
		row{name: "trigger a cron job", method: "POST", path: at("/v1/namespaces/default/cronjobs/nightly/trigger"), want: [Callers]int{any, no, no, who, who}},
		row{name: "node metrics", method: "GET", path: at("/v1/nodes/{node}/metrics"), want: [Callers]int{any, no, no, who, who}},
		row{name: "open a tunnel (no upgrade)", method: "GET", path: at("/v1/tunnel/{node}"), want: [Callers]int{any, any, no, who, who}},
		row{name: "profiles", method: "GET", path: at("/debug/pprof/"), want: [Callers]int{ok, no, no, who, who}},
		row{name: "attack: copy into another's instance", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/cp?path=/tmp"), want: [Callers]int{any, no, no, who, who}},
		row{name: "attack: checkpoint an instance", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/checkpoint"), want: [Callers]int{any, no, no, who, who}},
	)
	for _, op := range []string{"logs", "attach", "exec?cmd=true", "cp?path=/etc", "portforward?port=80", "stats"} {
		rows = append(rows, row{name: "attack: an instance's " + op, method: "GET", path: at("/v1/namespaces/default/instances/web-{node}/" + op),
			want: [Callers]int{any, no, no, who, who}})
	}
	// Every kind through the routes that take any: a node reads the kinds
	// it needs (not secrets, configs, jobs or cron jobs) and writes none
	// of them there (its own writes are the rows above).
	for _, k := range api.Kinds {
		p := k.Plural()
		read := no
		if k == api.KindNode || k == api.KindService || k == api.KindInstance || k == api.KindEvent || k == api.KindVolume {
			read = any
		}
		rows = append(rows, row{name: "list all " + p, method: "GET", path: at("/v1/" + p), want: [Callers]int{ok, read, read, who, who}})
		if !k.Namespaced() {
			continue
		}
		obj := "/v1/namespaces/default/" + p + "/x"
		// What a node writes of these (its instances' status, its
		// volumes) is the rows above: here x does not exist, and the
		// status of an instance that does not exist is not found.
		write, status := no, no
		if k == api.KindInstance {
			status = http.StatusNotFound
		}
		rows = append(rows,
			row{name: "list " + p + " in a namespace", method: "GET", path: at("/v1/namespaces/default/" + p), want: [Callers]int{ok, read, read, who, who}},
			row{name: "get one of the " + p, method: "GET", path: at(obj), want: [Callers]int{any, read, read, who, who}},
			row{name: "watch " + p, method: "GET", path: at("/v1/namespaces/default/" + p + "?watch=1&revision=999999999"), want: [Callers]int{any, read, read, who, who}},
			row{name: "attack: write one of the " + p, method: "PUT", path: at(obj), body: fixed(`{}`), want: [Callers]int{any, write, write, who, who}},
			row{name: "attack: write the status of one of the " + p, method: "PUT", path: at(obj + "/status"), body: fixed(`{}`), want: [Callers]int{any, status, status, who, who}},
			row{name: "attack: delete one of the " + p, method: "DELETE", path: at(obj), want: [Callers]int{any, no, no, who, who}},
			row{name: "attack: restart one of the " + p, method: "POST", path: at(obj + "/restart"), want: [Callers]int{any, no, no, who, who}},
		)
	}
	if e.Images != nil {
		// The node's image, or n1's for a node without one (the deleted).
		image := func(node string) Image {
			if i, ok := e.Images[node]; ok {
				return i
			}
			return e.Images["n1"]
		}
		reg := func(f func(i Image) string) func(string) string {
			return func(node string) string { return f(image(node)) }
		}
		rows = append(rows,
			row{name: "pull its image's manifest", method: "GET", path: reg(func(i Image) string { return "/v2/" + i.Repository + "/manifests/" + i.Manifest }),
				want: [Callers]int{ok, ok, no, who, who}},
			row{name: "pull its image's layer", method: "GET", path: reg(func(i Image) string { return "/v2/" + i.Repository + "/blobs/" + i.Layer }),
				want: [Callers]int{ok, ok, no, who, who}},
			row{name: "attack: another image's layer under its own image's name", method: "GET", path: func(node string) string {
				return "/v2/" + image(other(node)).Repository + "/blobs/" + image(node).Layer
			}, want: [Callers]int{ok, ok, no, who, who}},
			row{name: "list its repository's tags", method: "GET", path: reg(func(i Image) string { return "/v2/" + i.Repository + "/tags/list" }),
				want: [Callers]int{ok, ok, no, who, who}},
			row{name: "attack: list the registry's repositories", method: "GET", path: at("/v2/_catalog"),
				want: [Callers]int{ok, no, no, who, who}},
			row{name: "attack: push to the registry", method: "POST", path: reg(func(i Image) string { return "/v2/" + i.Repository + "/blobs/uploads/" }),
				want: [Callers]int{http.StatusAccepted, no, no, who, who}},
		)
	}

	if e.Routes != nil {
		if left := uncovered(e.Routes, e.RouteOf, rows, targets[:]); len(left) > 0 {
			t.Fatalf("the matrix has no row for %d routes of the server; add them, with what each caller gets:\n%s", len(left), strings.Join(left, "\n"))
		}
	}
	send := func(caller int, method, path, body string) (int, string) {
		req, _ := http.NewRequestWithContext(ctx, method, e.URL+path, strings.NewReader(body))
		if caller == Admin {
			req.Header.Set("Authorization", "Bearer "+e.AdminToken)
		}
		resp, err := e.HTTP[caller].Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Contains(path, "watch=1") {
			return resp.StatusCode, "" // a stream, which stays open
		}
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var failed []string
	// A cell that wrote nothing (a read, or a write refused) leaves the
	// objects as the reset made them: the next cell starts from them as
	// they are, unless the last reset is a while ago (the nodes' leases).
	dirty, lastReset := true, time.Time{}
	for _, r := range rows {
		for caller := range Callers {
			if dirty || r.setup != nil || time.Since(lastReset) > 2*time.Second {
				reset()
				dirty, lastReset = false, time.Now()
			}
			node := targets[caller]
			body := ""
			if r.body != nil {
				body = r.body(node)
			}
			if r.setup != nil {
				r.setup(t, node)
			}
			got, msg := send(caller, r.method, r.path(node), body)
			dirty = r.setup != nil || (r.method != http.MethodGet && got/100 != 4)
			if want := r.want[caller]; got != want && (want != any || got == who || got == no) {
				failed = append(failed, fmt.Sprintf("%-45s %-14s %s %s: got %d, want %d: %s", r.name, callerNames[caller], r.method, r.path(node), got, r.want[caller], strings.TrimSpace(msg)))
				continue
			}
			// The registry at /v2/ answers in the distribution spec's shape.
			if got == no && !strings.Contains(msg, `"Forbidden"`) && !(strings.HasPrefix(r.path(node), "/v2/") && strings.Contains(msg, `"DENIED"`)) {
				t.Errorf("%s as %s: a 403 without the Forbidden code: %s", r.name, callerNames[caller], msg)
			}
			if r.check != nil && got/100 == 2 {
				r.check(t, caller)
			}
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d cells deviate:\n%s", len(failed), len(rows)*Callers, strings.Join(failed, "\n"))
	}
	t.Logf("%d routes × %d callers as expected", len(rows), Callers)
}

// setPhase gives the node's instance web-NODE the phase, as the control
// plane would (Lost when it gives the node up).
func setPhase(t *testing.T, e Env, node string, phase api.Phase) {
	t.Helper()
	in, err := e.Admin.Instances().Get(t.Context(), "default", "web-"+node)
	if err != nil {
		return // the deleted node has none
	}
	in.Status.Phase = phase
	if _, err := e.Admin.Instances().UpdateStatus(t.Context(), in); err != nil {
		t.Fatal(err)
	}
}
