package apiserver_test

import (
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
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
	"github.com/berth-dev/berth/internal/store"
)

const adminToken = "admin-token-0123456789abcdef"

// cluster is an API server with a cluster CA on a loopback TLS port.
type cluster struct {
	store *store.Store
	ca    *pki.CA
	url   string
	admin *client.Client
}

// assignAndSee binds a new instance, web-1, to node n1 as the admin and
// wants n1's assignment watch w to bring it within 10 s.
func (c *cluster) assignAndSee(t *testing.T, ctx context.Context, w <-chan client.WatchEvent[*api.Instance]) {
	t.Helper()
	in := &api.Instance{Metadata: api.Metadata{Name: "web-1", Namespace: "default"},
		Spec: api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}}}
	if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
		t.Fatal(err)
	}
	if _, err := c.admin.Instances().Bind(ctx, "default", "web-1", "n1", nil, 0); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w:
		if ev.Err != nil || ev.Object.Metadata.Name != "web-1" {
			t.Fatalf("assignment watch: %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("assignment watch saw no assignment in 10s")
	}
}

func startCluster(t testing.TB, setup ...func(*apiserver.Server)) *cluster {
	t.Helper()
	return startClusterWith(t, store.Config{}, setup...)
}

// startClusterWith is startCluster on a store configured as cfg (its data
// dir is the test's).
func startClusterWith(t testing.TB, cfg store.Config, setup ...func(*apiserver.Server)) *cluster {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	cfg.DataDir = dir
	st, err := store.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(dir + "/pki")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadOrIssueServer(dir+"/pki", ca, []string{"127.0.0.1", "localhost"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.Create(dir + "/seal.key")
	if err != nil {
		t.Fatal(err)
	}
	srv := apiserver.New(apiserver.Config{Store: st, CA: ca, SealKey: key})
	for _, f := range setup {
		f(srv)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, l, ca.ServerTLSConfig(cert), adminToken) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		st.Close()
	})
	c := &cluster{store: st, ca: ca, url: "https://" + l.Addr().String()}
	c.admin, err = client.New(c.url, client.WithCA(ca.CertPEM), client.WithToken(adminToken))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Healthz(t.Context()); err != nil {
		t.Fatal(err)
	}
	return c
}

// join joins as node with a fresh token and returns a client with the
// node's certificate.
func (c *cluster) join(t *testing.T, node string) *client.Client {
	t.Helper()
	tok, err := c.admin.Tokens().Create(t.Context(), "for "+node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(t.Context(), c.url, client.JoinOptions{Token: tok.Token, Node: node, CA: c.ca.CertPEM})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := client.New(c.url, client.WithNodeCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	return nc
}

// raw sends a request with the given TLS client configuration and
// returns the status and error body.
func (c *cluster) raw(t *testing.T, cfg *tls.Config, method, path, body string, header ...string) (int, apiserver.ErrorBody, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), method, c.url+path, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var eb apiserver.ErrorBody
	_ = json.Unmarshal(b, &eb)
	return resp.StatusCode, eb, string(b)
}

func (c *cluster) trustOnly() *tls.Config {
	return &tls.Config{RootCAs: c.ca.Pool(), MinVersion: tls.VersionTLS12}
}

func TestJoinGivesAWorkingNodeCertificate(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")

	// What an agent does: register, heartbeat, read, watch its assignments.
	node, err := n1.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}})
	if err != nil {
		t.Fatalf("node registers itself: %v", err)
	}
	node.Status.Condition = api.NodeReady
	if _, err := n1.Nodes().UpdateStatus(ctx, node); err != nil {
		t.Fatalf("node reports its own status: %v", err)
	}
	if _, _, err := n1.Services().List(ctx, ""); err != nil {
		t.Fatalf("node lists services: %v", err)
	}
	if _, _, err := n1.Nodes().Assignments(ctx, "n1"); err != nil {
		t.Fatalf("node reads its assignments: %v", err)
	}
	w, err := n1.Nodes().WatchAssignments(ctx, "n1", 0)
	if err != nil {
		t.Fatalf("node watches its assignments: %v", err)
	}
	c.assignAndSee(t, ctx, w)
	if _, err := n1.Events().Record(ctx, &api.Event{Metadata: api.Metadata{Namespace: "default"}, Object: api.ObjectRef{Kind: api.KindNode, Name: "n1"}, Type: api.EventNormal, Reason: "Joined"}); err != nil {
		t.Fatalf("node records an event: %v", err)
	}

	// First contact with the CA's pin only, as `berth agent --ca-pin` does.
	tok, err := c.admin.Tokens().Create(ctx, "pinned", 0)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "n2", CAPin: c.ca.Pin()})
	if err != nil {
		t.Fatalf("join with the CA pin: %v", err)
	}
	if string(creds.CA) != string(c.ca.CertPEM) {
		t.Fatal("join answered another CA")
	}
	dir := t.TempDir()
	if err := creds.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := client.LoadNodeCredentials(dir)
	if err != nil {
		t.Fatal(err)
	}
	n2, err := client.New(c.url, client.WithNodeCredentials(loaded))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n2"}}); err != nil {
		t.Fatalf("node joined by pin registers: %v", err)
	}
	// A wrong pin: the handshake fails and the token is not sent.
	other, _ := pki.NewCA()
	_, err = client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "n3", CAPin: other.Pin()})
	if err == nil || !strings.Contains(err.Error(), "pin") {
		t.Fatalf("join with another CA's pin: %v", err)
	}
}

