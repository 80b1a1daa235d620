package apiserver_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/store"
)

type env struct {
	store  *store.Store
	srv    *apiserver.Server
	sock   string
	client *client.Client
	raw    *http.Client // plain HTTP over the socket, for status codes and bodies
}

// start serves a new store on a socket; setup, when given, runs on the
// server before it serves (to mount handlers, say).
func start(t testing.TB, setup ...func(*apiserver.Server)) *env {
	t.Helper()
	return startWith(t, apiserver.Config{}, setup...)
}

// startWith is start with a server configured as cfg (its store, body
// limit and watch heartbeat are the test's).
func startWith(t testing.TB, cfg apiserver.Config, setup ...func(*apiserver.Server)) *env {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	// A short node TTL is granted as asked, not raised to a lone store's
	// shortest lease.
	st, err := store.Open(ctx, store.Config{DataDir: dir, MinLeaseTTL: cfg.NodeTTL})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store, cfg.MaxBodyBytes, cfg.WatchHeartbeat = st, 64<<10, 100*time.Millisecond
	srv := apiserver.New(cfg)
	for _, f := range setup {
		f(srv)
	}
	sock := api.SocketPath(dir)
	done := make(chan error, 1)
	l, err := apiserver.ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- srv.Serve(ctx, l, apiserver.UnixRootOnly) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		st.Close()
	})
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	raw := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &env{store: st, srv: srv, sock: sock, client: c, raw: raw}
}

// call sends body to the socket and returns the status and decoded error body.
func (e *env) call(t testing.TB, method, path, body string, header ...string) (int, apiserver.ErrorBody) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://berth"+path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := e.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb apiserver.ErrorBody
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &eb)
	return resp.StatusCode, eb
}

const validService = `{"metadata":{"name":"web"},"spec":{"replicas":2,"template":{"image":"demo/busybox:1","resources":{"memory":"64Mi"}}}}`

func TestSocketIsRootOnly(t *testing.T) {
	e := start(t)
	fi, err := os.Stat(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("socket mode %v, want a 0600 socket", fi.Mode())
	}
	if err := e.client.Healthz(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A second server on the same path is refused, not silently stolen.
	if _, err := apiserver.ListenUnix(e.sock); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("second listener: got %v, want AlreadyExists", err)
	}
}

func TestInvalidInputNamesFieldAndStoresNothing(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	for _, tc := range []struct {
		name, body string
		status     int
		field      string
	}{
		{"unknown field", strings.Replace(validService, `"replicas":2`, `"replicas":2,"replica":3`, 1), 422, "spec.replica"},
		{"negative replicas", strings.Replace(validService, `"replicas":2`, `"replicas":-1`, 1), 422, "spec.replicas"},
		{"bad image", strings.Replace(validService, "demo/busybox:1", "demo/BusyBox:1", 1), 422, "spec.template.image"},
		{"bad memory unit", strings.Replace(validService, "64Mi", "64MB", 1), 422, "spec.template.resources.memory"},
		{"wrong type", strings.Replace(validService, `"replicas":2`, `"replicas":"2"`, 1), 422, "spec.replicas"},
		{"name differs from path", strings.Replace(validService, `"web"`, `"api"`, 1), 422, "metadata.name"},
		{"not JSON", `{"metadata":`, 400, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, eb := e.call(t, "PUT", "/v1/namespaces/default/services/web", tc.body)
			if status != tc.status || eb.Field != tc.field || eb.Code != "InvalidArgument" || eb.Error == "" {
				t.Fatalf("got %d %+v, want %d on field %q", status, eb, tc.status, tc.field)
			}
			if tc.field != "" && (eb.Reason == "" || !strings.Contains(eb.Error, tc.field)) {
				t.Fatalf("error %q does not name field %s with a reason", eb.Error, tc.field)
			}
		})
	}
	list, _, err := e.client.Services().List(ctx, "")
	if err != nil || len(list) != 0 {
		t.Fatalf("after invalid applies: %d services stored (%v)", len(list), err)
	}

	// The client gives the same as errors.
	bad := api.RunService("web", "demo/busybox:1", nil)
	bad.Spec.Replicas = -3
	_, err = e.client.Services().Apply(ctx, bad)
	if !errdefs.IsInvalidArgument(err) {
		t.Fatalf("client apply: got %v, want InvalidArgument", err)
	}
	if fe := api.FieldErrors(err); len(fe) != 1 || fe[0].Field != "spec.replicas" {
		t.Fatalf("client field errors %+v", fe)
	}
	if _, err := e.client.Services().Get(ctx, "default", "web"); !errdefs.IsNotFound(err) {
		t.Fatalf("get after invalid apply: %v, want NotFound", err)
	}
}

