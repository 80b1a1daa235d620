// Package registrytest runs a real registry for tests: Debian's
// docker-registry (CNCF distribution 2.8) on loopback with TLS from a CA
// made by the test, behind htpasswd basic auth or a token server in the
// test that serves Docker Hub's bearer flow.
package registrytest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// CA is a CA and a server certificate it signed for 127.0.0.1 (and more
// addresses when asked).
type CA struct {
	CAFile, CertFile, KeyFile string
	Pool                      *x509.CertPool
	cert                      tls.Certificate
}

// NewCA makes a CA and a server certificate for 127.0.0.1, localhost and ips.
func NewCA(t testing.TB, ips ...string) *CA {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "berth test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1)}, parseIPs(ips)...), DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	ca := &CA{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "cert.pem"), KeyFile: filepath.Join(dir, "key.pem"), Pool: x509.NewCertPool()}
	writePEM(t, ca.CAFile, "CERTIFICATE", caDER)
	writePEM(t, ca.CertFile, "CERTIFICATE", der)
	writePEM(t, ca.KeyFile, "EC PRIVATE KEY", keyDER)
	ca.Pool.AddCert(caCert)
	if ca.cert, err = tls.LoadX509KeyPair(ca.CertFile, ca.KeyFile); err != nil {
		t.Fatal(err)
	}
	return ca
}

func parseIPs(ips []string) []net.IP {
	var out []net.IP
	for _, s := range ips {
		out = append(out, net.ParseIP(s))
	}
	return out
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ServeTLS serves h on a loopback port with ca's certificate.
func (ca *CA) ServeTLS(t testing.TB, h http.Handler) (host string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.cert}, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (ca *CA) Client() *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool, MinVersion: tls.VersionTLS12}}, Timeout: 5 * time.Second}
}

// NeedDistribution skips (or in CI fails) when docker-registry is missing.
func NeedDistribution(t testing.TB) string {
	t.Helper()
	return testenv.RequireBinary(t, "docker-registry")
}

// StartDistribution runs docker-registry on a free loopback port with TLS
// from ca and the given auth section (YAML, indented two spaces), and
// returns its host:port once it answers.
func StartDistribution(t testing.TB, ca *CA, auth string) string {
	t.Helper()
	return Start(t, ca, Options{Auth: auth}).Addr
}

// Options tune Start.
type Options struct {
	// Auth is the config's auth section (YAML indented two spaces); ""
	// lets anyone pull and push.
	Auth string
	// Netns is the network namespace (a path) to run in; "" for the test's.
	Netns string
	// Addr is the address to listen on; a free loopback port when "".
	// One in Netns must be given.
	Addr string
}

// Distribution is a running docker-registry.
type Distribution struct {
	Addr string
	log  string
}

var blobGET = regexp.MustCompile(`"GET /v2/\S+/blobs/(sha256:[0-9a-f]{64}) HTTP/[0-9.]+" 200 `)

// BlobGETs counts, by digest, the blob downloads the registry answered
// with 200, from its access log.
func (d *Distribution) BlobGETs() map[string]int {
	data, _ := os.ReadFile(d.log)
	out := map[string]int{}
	for _, m := range blobGET.FindAllStringSubmatch(string(data), -1) {
		out[m[1]]++
	}
	return out
}

