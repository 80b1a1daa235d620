package apiserver_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/store"
)

// agentStandIn serves a node's end of its tunnel with h, as the agent's
// RemoteHandler would, and records the paths asked for.
type agentStandIn struct {
	mu   sync.Mutex
	seen []string
}

func (a *agentStandIn) paths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.seen...)
}

func (a *agentStandIn) serve(t *testing.T, nc *client.Client, node string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	conn, err := nc.OpenTunnel(ctx, node)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Server(conn, client.TunnelConfig(nc.Local()))
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.mu.Lock()
		a.seen = append(a.seen, r.URL.Path)
		a.mu.Unlock()
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "the admin's token reached the agent", http.StatusTeapot)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.berth.frames")
		fw := client.NewFrameWriter(w, nil)
		_, _ = io.WriteString(fw.Stream(client.StreamStdout), "from "+node+"\n")
		_ = fw.Close()
	})}
	go func() { _ = hs.Serve(sess) }()
	t.Cleanup(func() {
		cancel()
		hs.Close()
		sess.Close()
	})
}

// TestRemoteOperationsAreForAdmins checks who may reach instances
// through the API: admins reach any node's instances over its tunnel;
// a node certificate may neither reach another node's instance (nor its
// own), nor open another node's tunnel, nor scrape metrics.
func TestRemoteOperationsAreForAdmins(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1, n2 := c.join(t, "n1"), c.join(t, "n2")
	for _, n := range []string{"n1", "n2"} {
		if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	for name, node := range map[string]string{"web-1": "n1", "web-2": "n2"} {
		in := &api.Instance{
			Metadata: api.Metadata{Name: name, Namespace: "default"},
			Spec:     api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}},
		}
		if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
			t.Fatal(err)
		}
		if _, err := c.admin.Instances().Bind(ctx, "default", name, node, nil, 0); err != nil {
			t.Fatal(err)
		}
	}
	var agent2 agentStandIn
	agent2.serve(t, n2, "n2")

	// A node may not open another node's tunnel.
	if _, err := n1.OpenTunnel(ctx, "n2"); !errdefs.IsForbidden(err) || !strings.Contains(err.Error(), `tunnel of node "n2"`) {
		t.Fatalf("n1 opening n2's tunnel: got %v, want 403 naming the tunnel", err)
	}

	// The admin reaches web-2 on n2, through n2's tunnel.
	var out bytes.Buffer
	eventually(t, 5*time.Second, func() bool {
		out.Reset()
		return c.admin.InstanceLogs(ctx, "default", "web-2", client.LogOptions{}, &out, io.Discard) == nil
	})
	if out.String() != "from n2\n" {
		t.Fatalf("admin's logs of web-2: %q, want n2's answer", out.String())
	}
	// web-1's node has no tunnel: 503 naming it.
	err := c.admin.InstanceLogs(ctx, "default", "web-1", client.LogOptions{}, io.Discard, io.Discard)
	if !errdefs.IsUnavailable(err) || !strings.Contains(err.Error(), `node "n1"`) {
		t.Fatalf("logs of an instance whose node has no tunnel: %v, want 503 naming n1", err)
	}

	before := len(agent2.paths())
	for _, target := range []string{"web-2", "web-1"} {
		for _, tc := range []struct {
			name string
			do   func() error
		}{
			{"logs", func() error {
				return n1.InstanceLogs(ctx, "default", target, client.LogOptions{}, io.Discard, io.Discard)
			}},
			{"exec", func() error {
				_, err := n1.Exec(ctx, "default", target, client.ExecOptions{Command: []string{"id"}})
				return err
			}},
			{"attach", func() error { _, err := n1.Attach(ctx, "default", target, io.Discard, io.Discard); return err }},
			{"cp from", func() error { _, err := n1.CopyFrom(ctx, "default", target, "/etc/passwd"); return err }},
			{"cp to", func() error { return n1.CopyTo(ctx, "default", target, "/tmp", strings.NewReader("")) }},
			{"port-forward", func() error { _, err := n1.PortForward(ctx, "default", target, 80); return err }},
			{"stats", func() error { _, err := n1.Stats(ctx, "default", target); return err }},
			{"node metrics", func() error { _, err := n1.NodeMetrics(ctx, "n2"); return err }},
			{"server metrics", func() error { _, err := n1.Metrics(ctx); return err }},
		} {
			t.Run(tc.name+" of "+target, func(t *testing.T) {
				err := tc.do()
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Status != http.StatusForbidden {
					t.Fatalf("node n1: got %v, want a 403", err)
				}
				if !strings.Contains(err.Error(), `node "n1"`) {
					t.Errorf("message %q does not name the node", err)
				}
			})
		}
	}
	if got := agent2.paths(); len(got) != before {
		t.Fatalf("n2's agent was asked %v for node n1", got[before:])
	}
}

