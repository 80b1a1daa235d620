package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/store"
)

func TestFailoverMovesToTheNextServer(t *testing.T) {
	var hits [3]int
	handler := func(i int, status int) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits[i]++
			b, _ := io.ReadAll(r.Body)
			w.WriteHeader(status)
			w.Write(b)
		})
	}
	dead := httptest.NewTLSServer(handler(0, http.StatusOK))
	dead.Close() // nothing listens there any more
	unavailable := httptest.NewTLSServer(handler(1, http.StatusServiceUnavailable))
	defer unavailable.Close()
	good := httptest.NewTLSServer(handler(2, http.StatusOK))
	defer good.Close()
	host := func(s *httptest.Server) string { u, _ := url.Parse(s.URL); return u.Host }

	f := &failover{base: good.Client().Transport, hosts: []string{host(dead), host(unavailable), host(good)}}
	hc := &http.Client{Transport: f}
	for i := range 2 {
		resp, err := hc.Post(dead.URL+"/v1/x", "application/json", bytes.NewReader([]byte(`{"n":1}`)))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != `{"n":1}` {
			t.Fatalf("request %d: %s %q, want the body echoed by the good server", i, resp.Status, b)
		}
	}
	// The second request went straight to the server that answered.
	if hits[1] != 1 || hits[2] != 2 {
		t.Errorf("hits %v, want the unavailable server tried once and the good one twice", hits)
	}
	// With every server unavailable, the last answer comes back as is.
	all := &failover{base: good.Client().Transport, hosts: []string{host(unavailable)}}
	resp, err := (&http.Client{Transport: all}).Get(unavailable.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("status %s, want 503", resp.Status)
	}
}

func TestServersShareCredentials(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	d1, d2 := filepath.Join(t.TempDir(), "tls"), filepath.Join(t.TempDir(), "tls")
	c1, err := clusterCredentials(ctx, st, d1, []string{"127.0.0.11", "s1"})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := clusterCredentials(ctx, st, d2, []string{"127.0.0.12", "s2"})
	if err != nil {
		t.Fatal(err)
	}
	if c1.token != c2.token || len(c1.token) < 32 {
		t.Fatalf("tokens %q and %q, want one cluster token", c1.token, c2.token)
	}
	ca1, _ := os.ReadFile(c1.caFile)
	ca2, _ := os.ReadFile(c2.caFile)
	if !bytes.Equal(ca1, ca2) || len(ca1) == 0 {
		t.Fatal("the servers wrote different CAs")
	}
	if fi, err := os.Stat(filepath.Join(d2, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v, %v; want mode 0600", fi, err)
	}
	// Each server's certificate names its own address and chains to the
	// one CA, so a client trusting the CA reaches either.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca1)
	for host, c := range map[string]*clusterCreds{"127.0.0.11": c1, "127.0.0.12": c2} {
		leaf, err := x509.ParseCertificate(c.tls.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("certificate for %s: %v", host, err)
		}
	}
	// A restart finds the same credentials.
	again, err := clusterCredentials(ctx, st, d1, []string{"127.0.0.11", "s1"})
	if err != nil || again.token != c1.token {
		t.Fatalf("restart: %v, token changed: %v", err, again.token != c1.token)
	}
}

func TestMemberOfAddsItselfAndSchemes(t *testing.T) {
	m, err := memberOf("s1", ServerConfig{PeerListen: "127.0.0.1:7380", EtcdClientListen: "127.0.0.1:7379",
		Peers: map[string]string{"s2": "127.0.0.2:7380"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.PeerURL != "http://127.0.0.1:7380" || m.ClientURL != "http://127.0.0.1:7379" ||
		m.InitialCluster["s1"] != m.PeerURL || m.InitialCluster["s2"] != "http://127.0.0.2:7380" {
		t.Errorf("member %+v", m)
	}
	if _, err := memberOf("s1", ServerConfig{}); err == nil {
		t.Error("a member without a peer address")
	}
}

func TestAgentCredentialsFromItsDataDir(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := AgentConfig{DataDir: dir, Servers: []string{"https://127.0.0.1:1"}, NodeName: "n1"}
	// Not joined and no token: nothing to authenticate with.
	if err := Agent(ctx, cfg); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("agent without credentials or token: %v, want invalid argument", err)
	}
	// A token but no way to trust the servers.
	cfg.JoinToken = "berth_aaaaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	if err := Agent(ctx, cfg); !errdefs.IsInvalidArgument(err) {
		t.Fatalf("join without CA or pin: %v, want invalid argument", err)
	}

	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	csr, key, err := pki.NewNodeKey("n1")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, "n1", 0)
	if err != nil {
		t.Fatal(err)
	}
	nc := &client.NodeCredentials{Certificate: cert, Key: key, CA: ca.CertPEM}
	if err := nc.Save(NodeCredentialsDir(dir)); err != nil {
		t.Fatal(err)
	}
	got, node, err := loadNodeCredentials(dir)
	if err != nil || node != "n1" || !bytes.Equal(got.Certificate, bytes.TrimSpace(cert)) {
		t.Fatalf("saved credentials: node %q, %v", node, err)
	}
	// The certificate names the node: another name is refused.
	cfg.NodeName = "n2"
	if err := Agent(ctx, cfg); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("agent as n2 with n1's certificate: %v, want failed precondition", err)
	}
	// The credential presents the certificate and trusts the cluster CA.
	tc := &tls.Config{}
	if _, err := (NodeCertificate{got}).Apply(tc); err != nil || len(tc.Certificates) != 1 || tc.RootCAs == nil {
		t.Fatalf("NodeCertificate.Apply: %v, %d certificates", err, len(tc.Certificates))
	}
	// The renewing credential presents whichever certificate is newest.
	rc, err := newRenewingCertificate(NodeCredentialsDir(dir), "n1", got, slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	tc = &tls.Config{}
	if _, err := rc.Apply(tc); err != nil || tc.GetClientCertificate == nil || tc.RootCAs == nil {
		t.Fatalf("renewing Apply: %v", err)
	}
	if c, _ := tc.GetClientCertificate(nil); c.Leaf.SerialNumber.Cmp(rc.cert.Load().Leaf.SerialNumber) != 0 {
		t.Fatal("presents another certificate")
	}
	if at := renewAt(rc.cert.Load()); at.Before(time.Now().Add(pki.DefaultNodeValidity/2)) || at.After(time.Now().Add(pki.DefaultNodeValidity)) {
		t.Fatalf("a year's certificate renews at %v, want two thirds in", at)
	}
	// A wrong --ca-pin against the saved CA: refused at once, both pins named.
	cfg.NodeName, cfg.CAPin = "", "sha256:"+strings.Repeat("0", 64)
	if err := Agent(ctx, cfg); err == nil || !strings.Contains(err.Error(), "expected "+cfg.CAPin) || !strings.Contains(err.Error(), ca.Pin()) {
		t.Fatalf("agent with a wrong pin: %v, want a mismatch naming both pins", err)
	}
	cfg.CAPin = ""
	// An expired certificate: refused at start, saying what to do.
	old, err := ca.SignNode(csr, "n1", time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	nc.Certificate = old
	if err := nc.Save(NodeCredentialsDir(dir)); err != nil {
		t.Fatal(err)
	}
	if err := Agent(ctx, cfg); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("agent with an expired certificate: %v, want failed precondition saying expired", err)
	}
}
