package client

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/atomicfile"
)

// JoinOptions say how a machine joins a cluster.
type JoinOptions struct {
	// Token is a join token, berth_<id>.<secret>.
	Token string
	// Node is the name the machine joins as.
	Node string
	// CA is the cluster CA certificate (PEM) to trust the server by.
	CA []byte
	// CAPin, for a first contact without CA, is the cluster CA's public
	// key pin ("sha256:<hex>", as the server prints it): the server is
	// trusted when its certificate chain holds a CA with that key and
	// verifies against it.
	CAPin string
	// Key is the node's private key (PEM, as nodecert.NewKey makes it);
	// Join makes one when it is empty. A join asked again after an answer
	// that never came (a timeout) must use the same key: the server then
	// answers with the certificate the first one was given, where a new
	// key would find the name taken by the first.
	Key []byte
}

// NodeCredentials are what a node keeps once joined, all PEM: its client
// certificate and key, and the cluster CA.
type NodeCredentials struct {
	Certificate []byte
	Key         []byte
	CA          []byte
}

type joinRequest struct {
	Token string `json:"token"`
	Node  string `json:"node"`
	CSR   string `json:"csr"`
}

type joinResponse struct {
	Certificate string `json:"certificate"`
	CA          string `json:"ca"`
}

// Join asks the server at https://host:port for a node certificate with
// a join token. The key is made here and never leaves the machine. A
// refused token is an errdefs.ErrUnauthorized error saying why.
func Join(ctx context.Context, server string, opts JoinOptions) (*NodeCredentials, error) {
	u, err := url.Parse(server)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("join %s: %w: the server must be https://host:port", server, errdefs.ErrInvalidArgument)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	switch {
	case len(opts.CA) > 0:
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(opts.CA) {
			return nil, fmt.Errorf("join %s: CA: %w: no PEM certificate found", server, errdefs.ErrInvalidArgument)
		}
		cfg.RootCAs = pool
	case opts.CAPin != "":
		// The usual checks are off only to be replaced by the pin's: the
		// handshake still fails unless the server proves it holds a key
		// the pinned CA vouches for, under the name dialled.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = verifyPinned(opts.CAPin, u.Hostname())
	default:
		return nil, fmt.Errorf("join %s: %w: give the cluster CA or its pin", server, errdefs.ErrInvalidArgument)
	}
	key, csr := opts.Key, []byte(nil)
	if key == nil {
		csr, key, err = nodecert.NewKey(opts.Node)
	} else {
		csr, err = nodecert.Request(opts.Node, key)
	}
	if err != nil {
		return nil, fmt.Errorf("join %s: %w", server, err)
	}
	c, err := New(server, WithTLSConfig(cfg))
	if err != nil {
		return nil, err
	}
	// The node talks with its certificate from now on, on a connection
	// of its own: this one would idle on both ends for a minute and a
	// half, thousands of them while a fleet joins.
	defer c.hc.CloseIdleConnections()
	var resp joinResponse
	if err := c.do(ctx, http.MethodPost, "/v1/join", nil, joinRequest{Token: opts.Token, Node: opts.Node, CSR: string(csr)}, &resp); err != nil {
		return nil, fmt.Errorf("join %s: %w", server, err) // the server's answer names the node
	}
	creds := &NodeCredentials{Certificate: []byte(resp.Certificate), Key: key, CA: []byte(resp.CA)}
	if err := creds.check(opts); err != nil {
		return nil, fmt.Errorf("join %s as node %q: %w", server, opts.Node, err)
	}
	return creds, nil
}

// check makes sure the answer is a certificate of our key, for our node,
// from the CA we trusted the server by.
func (nc *NodeCredentials) check(opts JoinOptions) error {
	ca, err := nodecert.ParseCertificate(nc.CA)
	if err != nil {
		return fmt.Errorf("the CA in the answer: %w", err)
	}
	switch {
	case opts.CAPin != "" && len(opts.CA) == 0 && !nodecert.MatchesPin(ca, opts.CAPin):
		return fmt.Errorf("%w: the CA in the answer does not have pin %s", errdefs.ErrFailedPrecondition, opts.CAPin)
	case len(opts.CA) > 0:
		want, err := nodecert.ParseCertificate(opts.CA)
		if err != nil || !want.Equal(ca) {
			return fmt.Errorf("%w: the CA in the answer is not the CA given", errdefs.ErrFailedPrecondition)
		}
	}
	pair, err := tls.X509KeyPair(nc.Certificate, nc.Key)
	if err != nil {
		return fmt.Errorf("the certificate in the answer: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if _, err := pair.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		return fmt.Errorf("the certificate in the answer: %w", err)
	}
	if name, ok := nodecert.NodeName(pair.Leaf); !ok || name != opts.Node {
		return fmt.Errorf("%w: the certificate in the answer names %q", errdefs.ErrFailedPrecondition, pair.Leaf.Subject.CommonName)
	}
	return nil
}

// PinMismatchError is a server whose certificate chain holds no CA with
// the pin asked for: the wrong cluster, a wrong pin, or an impostor.
// Asking again cannot help.
type PinMismatchError struct {
	Want string
	// Got are the pins of the certificates the server sent.
	Got []string
}

func (e *PinMismatchError) Error() string {
	return fmt.Sprintf("CA pin mismatch: expected %s, the server's certificate chain has %s", e.Want, strings.Join(e.Got, ", "))
}

// CheckPin says whether the CA certificate caPEM has pin, as a
// PinMismatchError when not.
func CheckPin(caPEM []byte, pin string) error {
	ca, err := nodecert.ParseCertificate(caPEM)
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	if !nodecert.MatchesPin(ca, pin) {
		return &PinMismatchError{Want: pin, Got: []string{nodecert.Pin(ca)}}
	}
	return nil
}

// verifyPinned checks a server's chain against a CA public key pin: the
// CA must be in the chain the server sends, and the server's certificate
// must verify against it for host.
func verifyPinned(pin, host string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("server sent no certificate")
		}
		roots, inter := x509.NewCertPool(), x509.NewCertPool()
		found := false
		for _, c := range cs.PeerCertificates[1:] {
			if nodecert.MatchesPin(c, pin) {
				roots.AddCert(c)
				found = true
			} else {
				inter.AddCert(c)
			}
		}
		if !found {
			pe := &PinMismatchError{Want: pin}
			for _, c := range cs.PeerCertificates {
				pe.Got = append(pe.Got, nodecert.Pin(c))
			}
			return pe
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: roots, Intermediates: inter})
		if err != nil {
			return fmt.Errorf("server certificate against the pinned CA: %w", err)
		}
		return nil
	}
}