// Start runs docker-registry with TLS from ca (whose certificate must name
// the address) and returns once it listens. It is killed when the test ends.
func Start(t testing.TB, ca *CA, opts Options) *Distribution {
	t.Helper()
	bin := NeedDistribution(t)
	dir := t.TempDir()
	addr := opts.Addr
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr = l.Addr().String()
		l.Close()
	}
	auth := ""
	if opts.Auth != "" {
		auth = "auth:\n" + opts.Auth + "\n"
	}
	cfg := fmt.Sprintf(`version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: %s
http:
  addr: %s
  secret: berth-test-%d
  tls:
    certificate: %s
    key: %s
%s`, filepath.Join(dir, "data"), addr, os.Getpid(), ca.CertFile, ca.KeyFile, auth)
	cfgFile := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", cfgFile)
	if opts.Netns != "" {
		cmd = exec.Command("nsenter", "--net="+opts.Netns, bin, "serve", cfgFile)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		logf.Close()
	})
	// It says so once it listens: the test may not reach its namespace.
	deadline := time.Now().Add(15 * time.Second)
	for {
		log, _ := os.ReadFile(logf.Name())
		if strings.Contains(string(log), "listening on") {
			return &Distribution{Addr: addr, log: logf.Name()}
		}
		select {
		case <-exited:
			t.Fatalf("docker-registry exited: %s", log)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("docker-registry on %s: not listening after 15s: %s", addr, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// HtpasswdAuth makes an htpasswd file (bcrypt, as distribution wants)
// with user's password and returns the auth section naming it.
func HtpasswdAuth(t testing.TB, user, password string) string {
	t.Helper()
	out, err := exec.Command("htpasswd", "-Bbn", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("  htpasswd:\n    realm: berth-test\n    path: %s", path)
}

// TokenServer serves Docker Hub's bearer flow: anyone gets a pull token
// for repositories under "public/", user with password gets whatever
// scope is asked, a wrong password gets 401.
type TokenServer struct {
	user, password string
	key            *ecdsa.PrivateKey
	certDER        []byte
	bundle         string // the signing certificate, for the registry's rootcertbundle
	Host           string
	Requests       atomic.Int64 // token requests served
}

const tokenService, tokenIssuer = "berth-test-registry", "berth-test-issuer"

func NewTokenServer(t testing.TB, ca *CA, user, password string) *TokenServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "berth test token signer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ts := &TokenServer{user: user, password: password, key: key, certDER: der, bundle: filepath.Join(t.TempDir(), "token.pem")}
	writePEM(t, ts.bundle, "CERTIFICATE", der)
	ts.Host = ca.ServeTLS(t, http.HandlerFunc(ts.serve))
	return ts
}

func (ts *TokenServer) AuthSection() string {
	// The realm is named by host name: the library refuses a token realm at
	// a loopback IP literal on another port than the registry's (SSRF).
	_, port, _ := net.SplitHostPort(ts.Host)
	return fmt.Sprintf("  token:\n    realm: https://localhost:%s/token\n    service: %s\n    issuer: %s\n    rootcertbundle: %s", port, tokenService, tokenIssuer, ts.bundle)
}

type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

func (ts *TokenServer) serve(w http.ResponseWriter, r *http.Request) {
	ts.Requests.Add(1)
	user, pass, hasAuth := r.BasicAuth()
	if hasAuth && (user != ts.user || pass != ts.password) {
		http.Error(w, `{"details":"incorrect username or password"}`, http.StatusUnauthorized)
		return
	}
	var grants []access
	for _, scope := range r.URL.Query()["scope"] {
		parts := strings.Split(scope, ":")
		if len(parts) != 3 {
			continue
		}
		a := access{Type: parts[0], Name: parts[1]}
		for _, act := range strings.Split(parts[2], ",") {
			if hasAuth || (act == "pull" && strings.HasPrefix(a.Name, "public/")) {
				a.Actions = append(a.Actions, act)
			}
		}
		grants = append(grants, a)
	}
	if grants == nil {
		grants = []access{}
	}
	now := time.Now()
	jti := make([]byte, 8)
	_, _ = rand.Read(jti)
	claims := map[string]any{
		"iss": tokenIssuer, "sub": user, "aud": tokenService,
		"exp": now.Add(5 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": hex.EncodeToString(jti), "access": grants,
	}
	header := map[string]any{"typ": "JWT", "alg": "ES256", "x5c": []string{base64.StdEncoding.EncodeToString(ts.certDER)}}
	enc := func(v any) string {
		b, _ := json.Marshal(v)
		return base64.RawURLEncoding.EncodeToString(b)
	}
	signing := enc(header) + "." + enc(claims)
	sum := sha256.Sum256([]byte(signing))
	rs, ss, err := ecdsa.Sign(rand.Reader, ts.key, sum[:])
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	sig := make([]byte, 64)
	rs.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	token := signing + "." + base64.RawURLEncoding.EncodeToString(sig)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": token, "access_token": token, "expires_in": 300, "issued_at": now.Format(time.RFC3339)})
}
