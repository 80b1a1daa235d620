package apiserver_test

import (
	"crypto/tls"
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

// The callers of the authorisation matrix, in the order of each row's
// expected codes.
const (
	asAdmin   = iota // the bearer token
	asSelf           // node n1, on its own objects
	asOther          // node n1, on node n2's objects
	asDeleted        // node d1, joined and registered, then removed by an admin
	asNone           // TLS, no credentials
	callers
)

var callerNames = [callers]string{"admin", "n1 on its own", "n1 on n2's", "deleted node", "no credential"}

// matrixRow is one request and the code each caller gets.
type matrixRow struct {
	name   string
	method string
	// path and body are made for the node the caller acts on: n2 for
	// the admin (so that deleting or revoking it spares n1), n1 for n1 on
	// its own, n2 for n1 on n2's, d1 for the removed node.
	path func(node string) string
	body func(node string) string
	want [callers]int
	// check, when set, looks at what a request that passed did.
	check func(t *testing.T, caller int)
}

// TestAuthorizationMatrix sends every route a node certificate can reach
// as each kind of caller and fails on any code other than the one
// expected, attacks included: a pod subnet taken, a cordon lifted,
// 64,000 CPUs, labels, an instance IP outside the node's subnet, another
// node's instance, an event forged about another node. It runs on one
// loopback cluster (a real API server over TLS with a real embedded etcd),
// reset between rows.
func TestAuthorizationMatrix(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()

	n1 := c.joinCreds(t, c.url, "n1")
	d1 := c.joinCreds(t, c.url, "d1")
	d1c, _ := client.New(c.url, client.WithNodeCredentials(d1))
	if _, err := d1c.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "d1"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Nodes().Delete(ctx, "", "d1", 0); err != nil {
		t.Fatal(err)
	}
	tlsOf := func(nc *client.NodeCredentials) *tls.Config {
		cfg, err := nc.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	var cfgs [callers]*tls.Config
	cfgs[asAdmin], cfgs[asSelf], cfgs[asOther], cfgs[asDeleted], cfgs[asNone] = c.trustOnly(), tlsOf(n1), tlsOf(n1), tlsOf(d1), c.trustOnly()
	targets := [callers]string{"n2", "n1", "n2", "d1", "n1"}

	subnet := func(node string) string {
		switch node {
		case "n1":
			return "10.244.1"
		case "n2":
			return "10.244.2"
		}
		return "10.244.9"
	}
	reset := func() {
		t.Helper()
		for _, n := range []string{"n1", "n2"} {
			capy := api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30, Pids: 1000}
			node := &api.Node{Metadata: api.Metadata{Name: n, Labels: map[string]string{"zone": "a"}},
				Spec: api.NodeSpec{Address: "10.0.0.1", PodSubnet: subnet(n) + ".0/24", Unschedulable: true, Capacity: capy, CapacityLimit: capy}}
			if _, err := c.admin.Nodes().Apply(ctx, node); err != nil {
				t.Fatal(err)
			}
			in := &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "web-" + n},
				Spec: api.InstanceSpec{Template: api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}, Node: n}}
			// Anew each time: a row may have given it up as Lost, for good.
			if err := c.admin.Instances().Delete(ctx, "default", in.Metadata.Name, 0); err != nil && !errdefs.IsNotFound(err) {
				t.Fatal(err)
			}
			if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
				t.Fatal(err)
			}
			in.Status = api.InstanceStatus{Phase: api.PhaseRunning, IP: subnet(n) + ".5"}
			if _, err := c.admin.Instances().UpdateStatus(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.admin.Instances().Apply(ctx, &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: "free"},
			Spec: api.InstanceSpec{Template: api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}); err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.Services().Apply(ctx, api.RunService("web", "demo/busybox:1", nil)); err != nil {
			t.Fatal(err)
		}
	}
	reset()
	token, err := c.admin.Tokens().Create(ctx, "matrix", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	csr, _, _ := nodecert.NewKey("x")
	csrBody, _ := json.Marshal(map[string]string{"csr": string(csr)})

	// Bodies.
	stored := func(change func(n *api.Node)) func(string) string {
		return func(node string) string {
			n, err := c.admin.Nodes().Get(ctx, "", node)
			if err != nil { // d1: gone
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
		Spec: api.InstanceSpec{Template: api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}, Node: "n2"}})

	const (
		ok  = http.StatusOK
		new = http.StatusCreated
		gon = http.StatusNoContent
		no  = http.StatusForbidden
		who = http.StatusUnauthorized
	)
	rows := []matrixRow{
		{name: "health", method: "GET", path: at("/healthz"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "version", method: "GET", path: at("/v1/version"), want: [callers]int{ok, no, no, who, who}},
		{name: "list nodes", method: "GET", path: at("/v1/nodes"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "get node", method: "GET", path: at("/v1/nodes/{node}"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "register as read", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(*api.Node) {}), want: [callers]int{ok, ok, no, who, who}},
		{name: "attack: take a pod subnet", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.PodSubnet = "10.244.2.0/24" }),
			want: [callers]int{ok, no, no, who, who}},
		{name: "attack: lift a cordon", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Unschedulable = false }),
			want: [callers]int{ok, no, no, who, who}},
		{name: "attack: end a drain", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Draining, n.Spec.Unschedulable = true, true }),
			want: [callers]int{ok, no, no, who, who}},
		{name: "attack: 64000 CPUs", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.Capacity.MilliCPU = 64_000_000 }),
			want: [callers]int{ok, ok, no, who, who}, check: func(t *testing.T, caller int) {
				if caller != asSelf {
					return
				}
				if n, _ := c.admin.Nodes().Get(ctx, "", "n1"); n.Spec.Capacity.MilliCPU != 2000 {
					t.Errorf("n1 claimed 64000 CPUs and %dm were stored, want its limit 2000m", n.Spec.Capacity.MilliCPU)
				}
			}},
		{name: "attack: raise the capacity limit", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Spec.CapacityLimit.MilliCPU = 64_000_000 }),
			want: [callers]int{ok, no, no, who, who}},
		{name: "attack: a label placement trusts", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Metadata.Labels["gpu"] = "yes" }),
			want: [callers]int{ok, no, no, who, who}},
		{name: "a reported label", method: "PUT", path: at("/v1/nodes/{node}"), body: stored(func(n *api.Node) { n.Metadata.Labels["node.berth/gpu"] = "yes" }),
			want: [callers]int{ok, ok, no, who, who}},
		{name: "heartbeat", method: "PUT", path: at("/v1/nodes/{node}/status"), body: func(node string) string {
			return fmt.Sprintf(`{"metadata":{"name":%q},"status":{"condition":"Ready","lastHeartbeat":%q}}`, node, time.Now().UTC().Format(time.RFC3339))
		}, want: [callers]int{ok, ok, no, who, who}},
		{name: "batch instance status", method: "PUT", path: at("/v1/nodes/{node}/instancestatus"), body: func(node string) string {
			return fmt.Sprintf(`{"items":[{"namespace":"default","name":"web-%s","status":{"phase":"Running","ip":"%s.8"}}]}`, node, subnet(node))
		}, want: [callers]int{ok, ok, no, who, who}},
		{name: "delete a node", method: "DELETE", path: at("/v1/nodes/{node}"), want: [callers]int{gon, no, no, who, who}},
		{name: "revoke a node", method: "POST", path: at("/v1/nodes/{node}/revoke"), want: [callers]int{gon, no, no, who, who}},
		{name: "renew a certificate", method: "POST", path: at("/v1/nodes/{node}/certificate"), body: fixed(string(csrBody)), want: [callers]int{no, ok, no, who, who}},
		{name: "assignments", method: "GET", path: at("/v1/nodes/{node}/assignments"), want: [callers]int{ok, ok, no, who, who}},
		{name: "cordon", method: "POST", path: at("/v1/nodes/{node}/cordon"), want: [callers]int{ok, no, no, who, who}},
		{name: "uncordon", method: "POST", path: at("/v1/nodes/{node}/uncordon"), want: [callers]int{ok, no, no, who, who}},
		{name: "drain", method: "POST", path: at("/v1/nodes/{node}/drain"), want: [callers]int{ok, no, no, who, who}},
		{name: "list instances", method: "GET", path: at("/v1/instances"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "get an instance", method: "GET", path: at("/v1/namespaces/default/instances/web-{node}"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "instance status in the subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(n string) string { return subnet(n) + ".7" }), want: [callers]int{ok, ok, no, who, who}},
		{name: "attack: instance ip outside the subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(string) string { return "192.0.2.66" }), want: [callers]int{ok, no, no, who, who}},
		{name: "attack: instance ip in another node's subnet", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseRunning, func(string) string { return "10.244.3.7" }), want: [callers]int{ok, no, no, who, who}},
		{name: "attack: phase Lost", method: "PUT", path: at("/v1/namespaces/default/instances/web-{node}/status"),
			body: status(api.PhaseLost, func(string) string { return "" }), want: [callers]int{ok, no, no, who, who}},
		{name: "attack: status of an unbound instance", method: "PUT", path: at("/v1/namespaces/default/instances/free/status"),
			body: fixed(`{"metadata":{"namespace":"default","name":"free"},"status":{"phase":"Running"}}`), want: [callers]int{ok, no, no, who, who}},
		{name: "attack: rebind by apply", method: "PUT", path: at("/v1/namespaces/default/instances/web-n1"), body: fixed(string(inst)), want: [callers]int{ok, no, no, who, who}},
		{name: "bind", method: "POST", path: at("/v1/namespaces/default/instances/free/bind"), body: fixed(`{"node":"n1"}`), want: [callers]int{ok, no, no, who, who}},
		{name: "restart an instance", method: "POST", path: at("/v1/namespaces/default/instances/web-{node}/restart"), want: [callers]int{ok, no, no, who, who}},
		{name: "delete an instance", method: "DELETE", path: at("/v1/namespaces/default/instances/web-{node}"), want: [callers]int{gon, no, no, who, who}},
		{name: "event about its node", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(n string) api.ObjectRef { return api.ObjectRef{Kind: api.KindNode, Name: n} }), want: [callers]int{new, new, no, who, who},
			check: func(t *testing.T, caller int) {
				if caller != asSelf {
					return
				}
				evs, _, _ := c.admin.Events().List(ctx, "default")
				for _, ev := range evs {
					if ev.Reason == "Forged" && ev.Object.Name == "n1" && ev.Source != "agent/n1" {
						t.Errorf("n1's event stored with source %q, want agent/n1", ev.Source)
					}
				}
			}},
		{name: "event about its instance", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(n string) api.ObjectRef {
				return api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-" + n}
			}), want: [callers]int{new, new, no, who, who}},
		{name: "attack: event about a service", method: "POST", path: at("/v1/namespaces/default/events"),
			body: event(func(string) api.ObjectRef {
				return api.ObjectRef{Kind: api.KindService, Namespace: "default", Name: "web"}
			}),
			want: [callers]int{new, no, no, who, who}},
		{name: "list events", method: "GET", path: at("/v1/events"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "list services", method: "GET", path: at("/v1/services"), want: [callers]int{ok, ok, ok, who, who}},
		{name: "apply a service", method: "PUT", path: at("/v1/namespaces/default/services/web"), body: fixed(string(svc)), want: [callers]int{ok, no, no, who, who}},
		{name: "scale a service", method: "POST", path: at("/v1/namespaces/default/services/web/scale"), body: fixed(`{"replicas":5}`), want: [callers]int{ok, no, no, who, who}},
		{name: "restart a service", method: "POST", path: at("/v1/namespaces/default/services/web/restart"), want: [callers]int{ok, no, no, who, who}},
		{name: "delete a service", method: "DELETE", path: at("/v1/namespaces/default/services/web"), want: [callers]int{gon, no, no, who, who}},
		{name: "list jobs", method: "GET", path: at("/v1/jobs"), want: [callers]int{ok, no, no, who, who}},
		{name: "list tokens", method: "GET", path: at("/v1/tokens"), want: [callers]int{ok, no, no, who, who}},
		{name: "create a token", method: "POST", path: at("/v1/tokens"), body: fixed(`{}`), want: [callers]int{new, no, no, who, who}},
		{name: "revoke a token", method: "DELETE", path: at("/v1/tokens/aaaaaaaa"), want: [callers]int{http.StatusNotFound, no, no, who, who}},
		{name: "join", method: "POST", path: at("/v1/join"), body: func(node string) string {
			b, _ := json.Marshal(map[string]string{"token": token.Token, "node": "j-" + node + fmt.Sprint(time.Now().UnixNano()), "csr": string(csr)})
			return string(b)
		}, want: [callers]int{ok, ok, ok, who, ok}},
	}

	send := func(cfg *tls.Config, method, path, body string, admin bool) (int, string) {
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
		defer hc.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(ctx, method, c.url+path, strings.NewReader(body))
		if admin {
			req.Header.Set("Authorization", "Bearer "+adminToken)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	var failed []string
	for _, row := range rows {
		for caller := range callers {
			reset()
			node := targets[caller]
			body := ""
			if row.body != nil {
				body = row.body(node)
			}
			got, msg := send(cfgs[caller], row.method, row.path(node), body, caller == asAdmin)
			if got != row.want[caller] {
				failed = append(failed, fmt.Sprintf("%-45s %-14s %s %s: got %d, want %d: %s", row.name, callerNames[caller], row.method, row.path(node), got, row.want[caller], strings.TrimSpace(msg)))
				continue
			}
			if got == no && !strings.Contains(msg, `"Forbidden"`) {
				t.Errorf("%s as %s: a 403 without the Forbidden code: %s", row.name, callerNames[caller], msg)
			}
			if row.check != nil && got/100 == 2 {
				row.check(t, caller)
			}
		}
	}
	if len(failed) > 0 {
		t.Fatalf("%d of %d cells deviate:\n%s", len(failed), len(rows)*callers, strings.Join(failed, "\n"))
	}
	t.Logf("%d routes × %d callers as expected", len(rows), callers)
}