func TestApplyConflictAndActions(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	svcs := e.client.Services()
	created, err := svcs.Apply(ctx, api.RunService("web", "demo/busybox:1", []string{"sleep", "1d"}))
	if err != nil {
		t.Fatal(err)
	}
	if created.Metadata.Revision == 0 || created.Metadata.UID == "" {
		t.Fatalf("apply returned no revision or uid: %+v", created.Metadata)
	}

	// Two writers read the same revision; exactly one wins.
	const writers = 6
	var wg sync.WaitGroup
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			mine := *created
			mine.Spec.Replicas = 10 + i
			_, errs[i] = svcs.Apply(ctx, &mine)
		})
	}
	wg.Wait()
	wins := 0
	for _, err := range errs {
		switch {
		case err == nil:
			wins++
		case errdefs.IsConflict(err):
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusConflict {
				t.Fatalf("conflict came as %v", err)
			}
		default:
			t.Fatalf("unexpected error %v", err)
		}
	}
	if wins != 1 {
		t.Fatalf("%d of %d concurrent updates of one revision won, want 1", wins, writers)
	}
	// If-Match with a stale revision on delete is a conflict too.
	if status, eb := e.call(t, "DELETE", "/v1/namespaces/default/services/web", "", "If-Match", fmt.Sprint(created.Metadata.Revision)); status != 409 || eb.Code != "Conflict" {
		t.Fatalf("stale delete: %d %+v", status, eb)
	}

	// Scale changes the spec only; a status write changes the status only.
	cur, err := svcs.Get(ctx, "default", "web")
	if err != nil {
		t.Fatal(err)
	}
	cur.Status.ReadyReplicas = 1
	cur.Spec.Replicas = 77
	if _, err := svcs.UpdateStatus(ctx, cur); err != nil {
		t.Fatal(err)
	}
	scaled, err := svcs.Scale(ctx, "default", "web", 4)
	if err != nil {
		t.Fatal(err)
	}
	if scaled.Spec.Replicas != 4 || scaled.Status.ReadyReplicas != 1 {
		t.Fatalf("after status write and scale: replicas %d ready %d, want 4 and 1", scaled.Spec.Replicas, scaled.Status.ReadyReplicas)
	}
	if _, err := svcs.Scale(ctx, "default", "web", -1); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("scale to -1: %v", err)
	}
	restarted, err := svcs.Restart(ctx, "default", "web")
	if err != nil || restarted.Spec.Template.RestartedAt.IsZero() {
		t.Fatalf("restart: %v", err)
	}
	// The file applied again after a restart does not name restartedAt:
	// the restart stands, and nothing rolls again.
	again := api.Service{Metadata: api.Metadata{Namespace: "default", Name: "web"}, Spec: restarted.Spec}
	again.Spec.Template.RestartedAt = time.Time{}
	res, err := e.client.ApplyWith(ctx, &again, client.ApplyOptions{})
	if err != nil || !res.Unchanged {
		t.Fatalf("re-apply after restart: %+v %v, want unchanged", res, err)
	}
	if got := res.Object.(*api.Service).Spec.Template.RestartedAt; !got.Equal(restarted.Spec.Template.RestartedAt) {
		t.Fatalf("re-apply after restart: restartedAt %v, want %v kept", got, restarted.Spec.Template.RestartedAt)
	}
	again.Spec.Template.Env = map[string]string{"EDITED": "1"}
	res, err = e.client.ApplyWith(ctx, &again, client.ApplyOptions{})
	if err != nil || res.Unchanged || !res.Object.(*api.Service).Spec.Template.RestartedAt.Equal(restarted.Spec.Template.RestartedAt) {
		t.Fatalf("an edit after restart: %+v %v, want applied with restartedAt kept", res, err)
	}
	restarted = res.Object.(*api.Service)
	if _, err := svcs.Scale(ctx, "default", "nope", 1); !errdefs.IsNotFound(err) {
		t.Fatalf("scale of a missing service: %v", err)
	}
	if err := svcs.Delete(ctx, "default", "web", restarted.Metadata.Revision); err != nil {
		t.Fatal(err)
	}
}