// bindTo makes instance name of service web in namespace default, bound
// to node (made first, when it is not there).
func bindTo(t *testing.T, c *cluster, name, node string) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.admin.Nodes().Get(ctx, "", node); errdefs.IsNotFound(err) {
		if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: node}}); err != nil {
			t.Fatal(err)
		}
	}
	in := &api.Instance{
		Metadata: api.Metadata{Name: name, Namespace: "default"},
		Spec:     api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}},
	}
	if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin.Instances().Bind(ctx, "default", name, node, nil, 0); err != nil {
		t.Fatal(err)
	}
}

// auditEvents lists the audit events about instance name, by reason
// (and port, for a port-forward's: "PortForward 80").
func auditEvents(t *testing.T, c *cluster, name string) map[string][]*api.Event {
	t.Helper()
	evs, _, err := c.admin.Events().List(t.Context(), "default")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]*api.Event{}
	for _, ev := range evs {
		if ev.Object.Name != name || !store.IsAuditName(ev.Metadata.Name) || ev.Source != "apiserver" {
			continue
		}
		key := ev.Reason
		if m := forwardedPort.FindStringSubmatch(ev.Message); ev.Reason == "PortForward" && m != nil {
			key += " " + m[1]
		}
		out[key] = append(out[key], ev)
	}
	return out
}

var forwardedPort = regexp.MustCompile(`port (\d+)`)

// TestRemoteOperationsAreAudited checks that each way into an instance
// leaves an audit event naming who (and from where), which instance and
// what, even when the node cannot carry it out: exec (the command),
// attach, cp either way (the path), and port-forward (the port) once per
// session, however many connections it makes.
func TestRemoteOperationsAreAudited(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n2 := c.join(t, "n2")
	bindTo(t, c, "web-2", "n2")
	var agent2 agentStandIn
	agent2.serve(t, n2, "n2")
	// The stand-in answers no WebSocket: exec and port-forward fail. The
	// event is written beside the operation, so it may land a moment
	// after the answer.
	_, _ = c.admin.Exec(ctx, "default", "web-2", client.ExecOptions{Command: []string{"cat", "/etc/shadow"}})
	for range 20 {
		_, _ = c.admin.PortForward(ctx, "default", "web-2", 6379)
	}
	_, _ = c.admin.PortForward(ctx, "default", "web-2", 80)
	_, _ = c.admin.Attach(ctx, "default", "web-2", io.Discard, io.Discard)
	if rc, err := c.admin.CopyFrom(ctx, "default", "web-2", "/etc/secret.key"); err == nil {
		_, _ = io.Copy(io.Discard, rc)
		rc.Close()
	}
	_ = c.admin.CopyTo(ctx, "default", "web-2", "/www", strings.NewReader(""))
	want := map[string]string{
		"Exec":             `token from 127.0.0.1 ran ["cat" "/etc/shadow"] on node n2`,
		"Attach":           "token from 127.0.0.1 attached on node n2",
		"CopyOut":          "token from 127.0.0.1 copied /etc/secret.key out of the instance on node n2",
		"CopyIn":           "token from 127.0.0.1 copied files into /www on node n2",
		"PortForward 6379": "token from 127.0.0.1 began forwarding to port 6379 on node n2",
		"PortForward 80":   "token from 127.0.0.1 began forwarding to port 80 on node n2",
	}
	var got map[string][]*api.Event
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		got = auditEvents(t, c, "web-2")
		missing := 0
		for k, msg := range want {
			if len(got[k]) == 0 || got[k][0].Message != msg {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			for k, evs := range got {
				for _, ev := range evs {
					t.Logf("%s: %s", k, ev.Message)
				}
			}
			t.Fatalf("audit events about web-2: want one for each of %v", want)
		}
	}
	// The 20 connections to port 6379 are one session, recorded once
	// (the attach and the copies came after them).
	if n := len(got["PortForward 6379"]); n != 1 {
		t.Errorf("20 port-forward connections to port 6379 left %d audit events, want 1 for their session", n)
	}
}

