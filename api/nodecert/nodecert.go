// Package nodecert holds what both ends of the API agree on about node
// certificates: the subject that names a node (CommonName "node:<name>",
// Organization "berth:nodes"), the CA public key pin an agent trusts the
// server by on first contact, and the key and certificate request a
// joining node makes. The cluster CA that signs them is server-side.
package nodecert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/api/errdefs"
)

// Subject names of node certificates.
const (
	Organization = "berth:nodes"
	Prefix       = "node:"
)

// Subject is the subject of node's certificate.
func Subject(node string) pkix.Name {
	return pkix.Name{CommonName: Prefix + node, Organization: []string{Organization}}
}

// NodeName is the node a node certificate names, and whether cert is one.
func NodeName(cert *x509.Certificate) (string, bool) {
	name, ok := strings.CutPrefix(cert.Subject.CommonName, Prefix)
	if !ok || name == "" || len(cert.Subject.Organization) != 1 || cert.Subject.Organization[0] != Organization {
		return "", false
	}
	return name, true
}

// Pin is a certificate's public key pin, "sha256:<hex>" of its
// SubjectPublicKeyInfo.
func Pin(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// MatchesPin reports whether cert has the public key pin.
func MatchesPin(cert *x509.Certificate, pin string) bool {
	return subtle.ConstantTimeCompare([]byte(Pin(cert)), []byte(strings.ToLower(strings.TrimSpace(pin)))) == 1
}

// NewKey makes a private key for node and a certificate request for it,
// both PEM: what an agent sends to join (the request) and keeps (the key).
func NewKey(node string) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("key of node %q: %w", node, err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("key of node %q: %w", node, err)
	}
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb})
	csrPEM, err = Request(node, keyPEM)
	return csrPEM, keyPEM, err
}

// Request makes a certificate request for node with the key keyPEM (as
// NewKey makes it): a join asked again asks with the same key.
func Request(node string, keyPEM []byte) ([]byte, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil || b.Type != "EC PRIVATE KEY" {
		return nil, fmt.Errorf("key of node %q: %w: no PEM EC PRIVATE KEY block", node, errdefs.ErrInvalidArgument)
	}
	key, err := x509.ParseECPrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("key of node %q: %w: %w", node, errdefs.ErrInvalidArgument, err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: Subject(node)}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request of node %q: %w", node, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCertificate reads the first certificate of a PEM bundle.
func ParseCertificate(certPEM []byte) (*x509.Certificate, error) {
	for rest := certPEM; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%w: no PEM CERTIFICATE block", errdefs.ErrInvalidArgument)
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
		}
		return c, nil
	}
}
