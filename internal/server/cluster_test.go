package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
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

	f := &failover{hosts: []string{host(dead), host(unavailable), host(good)}}
	f.base.Store(good.Client().Transport.(*http.Transport))
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
	all := &failover{hosts: []string{host(unavailable)}}
	all.base.Store(good.Client().Transport.(*http.Transport))
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
	// Two servers of one external etcd: the first makes the seal key, the
	// second gets a copy of it.
	dd1, dd2 := t.TempDir(), t.TempDir()
	c1 := credentials(t, ctx, st, dd1, "", true, false, []string{"127.0.0.11", "s1"})
	keyFile2 := filepath.Join(t.TempDir(), "seal.key")
	copyFile(t, SealKeyPath(dd1, ""), keyFile2, 0o600)
	c2 := credentials(t, ctx, st, dd2, keyFile2, false, false, []string{"127.0.0.12", "s2"})
	if c1.Token != c2.Token || len(c1.Token) < 32 {
		t.Fatalf("tokens %q and %q, want one cluster token", c1.Token, c2.Token)
	}
	// The metrics token too is one per cluster, and not the admin token.
	if c1.MetricsToken != c2.MetricsToken || len(c1.MetricsToken) < 32 || c1.MetricsToken == c1.Token {
		t.Fatalf("metrics tokens %q and %q beside admin token %q: want one of their own", c1.MetricsToken, c2.MetricsToken, c1.Token)
	}
	if b, err := os.ReadFile(filepath.Join(dd2, "tls", MetricsTokenFile)); err != nil || strings.TrimSpace(string(b)) != c1.MetricsToken {
		t.Errorf("%s: %q, %v", MetricsTokenFile, b, err)
	}
	if fi, err := os.Stat(filepath.Join(dd2, "tls", MetricsTokenFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("%s: %v, %v; want mode 0600", MetricsTokenFile, fi, err)
	}
	ca1, _ := os.ReadFile(c1.CAFile)
	ca2, _ := os.ReadFile(c2.CAFile)
	if !bytes.Equal(ca1, ca2) || len(ca1) == 0 {
		t.Fatal("the servers wrote different CAs")
	}
	d2 := filepath.Join(dd2, "tls")
	if fi, err := os.Stat(filepath.Join(d2, "ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v, %v; want mode 0600", fi, err)
	}
	assertSealedAtRest(t, st, c1)
	// Each server's certificate names its own address and chains to the
	// one CA, so a client trusting the CA reaches either.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca1)
	for host, c := range map[string]*Credentials{"127.0.0.11": c1, "127.0.0.12": c2} {
		leaf, err := x509.ParseCertificate(c.TLS.Certificates[0].Certificate[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("certificate for %s: %v", host, err)
		}
	}
	// A restart finds the same credentials.
	again := credentials(t, ctx, st, dd1, "", false, true, []string{"127.0.0.11", "s1"})
	if again.Token != c1.Token || again.MetricsToken != c1.MetricsToken {
		t.Fatalf("restart: tokens changed")
	}
	// A server with a seal key of its own opens nothing, and says why.
	dd3 := t.TempDir()
	sec3, err := loadSecrets(dd3, "", true, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := clusterCredentials(ctx, st, sec3, []string{"127.0.0.13"}); !errors.Is(err, seal.ErrOpen) || !strings.Contains(err.Error(), "seal key") {
		t.Fatalf("a server with another seal key: %v, want ErrOpen naming the seal key", err)
	}
	// One joining a cluster of several without the copies is told what to copy.
	if _, err := loadSecrets(t.TempDir(), "", false, true); !errdefs.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "berth server init") {
		t.Fatalf("a member without the cluster's secrets: %v", err)
	}
}

// TestPlaintextSecretsAreSealedOnUpgrade starts from what an older
// version left: the CA and token in etcd in the clear, and the CA key
// unsealed on disk. The first start seals all three, and keeps them.
func TestPlaintextSecretsAreSealedOnUpgrade(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := store.Open(ctx, store.Config{DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	old, _ := json.Marshal(sharedCA{Cert: string(ca.CertPEM), Key: string(ca.KeyPEM())})
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for name, v := range map[string][]byte{sealedCAName: old, sealedTokenName: []byte(token)} {
		if _, err := st.SharedValue(ctx, name, func() ([]byte, error) { return v, nil }); err != nil {
			t.Fatal(err)
		}
	}
	clearRev, err := st.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dd := t.TempDir()
	tlsDir := filepath.Join(dd, "tls")
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tlsDir, pki.CACertFile), ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tlsDir, pki.CAKeyFile), ca.KeyPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	c := credentials(t, ctx, st, dd, "", true, true, []string{"127.0.0.1"})
	if c.Token != token || !c.CA.Cert.Equal(ca.Cert) {
		t.Fatalf("after the upgrade: token %q, same CA %v; want the old ones kept", c.Token, c.CA.Cert.Equal(ca.Cert))
	}
	assertSealedAtRest(t, st, c)
	// Nor does the store's history keep them.
	if r, err := st.Client().Get(ctx, "", clientv3.WithFromKey(), clientv3.WithRev(clearRev)); err == nil {
		for _, kv := range r.Kvs {
			if strings.Contains(string(kv.Value), token) || strings.Contains(string(kv.Value), "PRIVATE KEY") {
				t.Errorf("etcd key %s at revision %d still holds a secret in the clear", kv.Key, clearRev)
			}
		}
	}
	onDisk, _ := os.ReadFile(filepath.Join(tlsDir, pki.CAKeyFile))
	if bytes.Contains(onDisk, []byte("PRIVATE KEY")) {
		t.Errorf("tls/ca.key still holds the key in the clear:\n%s", onDisk)
	}
}

// assertSealedAtRest reads every key of the store raw, as etcdctl would,
// and fails on the CA key PEM or the admin token in the clear.
// credentials loads the secrets of the server of data dir dd, as
// loadSecrets(dd, sealKeyFile, mayCreate, needCA) does, and takes the
// cluster's credentials from st with them, its certificate for hosts.
func credentials(t *testing.T, ctx context.Context, st *store.Store, dd, sealKeyFile string, mayCreate, needCA bool, hosts []string) *Credentials {
	t.Helper()
	sec, err := loadSecrets(dd, sealKeyFile, mayCreate, needCA)
	if err != nil {
		t.Fatal(err)
	}
	c, err := clusterCredentials(ctx, st, sec, hosts)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func assertSealedAtRest(t *testing.T, st *store.Store, c *Credentials) {
	t.Helper()
	r, err := st.Client().Get(context.Background(), "", clientv3.WithFromKey())
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := c.CA.KeyPEM()
	keyBody := bytes.Split(keyPEM, []byte("\n"))[1]
	n := 0
	for _, kv := range r.Kvs {
		v := string(kv.Value)
		if strings.Contains(v, "PRIVATE KEY") || strings.Contains(v, string(keyBody)) || strings.Contains(v, c.Token) {
			t.Errorf("etcd key %s holds a cluster secret in the clear", kv.Key)
		}
		if strings.Contains(string(kv.Key), "/cluster/api-") {
			n++
		}
	}
	if n != 2 {
		t.Errorf("found %d sealed cluster values, want the CA and the token", n)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, mode); err != nil {
		t.Fatal(err)
	}
}

func TestMemberOfAddsItselfAndSchemes(t *testing.T) {
	m, err := memberOf("s1", ServerConfig{PeerListen: "127.0.0.1:7380", EtcdClientListen: "127.0.0.1:7379",
		Peers: map[string]string{"s2": "127.0.0.2:7380"}})
	if err != nil {
		t.Fatal(err)
	}
	if m.PeerURL != "https://127.0.0.1:7380" || m.ClientURL != "http://127.0.0.1:7379" ||
		m.InitialCluster["s1"] != m.PeerURL || m.InitialCluster["s2"] != "https://127.0.0.2:7380" {
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
	csr, key, err := nodecert.NewKey("n1")
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
	rc, err := newRenewingCertificate(NodeCredentialsDir(dir), "n1", got, (*client.NodeCredentials).Save, slog.Default())
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

func TestPeerCertificateRenewedBeforeItEnds(t *testing.T) {
	sec, err := loadSecrets(t.TempDir(), "", true, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sec.issuePeer("s1", "https://127.0.0.1:7380", 10*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	read := func() *x509.Certificate {
		b, err := os.ReadFile(filepath.Join(sec.dir, peerCertFile))
		if err != nil {
			t.Fatal(err)
		}
		c, err := nodecert.ParseCertificate(b)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	short := read()
	if short.Subject.CommonName != pki.PeerCommonName {
		t.Errorf("peer certificate names %q, want %q", short.Subject.CommonName, pki.PeerCommonName)
	}
	renewed, err := sec.renewPeerIfDue("s1", "https://127.0.0.1:7380", time.Now())
	if err != nil || !renewed {
		t.Fatalf("a certificate ending in 10 days: renewed %v, %v", renewed, err)
	}
	fresh := read()
	if !fresh.NotAfter.After(short.NotAfter.Add(300 * 24 * time.Hour)) {
		t.Errorf("renewed certificate ends %v, want a year out", fresh.NotAfter)
	}
	if _, err := fresh.Verify(x509.VerifyOptions{Roots: sec.ca.Pool(), DNSName: "127.0.0.1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("renewed certificate: %v", err)
	}
	if renewed, err := sec.renewPeerIfDue("s1", "https://127.0.0.1:7380", time.Now()); err != nil || renewed {
		t.Errorf("a fresh certificate: renewed %v, %v; want it kept", renewed, err)
	}
}

// berth up --listen made its own self-signed certificate and token before
// it shared the servers' credentials: a data dir from then keeps its
// token, and its certificate is replaced by one the new CA issues.
func TestUpCredentialsFromBeforeTheCA(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dd := t.TempDir()
	st, err := store.Open(ctx, store.Config{DataDir: dd})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	dir := filepath.Join(dd, "tls")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const old = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(old+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pki.LoadOrIssueServer(dir, other, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	c := credentials(t, ctx, st, dd, "", true, false, []string{"127.0.0.1"})
	if c.Token != old {
		t.Errorf("token %q, want the one from before %q", c.Token, old)
	}
	leaf, err := x509.ParseCertificate(c.TLS.Certificates[0].Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: c.CA.Pool(), DNSName: "127.0.0.1"}); err != nil {
		t.Errorf("the API certificate is not the cluster CA's: %v", err)
	}
}

// After a renewal the agent's requests go on a new connection, presenting
// the new certificate, even while its one HTTP/2 connection is busy with a
// watch that never lets it go idle.
func TestFailoverRenewedDialsAgainPastABusyConnection(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	conns := 0
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/watch" {
			w.WriteHeader(http.StatusOK)
			http.NewResponseController(w).Flush()
			<-release
		}
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			conns++
			mu.Unlock()
		}
	}
	srv.StartTLS()
	defer srv.Close()
	defer close(release)
	u, _ := url.Parse(srv.URL)
	f := &failover{hosts: []string{u.Host}}
	f.base.Store(srv.Client().Transport.(*http.Transport))
	hc := &http.Client{Transport: f}
	watch, err := hc.Get(srv.URL + "/watch")
	if err != nil {
		t.Fatal(err)
	}
	defer watch.Body.Close()
	get := func() int {
		t.Helper()
		resp, err := hc.Get(srv.URL + "/beat")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("HTTP/%d, want 2", resp.ProtoMajor)
		}
		mu.Lock()
		defer mu.Unlock()
		return conns
	}
	if n := get(); n != 1 {
		t.Fatalf("%d connections before the renewal, want the watch's one", n)
	}
	f.CloseIdleConnections() // what sufficed over HTTP/1.1: the connection is busy
	if n := get(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
	f.Renewed()
	if n := get(); n != 2 {
		t.Fatalf("%d connections after the renewal, want a new one", n)
	}
}

// An agent's transport is the API client's, with its settings for HTTP/2
// (frames of 16 KiB, no header indexed), which spare the server what it
// would keep for every node's connection; it adds its TLS and dialer.
func TestAgentTransportIsTheClients(t *testing.T) {
	cfg := AgentConfig{Servers: []string{"https://127.0.0.1:1", "https://127.0.0.1:2"}, Credential: BearerToken("0123456789abcdef0123")}
	_, _, rt, _, err := agentClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	bt, ok := rt.(bearerTransport)
	if !ok {
		t.Fatalf("the agent's transport is a %T, want a bearerTransport", rt)
	}
	fo, ok := bt.inner.(*failover)
	if !ok {
		t.Fatalf("the agent's inner transport is a %T, want a failover", bt.inner)
	}
	got, want := fo.base.Load().HTTP2, client.NewTransport().HTTP2
	if got == nil || got.MaxReadFrameSize != want.MaxReadFrameSize || got.MaxEncoderHeaderTableSize != want.MaxEncoderHeaderTableSize {
		t.Fatalf("the agent's HTTP/2 settings are %+v, want the API client's, %+v", got, want)
	}
}