// TestExecAuditOutlastsForwards checks that port-forwards to many ports (a
// session each, an audit event each) do not push the record of an exec
// out: each kind of audit event has a quota of its own.
func TestExecAuditOutlastsForwards(t *testing.T) {
	c := startClusterWith(t, store.Config{MaxEvents: 5})
	ctx := t.Context()
	n2 := c.join(t, "n2")
	bindTo(t, c, "web-2", "n2")
	var agent2 agentStandIn
	agent2.serve(t, n2, "n2")
	_, _ = c.admin.Exec(ctx, "default", "web-2", client.ExecOptions{Command: []string{"cat", "/etc/shadow"}})
	eventually(t, 10*time.Second, func() bool { return len(auditEvents(t, c, "web-2")["Exec"]) == 1 })
	// More than the store records between two prunes.
	for port := range 70 {
		_, _ = c.admin.PortForward(ctx, "default", "web-2", 1000+port)
	}
	eventually(t, 10*time.Second, func() bool { return len(auditEvents(t, c, "web-2")) > 5 })
	if err := c.store.PruneEvents(ctx); err != nil {
		t.Fatal(err)
	}
	got := auditEvents(t, c, "web-2")
	if len(got["Exec"]) != 1 {
		t.Fatalf("after 70 port-forward sessions, %d exec audit events left, want the 1", len(got["Exec"]))
	}
	var forwards int
	for k, evs := range got {
		if strings.HasPrefix(k, "PortForward") {
			forwards += len(evs)
		}
	}
	if forwards == 0 {
		t.Errorf("no port-forward audit event kept")
	}
}