func TestNodeCertificateIsConfinedToItsNode(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	n1 := c.join(t, "n1")
	for _, n := range []string{"n1", "n2"} {
		if _, err := c.admin.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	inst := func(name, node string) *api.Instance {
		in := &api.Instance{
			Metadata: api.Metadata{Name: name, Namespace: "default"},
			Spec:     api.InstanceSpec{Template: &api.Template{Image: "demo/busybox:1"}, Owner: api.Owner{Kind: api.KindService, Name: "web"}},
		}
		if node == "n1" {
			// What lets n1 record volumes: an instance of its mounts them.
			in.Spec.Template.Volumes = []api.VolumeMount{{Name: "data", Path: "/data"}, {Name: "other", Path: "/other"}}
		}
		if _, err := c.admin.Instances().Apply(ctx, in); err != nil {
			t.Fatal(err)
		}
		if node == "" {
			return in
		}
		in, err := c.admin.Instances().Bind(ctx, "default", name, node, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		return in
	}
	mine, theirs, unbound := inst("web-1", "n1"), inst("web-2", "n2"), inst("web-3", "")
	svc, err := c.admin.Services().Apply(ctx, api.RunService("web", "demo/busybox:1", nil))
	if err != nil {
		t.Fatal(err)
	}

	// A node records its own named volumes, those its instances mount, and only those.
	if _, err := n1.Volumes().Apply(ctx, &api.Volume{Metadata: api.Metadata{Namespace: "default", Name: "data"},
		Spec: api.VolumeSpec{Node: "n1", Path: "/var/lib/berth/volumes/default/data"}}); err != nil {
		t.Fatalf("node records its own volume: %v", err)
	}
	if _, err := c.admin.Volumes().Apply(ctx, &api.Volume{Metadata: api.Metadata{Namespace: "default", Name: "cache"},
		Spec: api.VolumeSpec{Node: "n2"}}); err != nil {
		t.Fatal(err)
	}
	forN2 := &api.Volume{Metadata: api.Metadata{Namespace: "default", Name: "other"}, Spec: api.VolumeSpec{Node: "n2"}}
	takeOver := &api.Volume{Metadata: api.Metadata{Namespace: "default", Name: "cache"}, Spec: api.VolumeSpec{Node: "n1"}}

	mine.Status.Phase = api.PhaseRunning
	if _, err := n1.Instances().UpdateStatus(ctx, mine); err != nil {
		t.Fatalf("status of an instance bound to the node: %v", err)
	}
	n2, err := n1.Nodes().Get(ctx, "", "n2")
	if err != nil {
		t.Fatalf("node reads another node: %v", err)
	}
	n2.Status.Condition = api.NodeNotReady
	theirs.Status.Phase = api.PhaseFailed
	unbound.Status.Phase = api.PhaseRunning
	svc.Spec.Replicas = 9
	for _, tc := range []struct {
		name string
		do   func() error
		says []string
	}{
		{"apply another node", func() error { _, err := n1.Nodes().Apply(ctx, n2); return err }, []string{`node "n1"`, `node "n2"`}},
		{"status of another node", func() error { _, err := n1.Nodes().UpdateStatus(ctx, n2); return err }, []string{`node "n1"`, `status of node "n2"`}},
		{"status of another node's instance", func() error { _, err := n1.Instances().UpdateStatus(ctx, theirs); return err }, []string{`node "n1"`, `instance "web-2"`, `bound to node "n2"`}},
		{"status of an unbound instance", func() error { _, err := n1.Instances().UpdateStatus(ctx, unbound); return err }, []string{`node "n1"`, `instance "web-3"`}},
		{"apply a service", func() error { _, err := n1.Services().Apply(ctx, svc); return err }, []string{`node "n1"`, `service "web"`}},
		{"scale", func() error { _, err := n1.Services().Scale(ctx, "default", "web", 0); return err }, []string{`node "n1"`, `scale service "web"`}},
		{"delete its own node", func() error { return n1.Nodes().Delete(ctx, "", "n1", 0) }, []string{`node "n1"`, `delete node "n1"`}},
		{"delete an instance", func() error { return n1.Instances().Delete(ctx, "default", "web-1", 0) }, []string{`node "n1"`, `instance "web-1"`}},
		{"bind", func() error { _, err := n1.Instances().Bind(ctx, "default", "web-3", "n1", nil, 0); return err }, []string{`node "n1"`, `bind instance "web-3"`}},
		{"read jobs", func() error { _, _, err := n1.Jobs().List(ctx, ""); return err }, []string{`node "n1"`, `jobs`}},
		{"another node's assignments", func() error { _, _, err := n1.Nodes().Assignments(ctx, "n2"); return err }, []string{`node "n1"`, `assignments of node "n2"`}},
		{"record a volume for another node", func() error { _, err := n1.Volumes().Apply(ctx, forN2); return err }, []string{`node "n1"`, `volume "other"`, `node "n2"`}},
		{"take another node's volume", func() error { _, err := n1.Volumes().Apply(ctx, takeOver); return err }, []string{`node "n1"`, `volume "cache"`, `lives on node "n2"`}},
		{"remove a volume", func() error { return n1.Volumes().Delete(ctx, "default", "data", 0) }, []string{`node "n1"`, `delete volume "data"`}},
		{"list tokens", func() error { _, err := n1.Tokens().List(ctx); return err }, []string{`node "n1"`, `tokens`}},
		{"create a token", func() error { _, err := n1.Tokens().Create(ctx, "", 0); return err }, []string{`node "n1"`, `tokens`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusForbidden || !errdefs.IsForbidden(err) {
				t.Fatalf("got %v, want a 403", err)
			}
			t.Log(err)
			for _, s := range tc.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not say %s", err, s)
				}
			}
		})
	}
	// Nothing of it happened.
	if got, _ := c.admin.Instances().Get(ctx, "default", "web-2"); got.Status.Phase == api.PhaseFailed {
		t.Fatal("another node's instance status was written")
	}
	if got, _ := c.admin.Services().Get(ctx, "default", "web"); got.Spec.Replicas == 9 || got.Spec.Replicas == 0 {
		t.Fatalf("service changed to %d replicas", got.Spec.Replicas)
	}
}

