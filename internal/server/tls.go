package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/atomicfile"
)

// Credentials are what a TCP client needs: the server's certificate (to
// trust) and the bearer token; and the metrics token, which scrapes
// /metrics and nothing else. All live in the data dir, root-only.
type Credentials struct {
	CertFile, KeyFile, TokenFile string
	Token                        string
	MetricsTokenFile             string
	MetricsToken                 string
	TLS                          *tls.Config
}

// MetricsTokenFile is the name of the metrics token's file in the TLS dir.
const MetricsTokenFile = "metrics-token"

// randomToken is a bearer token: 32 random bytes, in hex.
func randomToken() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(hex.EncodeToString(b)), nil
}

// loadOrCreateToken reads the token in path, writing a new one first
// when there is none.
func loadOrCreateToken(path, what string) (string, error) {
	tok, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if tok, err = randomToken(); err != nil {
			return "", err
		}
		if err := atomicfile.Write(path, append(tok, '\n'), 0o600); err != nil {
			return "", fmt.Errorf("%s %s: %w", what, path, err)
		}
	} else if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	return strings.TrimSpace(string(tok)), nil
}

// LoadOrCreateCredentials reads the API's TLS certificate and token from
// dir, making them on first use: a self-signed ECDSA certificate for
// hosts, and a random 32-byte token.
func LoadOrCreateCredentials(dir string, hosts []string) (*Credentials, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls dir %s: %w", dir, err)
	}
	c := &Credentials{
		CertFile:         filepath.Join(dir, "server.crt"),
		KeyFile:          filepath.Join(dir, "server.key"),
		TokenFile:        filepath.Join(dir, "token"),
		MetricsTokenFile: filepath.Join(dir, MetricsTokenFile),
	}
	if _, err := os.Stat(c.CertFile); errors.Is(err, os.ErrNotExist) {
		if err := writeSelfSigned(c.CertFile, c.KeyFile, hosts); err != nil {
			return nil, err
		}
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("api certificate %s: %w", c.CertFile, err)
	}
	if c.Token, err = loadOrCreateToken(c.TokenFile, "api token"); err != nil {
		return nil, err
	}
	if c.MetricsToken, err = loadOrCreateToken(c.MetricsTokenFile, "metrics token"); err != nil {
		return nil, err
	}
	c.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	return c, nil
}

func writeSelfSigned(certFile, keyFile string, hosts []string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "berth api"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(5, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IsCA:         true, BasicConstraintsValid: true,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("api certificate: %w", err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		return fmt.Errorf("api key %s: %w", keyFile, err)
	}
	if err := atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return fmt.Errorf("api certificate %s: %w", certFile, err)
	}
	return nil
}
