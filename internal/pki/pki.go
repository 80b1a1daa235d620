// Package pki is the cluster's certificate authority: it makes and keeps
// the CA (ECDSA P-256) in a directory, issues the API server's
// certificate, and signs the certificate requests of joining nodes.
//
// A node certificate names its node as package api/nodecert says, and is
// good for client authentication only. The CA's public key pin (Pin) lets
// an agent trust the server on first contact before it has the CA
// certificate.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/atomicfile"
)

// Validity periods.
const (
	CAValidity = 10 * 365 * 24 * time.Hour
	// ServerValidity is how long an API server certificate lasts;
	// LoadOrIssueServer renews it a month before it ends.
	ServerValidity = 365 * 24 * time.Hour
	// DefaultNodeValidity is how long a node certificate lasts unless the
	// signer asks for less; it is also the most a signer may ask for.
	DefaultNodeValidity = 365 * 24 * time.Hour
	// clockSkew backdates certificates so that a node whose clock is a
	// little behind accepts them at once.
	clockSkew = 5 * time.Minute
)

// File names in a CA directory.
const (
	CACertFile     = "ca.crt"
	CAKeyFile      = "ca.key"
	ServerCertFile = "server.crt"
	ServerKeyFile  = "server.key"
)

// CA is a cluster certificate authority.
type CA struct {
	Cert *x509.Certificate
	// CertPEM is Cert in PEM, what nodes and clients trust.
	CertPEM []byte
	key     *ecdsa.PrivateKey
}

// LoadOrCreateCA loads the CA kept in dir (ca.crt, ca.key), making one on
// first use. The directory is 0700 and the key 0600.
func LoadOrCreateCA(dir string) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("ca dir %s: %w", dir, err)
	}
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		ca, err := NewCA()
		if err != nil {
			return nil, err
		}
		// The key goes first: a crash between the two writes leaves a key
		// without a certificate, which the next start reports rather than
		// silently replacing a CA that nodes may already trust.
		if err := atomicfile.Write(keyPath, ca.KeyPEM(), 0o600); err != nil {
			return nil, fmt.Errorf("ca key %s: %w", keyPath, err)
		}
		if err := atomicfile.Write(certPath, ca.CertPEM, 0o644); err != nil {
			return nil, fmt.Errorf("ca certificate %s: %w", certPath, err)
		}
		return ca, nil
	case certErr != nil || keyErr != nil:
		return nil, fmt.Errorf("ca in %s: %w: needs both %s and %s (%v; %v)", dir, errdefs.ErrFailedPrecondition, CACertFile, CAKeyFile, certErr, keyErr)
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("ca certificate %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("ca key %s: %w", keyPath, err)
	}
	ca, err := ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca in %s: %w", dir, err)
	}
	return ca, nil
}

// NewCA makes a CA in memory.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "berth cluster CA", Organization: []string{"berth"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	return &CA{Cert: cert, CertPEM: encodeCert(der), key: key}, nil
}

// ParseCA reads a CA from its PEM certificate and key.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	cert, err := nodecert.ParseCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("ca certificate: %w", err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("ca certificate %q: %w: not a CA", cert.Subject.CommonName, errdefs.ErrInvalidArgument)
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, fmt.Errorf("ca key: %w: no PEM block", errdefs.ErrInvalidArgument)
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("ca key: %w: %w", errdefs.ErrInvalidArgument, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("ca key: %w: does not match the certificate", errdefs.ErrInvalidArgument)
	}
	return &CA{Cert: cert, CertPEM: encodeCert(cert.Raw), key: key}, nil
}

// KeyPEM is the CA's private key in PEM.
func (ca *CA) KeyPEM() []byte {
	kb, _ := x509.MarshalECPrivateKey(ca.key)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
}

// Pool is a pool holding the CA certificate alone.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Pin is the CA's public key pin, "sha256:<hex>" of its
// SubjectPublicKeyInfo: what an agent checks on first contact.
func (ca *CA) Pin() string { return nodecert.Pin(ca.Cert) }

// IssueServer makes a key and a server certificate for hosts (DNS names
// or IP addresses), valid for validity (ServerValidity when zero).
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.issueHost("server", "berth api", hosts, validity, x509.ExtKeyUsageServerAuth)
}