func TestTCPWithoutCredentials(t *testing.T) {
	c := startCluster(t)
	// No certificate, no token: 401 for everything but join.
	for _, path := range []string{"/v1/services", "/v1/nodes/n1", "/v1/tokens"} {
		status, eb, _ := c.raw(t, c.trustOnly(), "GET", path, "")
		if status != http.StatusUnauthorized || !strings.Contains(eb.Error, "no credentials") {
			t.Errorf("GET %s without credentials: %d %q, want 401", path, status, eb.Error)
		}
	}
	status, _, _ := c.raw(t, c.trustOnly(), "PUT", "/v1/nodes/n1", `{"metadata":{"name":"n1"}}`)
	if status != http.StatusUnauthorized {
		t.Errorf("PUT without credentials: %d, want 401", status)
	}
	// The bearer token still makes an admin.
	if status, _, body := c.raw(t, c.trustOnly(), "GET", "/v1/tokens", "", "Authorization", "Bearer "+adminToken); status != http.StatusOK {
		t.Errorf("admin token: %d %s", status, body)
	}
	if status, _, _ := c.raw(t, c.trustOnly(), "GET", "/v1/services", "", "Authorization", "Bearer wrong-token-0123456789"); status != http.StatusUnauthorized {
		t.Errorf("wrong bearer token: %d, want 401", status)
	}
	// A join token is no API credential.
	tok, err := c.admin.Tokens().Create(t.Context(), "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if status, _, _ := c.raw(t, c.trustOnly(), "GET", "/v1/services", "", "Authorization", "Bearer "+tok.Token); status != http.StatusUnauthorized {
		t.Errorf("join token as bearer: %d, want 401", status)
	}

	// A certificate of another CA, even naming a node, gets no handshake.
	other, _ := pki.NewCA()
	csr, key, _ := nodecert.NewKey("n1")
	certPEM, err := other.SignNode(csr, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	pair, _ := tls.X509KeyPair(certPEM, key)
	cfg := c.trustOnly()
	cfg.Certificates = []tls.Certificate{pair}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	if resp, err := hc.Get(c.url + "/v1/services"); err == nil {
		resp.Body.Close()
		t.Fatalf("foreign node certificate answered %d", resp.StatusCode)
	}
	// A certificate of the cluster CA that names no node is refused too.
	cfg.Certificates = []tls.Certificate{clientCert(t, c.ca, "berth admin")}
	if status, eb, _ := c.raw(t, cfg, "GET", "/v1/services", ""); status != http.StatusUnauthorized || !strings.Contains(eb.Error, "not a node certificate") {
		t.Errorf("non-node certificate: %d %q, want 401", status, eb.Error)
	}
}

// clientCert issues a client certificate of ca with a subject that names
// no node: what a node certificate must be told apart from.
func clientCert(t *testing.T, ca *pki.CA, cn string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caKey, err := x509.ParseECPrivateKey(pemBytes(t, ca.KeyPEM()))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func pemBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	p, _ := pem.Decode(b)
	if p == nil {
		t.Fatal("no PEM block")
	}
	return p.Bytes
}

func TestJoinRefusesBadTokensAndInput(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	revoked, err := c.admin.Tokens().Create(ctx, "to revoke", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Tokens().Revoke(ctx, revoked.ID); err != nil {
		t.Fatal(err)
	}
	expired, _, err := c.store.CreateJoinToken(ctx, store.JoinTokenOptions{Expires: time.Now().Add(-time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	good, err := c.admin.Tokens().Create(ctx, "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := store.ParseJoinToken(good.Token)
	for _, tc := range []struct{ name, token, says string }{
		{"revoked", revoked.Token, "revoked"},
		{"expired", expired, "expired"},
		{"wrong secret", "berth_" + id + "." + strings.Repeat("a", 32), "wrong secret"},
		{"malformed", "hello", "malformed"},
		{"missing", "", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Join(ctx, c.url, client.JoinOptions{Token: tc.token, Node: "n1", CA: c.ca.CertPEM})
			var ce *client.Error
			if !errors.As(err, &ce) || ce.Status != http.StatusUnauthorized || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %v, want a 401 saying %q", err, tc.says)
			}
			t.Log(err)
		})
	}
	csr, _, _ := nodecert.NewKey("n1")
	for _, tc := range []struct{ name, node, csr, field string }{
		{"bad node name", "N1/../n2", string(csr), "node"},
		{"empty node name", "", string(csr), "node"},
		{"bad csr", "n1", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n", "csr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, _ := json.Marshal(apiserver.JoinRequest{Token: good.Token, Node: tc.node, CSR: tc.csr})
			status, eb, _ := c.raw(t, c.trustOnly(), "POST", "/v1/join", string(body))
			if status != http.StatusUnprocessableEntity || eb.Field != tc.field {
				t.Fatalf("got %d %+v, want 422 on %s", status, eb, tc.field)
			}
		})
	}
	// The good token still works after all that, and more than once.
	if _, err := client.Join(ctx, c.url, client.JoinOptions{Token: good.Token, Node: "n1", CA: c.ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	// But not for the name of a node that is alive.
	if err := c.store.KeepNodeAlive(ctx, "n1", time.Minute); err != nil {
		t.Fatal(err)
	}
	_, err = client.Join(ctx, c.url, client.JoinOptions{Token: good.Token, Node: "n1", CA: c.ca.CertPEM})
	if !errdefs.IsAlreadyExists(err) || !strings.Contains(err.Error(), `node "n1"`) {
		t.Fatalf("join as a live node: %v, want AlreadyExists", err)
	}
}

func TestTokensShowNoSecrets(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	tok, err := c.admin.Tokens().Create(ctx, "rack 7", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id, secret, err := store.ParseJoinToken(tok.Token)
	if err != nil || tok.ID != id || tok.Description != "rack 7" || time.Until(tok.Expires) < 23*time.Hour {
		t.Fatalf("created %+v (%v)", tok, err)
	}
	status, _, body := c.raw(t, c.trustOnly(), "GET", "/v1/tokens", "", "Authorization", "Bearer "+adminToken)
	if status != http.StatusOK || !strings.Contains(body, id) || !strings.Contains(body, "rack 7") {
		t.Fatalf("list: %d %s", status, body)
	}
	if strings.Contains(body, secret) || strings.Contains(body, "hash") || strings.Contains(body, "token\"") {
		t.Fatalf("list shows secrets: %s", body)
	}
	if status, eb, _ := c.raw(t, c.trustOnly(), "POST", "/v1/tokens", `{"ttl":"soon"}`, "Authorization", "Bearer "+adminToken); status != 422 || eb.Field != "ttl" {
		t.Fatalf("bad ttl: %d %+v", status, eb)
	}
	if err := c.admin.Tokens().Revoke(ctx, "zzzzzzzz"); !errdefs.IsNotFound(err) {
		t.Fatalf("revoke unknown: %v", err)
	}
	if err := c.admin.Tokens().Revoke(ctx, id); err != nil {
		t.Fatal(err)
	}
	list, err := c.admin.Tokens().List(ctx)
	if err != nil || len(list) != 1 || !list[0].Revoked || list[0].Token != "" {
		t.Fatalf("after revoke: %+v %v", list, err)
	}
}

// A node's watch and its other requests share one HTTP/2 connection: one
// TLS handshake for the node, however many heartbeats it sends, and a
// heartbeat given up on does not close the connection the watch is on.
func TestNodeRequestsShareOneHTTP2Connection(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	tok, err := c.admin.Tokens().Create(ctx, "for n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "n1", CA: c.ca.CertPEM})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := creds.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	var dials atomic.Int32
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
	defer tr.CloseIdleConnections()
	var mu sync.Mutex
	var protos []int
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := tr.RoundTrip(r)
		if err == nil {
			mu.Lock()
			protos = append(protos, resp.ProtoMajor)
			mu.Unlock()
		}
		return resp, err
	})}
	n1, err := client.New(c.url, client.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n1.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"}, Spec: api.NodeSpec{Address: "10.0.0.1"}}); err != nil {
		t.Fatal(err)
	}
	w, err := n1.Nodes().WatchAssignments(ctx, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	beat := func() error {
		_, err := n1.Nodes().UpdateStatus(ctx, &api.Node{Metadata: api.Metadata{Name: "n1"},
			Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: time.Now().UTC()}})
		return err
	}
	for range 5 {
		if err := beat(); err != nil {
			t.Fatal(err)
		}
	}
	// A heartbeat given up on before its answer.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := n1.Nodes().UpdateStatus(gone, &api.Node{Metadata: api.Metadata{Name: "n1"}}); err == nil {
		t.Fatal("a cancelled request succeeded")
	}
	if err := beat(); err != nil {
		t.Fatal(err)
	}
	c.assignAndSee(t, ctx, w)
	mu.Lock()
	defer mu.Unlock()
	for i, p := range protos {
		if p != 2 {
			t.Fatalf("request %d answered over HTTP/%d, want 2", i, p)
		}
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("%d connections for a watch and %d requests, want 1", n, len(protos))
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