func TestBodyTooLarge(t *testing.T) {
	e := start(t)
	big := strings.Replace(validService, `"replicas":2`, `"replicas":2,"x":"`+strings.Repeat("a", 100<<10)+`"`, 1)
	status, eb := e.call(t, "PUT", "/v1/namespaces/default/services/web", big)
	if status != http.StatusRequestEntityTooLarge || eb.Code != "TooLarge" {
		t.Fatalf("got %d %+v, want 413", status, eb)
	}
	if _, err := e.client.Services().Get(t.Context(), "default", "web"); !errdefs.IsNotFound(err) {
		t.Fatalf("oversize body stored something: %v", err)
	}
}

func TestWatchStream(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	jobs := e.client.Jobs()
	mk := func(name string) *api.Job {
		return &api.Job{Metadata: api.Metadata{Name: name}, Spec: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1"}}}
	}
	if _, err := jobs.Apply(ctx, mk("a")); err != nil {
		t.Fatal(err)
	}
	_, rev, err := jobs.List(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	// Changes between the list and the watch are not missed.
	if _, err := jobs.Apply(ctx, mk("b")); err != nil {
		t.Fatal(err)
	}
	ch, err := jobs.Watch(ctx, "default", rev)
	if err != nil {
		t.Fatal(err)
	}
	// SSE on the same watch, for the browser.
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://berth/v1/jobs?watch=1&revision=%d", rev), nil)
	req.Header.Set("Accept", "text/event-stream")
	sse, err := e.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer sse.Body.Close()
	if ct := sse.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("SSE content type %q", ct)
	}

	b, err := jobs.Get(ctx, "default", "b")
	if err != nil {
		t.Fatal(err)
	}
	b.Spec.Parallelism = 2
	if _, err := jobs.Apply(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := jobs.Delete(ctx, "default", "a", 0); err != nil {
		t.Fatal(err)
	}
	want := []string{"Added b", "Modified b", "Deleted a"}
	var got []string
	for len(got) < len(want) {
		select {
		case ev, ok := <-ch:
			if !ok || ev.Err != nil {
				t.Fatalf("watch ended after %v: %v", got, ev.Err)
			}
			got = append(got, ev.Type+" "+ev.Object.Metadata.Name)
		case <-ctx.Done():
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	sc := bufio.NewScanner(sse.Body)
	var events []string
	for len(events) < 3 && sc.Scan() {
		// Heartbeats come every 100 ms here and may fall between the changes.
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok && ev != "Heartbeat" {
			events = append(events, ev)
		}
	}
	if fmt.Sprint(events) != "[Added Modified Deleted]" {
		t.Fatalf("SSE events %v", events)
	}
}

// A burst of changes in one transaction reaches a watch whole and in
// order, each object as a get would give it (its kind and revision), and
// a list gives the same objects.
func TestWatchBurst(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	_, rev, err := e.client.Instances().List(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := e.client.Instances().Watch(ctx, "default", rev)
	if err != nil {
		t.Fatal(err)
	}
	const n = 700
	objs := make([]api.Object, n)
	for i := range objs {
		objs[i] = &api.Instance{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("web-%03d", i)},
			Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1", Env: map[string]string{"I": fmt.Sprint(i)}},
				Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
	}
	if err := e.store.CreateMany(ctx, objs); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		select {
		case ev, ok := <-ch:
			if !ok || ev.Err != nil {
				t.Fatalf("watch ended after %d events: %v", i, ev.Err)
			}
			in := ev.Object
			if want := fmt.Sprintf("web-%03d", i); ev.Type != "Added" || in.Metadata.Name != want || in.Spec.Template.Env["I"] != fmt.Sprint(i) {
				t.Fatalf("event %d: %s %s (env %v), want Added %s", i, ev.Type, in.Metadata.Name, in.Spec.Template.Env, want)
			}
			if in.Metadata.Kind != api.KindInstance || in.Metadata.Revision != ev.Revision || in.Metadata.Revision <= rev || in.Metadata.UID == "" {
				t.Fatalf("event %d: metadata %+v at revision %d", i, in.Metadata, ev.Revision)
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d events", i, n)
		}
	}
	list, _, err := e.client.Instances().List(ctx, "default")
	if err != nil || len(list) != n {
		t.Fatalf("list: %d instances, %v", len(list), err)
	}
	got, err := e.client.Instances().Get(ctx, "default", "web-042")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(list[42], got) {
		t.Errorf("listed\n%+v\nwant as got\n%+v", list[42], got)
	}
}

func TestNodeAssignmentsOverAPI(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	node := &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1", Capacity: api.NodeCapacity{MilliCPU: 2000, Memory: 1 << 30}}}
	if _, err := e.client.Nodes().Apply(ctx, node); err != nil {
		t.Fatal(err)
	}
	n, err := e.client.Nodes().Get(ctx, "", "n1")
	if err != nil {
		t.Fatal(err)
	}
	n.Status = api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}
	if _, err := e.client.Nodes().UpdateStatus(ctx, n); err != nil {
		t.Fatal(err)
	}
	_, rev, err := e.client.Nodes().Assignments(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	ch, err := e.client.Nodes().WatchAssignments(ctx, "n1", rev)
	if err != nil {
		t.Fatal(err)
	}
	in := &api.Instance{Metadata: api.Metadata{Name: "web-1"}, Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
	if _, err := e.client.Instances().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Instances().Bind(ctx, "default", "web-1", "n1", []int{1}, 1); !errdefs.IsConflict(err) {
		t.Fatalf("bind at a stale revision: %v, want Conflict", err)
	}
	bound, err := e.client.Instances().Bind(ctx, "default", "web-1", "n1", []int{1}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if bound.Spec.Node != "n1" || bound.Status.Phase != api.PhaseScheduled {
		t.Fatalf("bound: node %q phase %q", bound.Spec.Node, bound.Status.Phase)
	}
	if _, err := e.client.Instances().Bind(ctx, "default", "web-1", "n2", nil, 0); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("rebinding elsewhere: %v, want FailedPrecondition", err)
	}
	select {
	case ev := <-ch:
		if ev.Err != nil || ev.Type != "Added" || ev.Object.Metadata.Name != "web-1" || ev.Object.Spec.Node != "n1" {
			t.Fatalf("assignment event %+v", ev)
		}
	case <-ctx.Done():
		t.Fatal("no assignment event")
	}
	// The agent reports status; the event record shows up in the list.
	got, err := e.client.Instances().Get(ctx, "default", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	got.Status.Phase = "Exploded"
	if _, err := e.client.Instances().UpdateStatus(ctx, got); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("bad phase: %v", err)
	}
	got.Status.Phase, got.Status.ExitCode, got.Status.Reason = api.PhaseFailed, 137, "OOMKilled"
	if _, err := e.client.Instances().UpdateStatus(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.Events().Record(ctx, &api.Event{Object: api.ObjectRef{Kind: api.KindInstance, Namespace: "default", Name: "web-1"}, Type: api.EventWarning, Reason: "OOMKilled"}); err != nil {
		t.Fatal(err)
	}
	evs, _, err := e.client.Events().List(ctx, "")
	if err != nil || len(evs) != 1 || evs[0].Reason != "OOMKilled" {
		t.Fatalf("events %+v, %v", evs, err)
	}
}

func selfSigned(t testing.TB) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "berth test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestTCPNeedsTLSAndToken(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithCancel(t.Context())
	cert, caPEM := selfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// Refuses to serve without a certificate or a token.
	if err := e.srv.ServeTLS(ctx, l, nil, "0123456789abcdef0123"); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("no TLS: %v", err)
	}
	if err := e.srv.ServeTLS(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}, ""); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("no token: %v", err)
	}
	const token = "0123456789abcdef0123"
	done := make(chan error, 1)
	go func() { done <- e.srv.ServeTLS(ctx, l, &tls.Config{Certificates: []tls.Certificate{cert}}, token) }()
	t.Cleanup(func() { cancel(); <-done })
	addr := l.Addr().String()

	// Plain HTTP gets no API answer.
	resp, err := http.Get("http://" + addr + "/v1/services")
	if err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("plain HTTP answered %d, want 400", resp.StatusCode)
		}
	}
	for _, tc := range []struct {
		name  string
		token string
		want  error
	}{
		{"no token", "", errdefs.ErrUnauthorized},
		{"wrong token", "not-the-token-at-all", errdefs.ErrUnauthorized},
		{"right token", token, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := client.New("https://"+addr, client.WithCA(caPEM), client.WithToken(tc.token))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = c.Services().List(ctx, "")
			if !errors.Is(err, tc.want) && !(tc.want == nil && err == nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				var ce *client.Error
				if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized {
					t.Fatalf("got %v, want a 401", err)
				}
			}
		})
	}
	// A client that does not trust the certificate does not connect.
	c, _ := client.New("https://"+addr, client.WithToken(token))
	if err := c.Healthz(ctx); err == nil {
		t.Fatal("untrusted certificate accepted")
	}
}