// LoadOrIssueServer returns the API server's certificate kept in dir
// (server.crt, server.key), issuing a new one when there is none, when it
// is not this CA's, when it does not cover every host, or when it ends
// within a month. The chain it returns carries the CA certificate after
// the server's, so that an agent holding only the CA's pin finds the CA
// in the handshake.
func LoadOrIssueServer(dir string, ca *CA, hosts []string) (tls.Certificate, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate dir %s: %w", dir, err)
	}
	certPath, keyPath := filepath.Join(dir, ServerCertFile), filepath.Join(dir, ServerKeyFile)
	if pair, err := tls.LoadX509KeyPair(certPath, keyPath); err == nil && ca.serverCovers(pair.Leaf, hosts) {
		pair.Certificate = append(pair.Certificate[:1], ca.Cert.Raw)
		return pair, nil
	}
	certPEM, keyPEM, err := ca.IssueServer(hosts, 0)
	if err != nil {
		return tls.Certificate{}, err
	}
	if err := atomicfile.Write(keyPath, keyPEM, 0o600); err != nil {
		return tls.Certificate{}, fmt.Errorf("server key %s: %w", keyPath, err)
	}
	if err := atomicfile.Write(certPath, certPEM, 0o644); err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate %s: %w", certPath, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("server certificate %s: %w", certPath, err)
	}
	pair.Certificate = append(pair.Certificate, ca.Cert.Raw)
	return pair, nil
}

// serverCovers reports whether leaf is a server certificate of this CA,
// good for another month, naming every host.
func (ca *CA) serverCovers(leaf *x509.Certificate, hosts []string) bool {
	if leaf == nil || time.Until(leaf.NotAfter) < 30*24*time.Hour {
		return false
	}
	for _, h := range hosts {
		if h == "" {
			continue
		}
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: h, Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			return false
		}
	}
	return true
}

// ServerTLSConfig is the TLS configuration of an API listener serving
// cert: client certificates are optional (a joining node has none yet),
// and those given must be this CA's.
func (ca *CA) ServerTLSConfig(cert tls.Certificate) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    ca.Pool(),
		MinVersion:   tls.VersionTLS12,
	}
}

// SignNode signs a node's certificate request (PEM) into a client
// certificate for node, valid for validity (DefaultNodeValidity when zero
// or longer). The subject comes from node alone, never from the request:
// a request cannot ask for another identity or for more rights.
func (ca *CA) SignNode(csrPEM []byte, node string, validity time.Duration) ([]byte, error) {
	if validity <= 0 || validity > DefaultNodeValidity {
		validity = DefaultNodeValidity
	}
	csr, err := ParseNodeRequest(csrPEM, node)
	if err != nil {
		return nil, err
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	// Backdated for clocks a little behind, but by no more than a tenth
	// of a short lifetime: agents renew by the share of it left.
	skew := min(clockSkew, validity/10)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      nodecert.Subject(node),
		NotBefore:    now.Add(-skew),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, csr.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("certificate of node %q: %w", node, err)
	}
	return encodeCert(der), nil
}

// ParseNodeRequest reads node's certificate request (PEM) and checks its
// signature (its maker holds the key) and its key's strength.
func ParseNodeRequest(csrPEM []byte, node string) (*x509.CertificateRequest, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("certificate request of node %q: %w: no PEM CERTIFICATE REQUEST block", node, errdefs.ErrInvalidArgument)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate request of node %q: %w: %w", node, errdefs.ErrInvalidArgument, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request of node %q: %w: bad signature: %w", node, errdefs.ErrInvalidArgument, err)
	}
	if err := acceptableKey(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("certificate request of node %q: %w", node, err)
	}
	return csr, nil
}

// acceptableKey refuses keys too weak to stand for a node.
func acceptableKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve.Params().BitSize < 256 {
			return fmt.Errorf("%w: ECDSA key under 256 bits", errdefs.ErrInvalidArgument)
		}
	case ed25519.PublicKey:
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return fmt.Errorf("%w: RSA key under 2048 bits", errdefs.ErrInvalidArgument)
		}
	default:
		return fmt.Errorf("%w: key type %T", errdefs.ErrInvalidArgument, pub)
	}
	return nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func serialNumber() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// PeerCommonName is the common name of every server's etcd peer
// certificate: the peer port accepts no other, so that a node's
// certificate from the same CA does not open it.
const PeerCommonName = "berth etcd peer"

// IssuePeer makes a key and an etcd peer certificate for a server reached
// at hosts: good for both ends of a peer connection (server and client
// authentication), valid for validity (ServerValidity when zero).
func (ca *CA) IssuePeer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	return ca.issueHost("peer", PeerCommonName, hosts, validity, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth)
}

// issueHost makes a key and a certificate named cn for hosts (DNS names
// or IP addresses), for usages, valid for validity (ServerValidity when
// zero); what names the kind of certificate in errors.
func (ca *CA) issueHost(what, cn string, hosts []string, validity time.Duration, usages ...x509.ExtKeyUsage) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		validity = ServerValidity
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("%s key: %w", what, err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"berth"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  usages,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	if len(tmpl.IPAddresses) == 0 && len(tmpl.DNSNames) == 0 {
		return nil, nil, fmt.Errorf("%s certificate: %w: no host names or addresses", what, errdefs.ErrInvalidArgument)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s certificate for %v: %w", what, hosts, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("%s key: %w", what, err)
	}
	return encodeCert(der), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
}