// TestNodeMayNotForgeAuditEvents: a node's certificate records events
// about itself and its instances, but none that passes for the server's
// audit record of who reached into an instance (by its reason or its
// name), nor any about another node's instance; nothing it was refused
// is written.
func TestNodeMayNotForgeAuditEvents(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")
	bindTo(t, c, "web-1", "n1")
	bindTo(t, c, "web-2", "n2")
	record := func(name, reason, obj, msg string) (*api.Event, error) {
		return n1.Events().Record(ctx, &api.Event{Metadata: api.Metadata{Namespace: "default", Name: name},
			Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: obj},
			Type:   api.EventNormal, Reason: reason, Message: msg, Source: "apiserver"})
	}
	const forged = `forged: token from 127.0.0.1 ran ["rm" "-rf" "/"] on node n1`
	for _, tc := range []struct{ what, name, reason, obj, field string }{
		{"an Exec event about its own instance", "", "Exec", "web-1", "reason"},
		{"an exec event, in lower case", "", "exec", "web-1", "reason"},
		{"a Port-Forward event", "", "Port-Forward", "web-1", "reason"},
		{"an event named as an audit one", "web-1-1-exec-audit", "Started", "web-1", "metadata.name"},
		{"an Exec event about another node's instance", "", "Exec", "web-2", "reason"},
		{"an event about another node's instance", "", "Started", "web-2", "object"},
	} {
		_, err := record(tc.name, tc.reason, tc.obj, forged)
		wantForbidden(t, "node n1 recording "+tc.what, err, `node "n1"`, tc.field)
	}
	_, err := n1.Events().Record(ctx, &api.Event{Metadata: api.Metadata{Namespace: "prod"},
		Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal, Reason: "Started", Message: forged})
	wantForbidden(t, "node n1 recording an event about its instance in another namespace", err, `node "n1"`, "metadata.namespace")
	ev, err := record("", "Started", "web-1", "started")
	if err != nil || ev.Source != "agent/n1" {
		t.Fatalf("n1's event about its own instance: %+v, %v; want it recorded with source agent/n1", ev, err)
	}
	// Dated a year ahead, its name would sort after every other event's
	// and outlive them when events are pruned: the server's clock dates it.
	future := &api.Event{Metadata: api.Metadata{Namespace: "default"}, Time: time.Now().AddDate(1, 0, 0),
		Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventNormal, Reason: "Started", Message: "from the future"}
	before := time.Now()
	if ev, err := n1.Events().Record(ctx, future); err != nil || ev.Time.Before(before.Add(-time.Second)) || ev.Time.After(time.Now().Add(time.Second)) {
		t.Fatalf("n1's event dated a year ahead: %+v, %v; want it dated by the server's clock", ev, err)
	}
	evs, _, err := c.admin.Events().List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	var seen bool
	for _, ev := range evs {
		seen = seen || ev.Message == "started"
		if ev.Message == forged {
			t.Errorf("a refused event was written: %+v", ev)
		}
	}
	if !seen {
		t.Errorf("n1's event about web-1 is not listed among %d events", len(evs))
	}
}