func TestApplySpecFile(t *testing.T) {
	e := start(t)
	ctx := t.Context()
	objs, err := api.ParseSpecs("app.yaml", []byte(`
kind: Service
name: web
replicas: 3
template: {image: demo/busybox:1, resources: {memory: 64Mi}}
---
kind: Job
name: tests
completions: 8
template: {image: demo/busybox:1}
`))
	if err != nil {
		t.Fatal(err)
	}
	for round, wantCreated := range []bool{true, false} {
		for _, o := range objs {
			stored, created, err := e.client.Apply(ctx, o)
			if err != nil {
				t.Fatal(err)
			}
			if created != wantCreated || stored.GetMetadata().Revision == 0 || stored.GetKind() != o.GetKind() {
				t.Fatalf("round %d: %s created=%v revision %d", round, api.RefOf(o), created, stored.GetMetadata().Revision)
			}
		}
	}
	other := api.RunService("web", "demo/busybox:1", nil)
	other.Metadata.Namespace = "staging"
	if _, err := e.client.Services().Apply(ctx, other); err != nil {
		t.Fatal(err)
	}
	all, _, err := e.client.Services().List(ctx, "")
	if err != nil || len(all) != 2 {
		t.Fatalf("services in all namespaces: %d (%v), want 2", len(all), err)
	}
	staging, _, err := e.client.Services().List(ctx, "staging")
	if err != nil || len(staging) != 1 || staging[0].Metadata.Namespace != "staging" {
		t.Fatalf("services in staging: %+v (%v)", staging, err)
	}
	if status, _ := e.call(t, "GET", "/v1/services?namespace=staging", ""); status != 200 {
		t.Fatalf("list with ?namespace=: %d", status)
	}
	if err := e.client.Delete(ctx, api.KindJob, "default", "tests", 0); err != nil {
		t.Fatal(err)
	}
	if err := e.client.Delete(ctx, api.KindJob, "default", "tests", 0); !errdefs.IsNotFound(err) {
		t.Fatalf("second delete: %v, want NotFound", err)
	}
	// Names in paths are DNS labels: nothing reaches into another key.
	if status, eb := e.call(t, "GET", "/v1/namespaces/default/services/web%2Fstatus", ""); status != 422 || eb.Field != "metadata.name" {
		t.Fatalf("escaped name: %d %+v", status, eb)
	}
	if status, _ := e.call(t, "GET", "/v1/namespaces/default/widgets/web", ""); status != 404 {
		t.Fatalf("unknown kind: %d, want 404", status)
	}
}

