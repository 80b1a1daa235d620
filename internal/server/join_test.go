package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
	"github.com/berth-dev/berth/internal/store"
)

// An agent whose join went through but whose answer was lost (a server
// timing out after the transaction committed) asks again with the same
// key, and gets its certificate instead of finding its own name taken.
func TestAgentJoinAskedAgainAfterALostAnswer(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	st, err := store.Open(ctx, store.Config{DataDir: filepath.Join(dir, "srv")})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(dir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.LoadOrIssueServer(filepath.Join(dir, "pki"), ca, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := seal.Create(filepath.Join(dir, "seal.key"))
	if err != nil {
		t.Fatal(err)
	}
	srv := apiserver.New(apiserver.Config{Store: st, CA: ca, SealKey: key})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, l, ca.ServerTLSConfig(cert), "admin-token-0123456789abcdef") }()
	t.Cleanup(func() {
		cancel()
		<-done
		st.Close()
	})
	tok, _, err := st.CreateJoinToken(ctx, store.JoinTokenOptions{Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}

	// In front of the server, a proxy that passes the first join on and
	// answers it 503, as a server whose etcd timed out after committing.
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	target, _ := url.Parse("https://" + l.Addr().String())
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	var joins atomic.Int32
	proxy := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/join" && joins.Add(1) == 1 {
			rec := httptest.NewRecorder()
			rp.ServeHTTP(rec, r)
			if rec.Code != http.StatusOK {
				t.Errorf("the first join: %d %s", rec.Code, rec.Body)
			}
			http.Error(w, `{"error":"etcdserver: request timed out"}`, http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	proxy.TLS = ca.ServerTLSConfig(cert)
	proxy.StartTLS()
	defer proxy.Close()

	caFile := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := AgentConfig{DataDir: filepath.Join(dir, "agent"), Servers: []string{proxy.URL}, CAFile: caFile, JoinToken: tok}
	nc, err := joinCluster(ctx, cfg, "n1", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	if n := joins.Load(); n < 2 {
		t.Fatalf("%d joins reached the proxy, want the lost one asked again", n)
	}
	leaf, err := nodecert.ParseCertificate(nc.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	cred, _, err := st.GetNodeCredential(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if !cred.Allows(leaf.SerialNumber.Text(16), time.Now()) {
		t.Fatalf("the certificate the agent got (serial %s) is not the node's: %+v", leaf.SerialNumber.Text(16), cred.Certs)
	}
}
