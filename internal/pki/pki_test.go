package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
)

func TestCAIsMadeOnceAndKeptPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !ca.Cert.IsCA || ca.Cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("CA certificate: IsCA %v, algorithm %v", ca.Cert.IsCA, ca.Cert.PublicKeyAlgorithm)
	}
	for name, want := range map[string]os.FileMode{"": 0o700, CAKeyFile: 0o600, CACertFile: 0o644} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", filepath.Join(dir, name), fi.Mode().Perm(), want)
		}
	}
	again, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Cert.Equal(ca.Cert) || again.Pin() != ca.Pin() {
		t.Fatal("second start made a new CA instead of loading the first")
	}
	// A key without its certificate is reported, not replaced.
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateCA(dir); !errdefs.IsFailedPrecondition(err) {
		t.Fatalf("half a CA: got %v, want FailedPrecondition", err)
	}
}

func TestSignNodeNamesTheNodeWhateverTheRequestAsks(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	// A request that asks for another subject and for server use.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: "node:other", Organization: []string{"system:masters"}},
		DNSNames: []string{"evil.example"},
	}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	certPEM, err := ca.SignNode(csrPEM, "n1", 1000*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := nodecert.ParseCertificate(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if name, ok := nodecert.NodeName(cert); !ok || name != "n1" {
		t.Fatalf("node name %q %v, want n1", name, ok)
	}
	if len(cert.DNSNames) != 0 || len(cert.ExtKeyUsage) != 1 || cert.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth || cert.IsCA {
		t.Fatalf("certificate carries more than a client identity: dns %v, usages %v, ca %v", cert.DNSNames, cert.ExtKeyUsage, cert.IsCA)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > DefaultNodeValidity+clockSkew {
		t.Fatalf("validity %v exceeds the bound %v", life, DefaultNodeValidity)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("node certificate does not verify against the CA: %v", err)
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Fatal("node certificate verifies for server use")
	}
	short, err := ca.SignNode(csrPEM, "n1", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c, _ := nodecert.ParseCertificate(short); c.NotAfter.After(time.Now().Add(time.Hour + time.Minute)) {
		t.Fatalf("asked for an hour, got until %v", c.NotAfter)
	}
}

func TestSignNodeRefusesBadRequests(t *testing.T) {
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	csrPEM, _, err := nodecert.NewKey("n1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(csrPEM)
	tampered := append([]byte(nil), b.Bytes...)
	tampered[len(tampered)-5] ^= 0xff // breaks the signature
	for name, in := range map[string][]byte{
		"not PEM":       []byte("hello"),
		"a key":         pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b.Bytes}),
		"garbage":       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: []byte("xx")}),
		"bad signature": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: tampered}),
	} {
		if _, err := ca.SignNode(in, "n1", 0); !errdefs.IsInvalidArgument(err) {
			t.Errorf("%s: got %v, want InvalidArgument", name, err)
		}
	}
}

func TestServerCertificateIsReusedWhileItCoversTheHosts(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	hosts := []string{"127.0.0.1", "localhost", "srv1"}
	first, err := LoadOrIssueServer(dir, ca, hosts)
	if err != nil {
		t.Fatal(err)
	}
	if len(first.Certificate) != 2 {
		t.Fatalf("chain of %d certificates, want server and CA", len(first.Certificate))
	}
	leaf, _ := x509.ParseCertificate(first.Certificate[0])
	for _, h := range hosts {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: ca.Pool()}); err != nil {
			t.Errorf("server certificate for %s: %v", h, err)
		}
	}
	if fi, err := os.Stat(filepath.Join(dir, ServerKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("server key: %v %v", fi.Mode(), err)
	}
	same, err := LoadOrIssueServer(dir, ca, hosts[:2])
	if err != nil {
		t.Fatal(err)
	}
	if string(same.Certificate[0]) != string(first.Certificate[0]) {
		t.Fatal("a certificate covering the hosts was replaced")
	}
	more, err := LoadOrIssueServer(dir, ca, append(hosts, "10.1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(more.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "10.1.2.3", Roots: ca.Pool()}); err != nil {
		t.Fatalf("a new host was not added: %v", err)
	}
	// Another CA's certificate is not reused.
	other, _ := LoadOrCreateCA(t.TempDir())
	moved, err := LoadOrIssueServer(dir, other, hosts)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(moved.Certificate[0])
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "srv1", Roots: other.Pool()}); err != nil {
		t.Fatalf("certificate of the old CA kept: %v", err)
	}
}

func TestPin(t *testing.T) {
	ca, _ := NewCA()
	other, _ := NewCA()
	if !nodecert.MatchesPin(ca.Cert, ca.Pin()) || nodecert.MatchesPin(other.Cert, ca.Pin()) || nodecert.MatchesPin(ca.Cert, "") {
		t.Fatal("pins do not tell CAs apart")
	}
}