// TLSConfig is the client TLS configuration of a joined node: its
// certificate, and the cluster CA as the only root.
func (nc *NodeCredentials) TLSConfig() (*tls.Config, error) {
	pair, err := tls.X509KeyPair(nc.Certificate, nc.Key)
	if err != nil {
		return nil, fmt.Errorf("node certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(nc.CA) {
		return nil, errors.New("cluster CA: no PEM certificate found")
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// WithNodeCredentials authenticates with a joined node's certificate and
// trusts the cluster CA alone. It replaces a TLS configuration given by
// earlier options.
func WithNodeCredentials(nc *NodeCredentials) Option {
	return func(o *options) error {
		cfg, err := nc.TLSConfig()
		if err != nil {
			return err
		}
		o.tls = cfg
		return nil
	}
}

// WithClientCertificate presents a client certificate (PEM certificate
// and key), next to whatever roots other options set.
func WithClientCertificate(certPEM, keyPEM []byte) Option {
	return func(o *options) error {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("client certificate: %w", err)
		}
		if o.tls == nil {
			o.tls = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		o.tls.Certificates = []tls.Certificate{pair}
		return nil
	}
}

// Files of node credentials in a directory.
const (
	NodeCertFile = "node.crt"
	NodeKeyFile  = "node.key"
	NodeCAFile   = "ca.crt"
)

// Save writes the credentials into dir (0700), the key 0600, each file
// synced to disk.
func (nc *NodeCredentials) Save(dir string) error { return nc.save(dir, atomicfile.Write) }

// SaveUnsynced is Save without syncing to disk (atomicfile.WriteUnsynced):
// for simulated nodes, whose credentials need not outlive the machine.
func (nc *NodeCredentials) SaveUnsynced(dir string) error {
	return nc.save(dir, atomicfile.WriteUnsynced)
}

func (nc *NodeCredentials) save(dir string, write func(string, []byte, os.FileMode) error) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node credentials in %s: %w", dir, err)
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{NodeKeyFile, nc.Key, 0o600}, {NodeCertFile, nc.Certificate, 0o644}, {NodeCAFile, nc.CA, 0o644}} {
		if err := write(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("node credentials in %s: %w", dir, err)
		}
	}
	return nil
}

// LoadNodeCredentials reads credentials Save wrote into dir; the error
// matches os.ErrNotExist when the node has not joined yet.
func LoadNodeCredentials(dir string) (*NodeCredentials, error) {
	var nc NodeCredentials
	for _, f := range []struct {
		name string
		to   *[]byte
	}{{NodeCertFile, &nc.Certificate}, {NodeKeyFile, &nc.Key}, {NodeCAFile, &nc.CA}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			return nil, fmt.Errorf("node credentials in %s: %w", dir, err)
		}
		*f.to = bytes.TrimSpace(b)
	}
	if _, err := nc.TLSConfig(); err != nil {
		return nil, fmt.Errorf("node credentials in %s: %w", dir, err)
	}
	return &nc, nil
}

// Renew trades the node certificate c authenticates with for a new one
// of the same key, while the old one still works. The key stays, so that
// saving the renewal changes one file, the certificate: no crash can leave
// a key and a certificate that do not match. The answer must name the
// same node and come from the CA in nc.
func (c *Client) Renew(ctx context.Context, node string, nc *NodeCredentials) (*NodeCredentials, error) {
	pair, err := tls.X509KeyPair(nc.Certificate, nc.Key)
	if err != nil {
		return nil, fmt.Errorf("renew the certificate of node %q: %w", node, err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("renew the certificate of node %q: %w: key of type %T cannot sign", node, errdefs.ErrInvalidArgument, pair.PrivateKey)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pair.Leaf.Subject}, signer)
	if err != nil {
		return nil, fmt.Errorf("renew the certificate of node %q: %w", node, err)
	}
	csr, key := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nc.Key
	var resp joinResponse
	if err := c.do(ctx, http.MethodPost, objectPath(api.KindNode, "", node)+"/certificate", nil, struct {
		CSR string `json:"csr"`
	}{string(csr)}, &resp); err != nil {
		return nil, fmt.Errorf("renew the certificate of node %q: %w", node, err)
	}
	out := &NodeCredentials{Certificate: []byte(resp.Certificate), Key: key, CA: []byte(resp.CA)}
	if err := out.check(JoinOptions{Node: node, CA: nc.CA}); err != nil {
		return nil, fmt.Errorf("renew the certificate of node %q: %w", node, err)
	}
	return out, nil
}