func TestQuietWatchGetsHeartbeats(t *testing.T) {
	e := start(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://berth/v1/services?watch=1", nil)
	resp, err := e.raw.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	for range 2 {
		if !sc.Scan() {
			t.Fatalf("stream ended: %v", sc.Err())
		}
		var ev apiserver.WatchEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Type != "Heartbeat" {
			t.Fatalf("line %q, want a heartbeat", sc.Text())
		}
	}
}

// A cron job is admitted as a job is: over a limit, the API refuses it
// naming the field and the cap, and stores nothing.
func TestCronJobOverLimitRefused(t *testing.T) {
	e := start(t)
	env := map[string]string{}
	for i := range api.MaxEnv + 1 {
		env[fmt.Sprintf("V%d", i)] = "x"
	}
	cj := api.CronJob{Metadata: api.Metadata{Name: "nightly", Namespace: "default"}, Spec: api.CronJobSpec{Schedule: "0 3 * * *",
		Job: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/busybox:1", Env: env}}}}
	b, err := json.Marshal(cj)
	if err != nil {
		t.Fatal(err)
	}
	status, eb := e.call(t, "PUT", "/v1/namespaces/default/cronjobs/nightly", string(b))
	if status != 422 || eb.Field != "spec.job.template.env" || !strings.Contains(eb.Reason, fmt.Sprintf("over the limit of %d", api.MaxEnv)) {
		t.Fatalf("got %d %+v, want 422 on spec.job.template.env naming the limit", status, eb)
	}
	status, _ = e.call(t, "GET", "/v1/namespaces/default/cronjobs/nightly", "")
	if status != 404 {
		t.Fatalf("get after the refused apply: %d, want 404", status)
	}
}