func eventually(t *testing.T, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// countingConn counts the bytes that cross a connection either way.
type countingConn struct {
	io.ReadWriteCloser
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Read(p)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(p []byte) (int, error) {
	n, err := c.ReadWriteCloser.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// A tunnel over the unix socket (berth up's agent) is silent while
// nothing uses it: neither end pings, since a peer that goes away closes
// the socket at once; the pings woke both ends every five seconds. It
// still carries what is sent through it.
func TestLocalTunnelIsQuietWhenIdle(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	if !e.client.Local() {
		t.Fatal("a client of the unix socket does not call itself local")
	}
	if _, err := e.client.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err != nil {
		t.Fatal(err)
	}
	rwc, err := e.client.OpenTunnel(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	conn := &countingConn{ReadWriteCloser: rwc}
	sess, err := yamux.Server(conn, client.TunnelConfig(e.client.Local()))
	if err != nil {
		t.Fatal(err)
	}
	defer sess.Close()
	// Longer than a keepalive interval: there is no event to wait for
	// when the point is that nothing happens.
	quiet := client.TunnelConfig(false).KeepAliveInterval + time.Second
	time.Sleep(quiet)
	if n := conn.n.Load(); n != 0 {
		t.Fatalf("an idle local tunnel carried %d bytes in %v, want none", n, quiet)
	}
	if _, err := sess.Ping(); err != nil {
		t.Fatalf("the quiet tunnel does not answer: %v", err)
	}
}

// TestExecResolvesItsTarget checks exec's ?resolve=1: the server takes
// the name as an instance's, or as a service's or job's, whose first
// running instance the command goes to, in the one request; a name that
// is both a service and a job is refused, as is one that names nothing or
// a service with nothing running, and the agent is not asked.
func TestExecResolvesItsTarget(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n2 := c.join(t, "n2")
	tmpl := api.Template{Image: "demo/busybox:1"}
	for _, svc := range []string{"web", "idle", "both"} {
		if _, err := c.admin.Services().Apply(ctx, &api.Service{Metadata: api.Metadata{Name: svc, Namespace: "default"},
			Spec: api.ServiceSpec{Replicas: 1, Template: tmpl}}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.admin.Jobs().Apply(ctx, &api.Job{Metadata: api.Metadata{Name: "both", Namespace: "default"},
		Spec: api.JobSpec{Completions: 1, Parallelism: 1, Template: tmpl}}); err != nil {
		t.Fatal(err)
	}
	// web-b runs, web-a (first by name) does not, idle-a does not.
	uids := map[string]string{}
	for _, tc := range []struct {
		name, owner string
		running     bool
	}{{"web-a", "web", false}, {"web-b", "web", true}, {"web-c", "web", true}, {"idle-a", "idle", false}} {
		in, err := c.admin.Instances().Apply(ctx, &api.Instance{Metadata: api.Metadata{Name: tc.name, Namespace: "default"},
			Spec: api.InstanceSpec{Template: &tmpl, Owner: api.Owner{Kind: api.KindService, Name: tc.owner}}})
		if err != nil {
			t.Fatal(err)
		}
		uids[tc.name] = in.Metadata.UID
		if in, err = c.admin.Instances().Bind(ctx, "default", tc.name, "n2", nil, 0); err != nil {
			t.Fatal(err)
		}
		if tc.running {
			in.Status.Phase, in.Status.ContainerID = api.PhaseRunning, "ctr-"+tc.name
			if _, err := c.admin.Instances().UpdateStatus(ctx, in); err != nil {
				t.Fatal(err)
			}
		}
	}
	var agent2 agentStandIn
	agent2.serve(t, n2, "n2")

	// The stand-in answers no WebSocket, so each exec fails after the
	// agent was asked: the path it was asked for names the instance.
	asked := func(target string) string {
		t.Helper()
		before := len(agent2.paths())
		_, err := c.admin.Exec(ctx, "default", target, client.ExecOptions{Command: []string{"true"}, Resolve: true})
		if got := agent2.paths(); len(got) > before {
			return got[len(got)-1]
		}
		if err == nil {
			t.Fatalf("exec in %s: no error, and the agent was not asked", target)
		}
		return err.Error()
	}
	for target, want := range map[string]string{
		"web":   "/v1/instances/" + uids["web-b"] + "/exec",
		"web-a": "/v1/instances/" + uids["web-a"] + "/exec", // an instance is taken as named
	} {
		if got := asked(target); got != want {
			t.Errorf("exec in %s reached %q, want %q", target, got, want)
		}
	}
	for target, want := range map[string]func(error) bool{
		"both":    errdefs.IsInvalidArgument,
		"nothing": errdefs.IsNotFound,
		"idle":    errdefs.IsFailedPrecondition,
	} {
		before := len(agent2.paths())
		_, err := c.admin.Exec(ctx, "default", target, client.ExecOptions{Command: []string{"true"}, Resolve: true})
		if !want(err) {
			t.Errorf("exec in %s: %v", target, err)
		}
		if got := agent2.paths(); len(got) != before {
			t.Errorf("exec in %s asked the agent %v", target, got[before:])
		}
		if target == "both" && (err == nil || !strings.Contains(err.Error(), "service/both or job/both")) {
			t.Errorf("exec in both: %v, want the two it names", err)
		}
	}
	// Without resolve a service's name is no instance's.
	if _, err := c.admin.Exec(ctx, "default", "web", client.ExecOptions{Command: []string{"true"}}); !errdefs.IsNotFound(err) {
		t.Errorf("exec in web without resolve: %v, want not found", err)
	}
	// The event names the instance the command ran in.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		evs, _, err := c.admin.Events().List(ctx, "default")
		if err != nil {
			t.Fatal(err)
		}
		if slices.ContainsFunc(evs, func(ev *api.Event) bool { return ev.Reason == "Exec" && ev.Object.Name == "web-b" }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no Exec event on web-b, the instance the service's name led to")
		}
	}
}
