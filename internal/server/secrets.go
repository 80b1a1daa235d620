package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/atomicfile"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/seal"
	"github.com/berth-dev/berth/internal/store"
)

// The names the cluster's secrets are sealed under: in etcd (under the
// store's cluster values) and, for the CA key, on a server's disk.
const (
	sealedCAName    = "api-ca"
	sealedTokenName = "api-token"
	sealedCAKeyName = "ca-key"
)

// Files of a server's peer certificate in its tls dir.
const (
	peerCertFile = "peer.crt"
	peerKeyFile  = "peer.key"
)

// SealKeyPath is where a server keeps its seal key: file when given (the
// --seal-key-file flag), else seal.key in the data dir.
func SealKeyPath(dataDir, file string) string {
	if file != "" {
		return file
	}
	return filepath.Join(dataDir, seal.KeyFile)
}

// serverSecrets are what a server holds before its etcd member starts: the
// seal key and the cluster CA (nil when the CA is still to be read from
// an external etcd).
type serverSecrets struct {
	key *seal.Key
	ca  *pki.CA
	dir string // the tls dir
}

// InitInfo says what InitCluster made, and what to copy to other servers.
type InitInfo struct {
	SealKeyFile, CACertFile, CAKeyFile string
	// Made says the CA or the seal key is new (not kept from before).
	MadeSealKey, MadeCA bool
}

// InitCluster makes a cluster's secrets in dataDir before any server
// starts: the seal key (in sealKeyFile, or seal.key in dataDir) and the
// cluster CA (tls/ca.crt, with tls/ca.key sealed). What exists is kept,
// and a CA key an older version kept in the clear is sealed. The other
// servers get copies of the three files before they start, so that every
// etcd member presents a certificate of the one CA from the start.
func InitCluster(dataDir, sealKeyFile string) (InitInfo, error) {
	path := SealKeyPath(dataDir, sealKeyFile)
	key, madeKey, err := seal.LoadOrCreate(path)
	if err != nil {
		return InitInfo{}, err
	}
	dir := filepath.Join(dataDir, "tls")
	_, madeCA, err := loadCA(dir, key, true)
	if err != nil {
		return InitInfo{}, err
	}
	return InitInfo{SealKeyFile: path, CACertFile: filepath.Join(dir, pki.CACertFile), CAKeyFile: filepath.Join(dir, pki.CAKeyFile),
		MadeSealKey: madeKey, MadeCA: madeCA}, nil
}

// loadSecrets reads this server's seal key and CA. mayCreate lets it make
// what is missing: only a server that makes the cluster on its own may
// (one embedded member alone, or a server of an external etcd); the
// others need copies, or their CA and key would differ from the rest.
// needCA says the CA must exist now (an embedded member's peer
// certificate is issued before etcd starts).
func loadSecrets(dataDir, sealKeyFile string, mayCreate, needCA bool) (*serverSecrets, error) {
	path := SealKeyPath(dataDir, sealKeyFile)
	dir := filepath.Join(dataDir, "tls")
	var key *seal.Key
	var err error
	if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) && !mayCreate {
		return nil, fmt.Errorf("seal key %s: %w: a server joining a cluster of several needs the cluster's secrets first: "+
			`run "berth server init" on one server and copy its seal.key, tls/ca.crt and tls/ca.key to every other server's data dir`,
			path, errdefs.ErrFailedPrecondition)
	}
	// A CA sealed already means the key exists somewhere: making a new
	// one here would only hide that it was not found.
	if _, statErr := os.Stat(path); errors.Is(statErr, os.ErrNotExist) {
		if b, err := os.ReadFile(filepath.Join(dir, pki.CAKeyFile)); err == nil && seal.IsSealed(b) {
			return nil, fmt.Errorf("seal key %s: %w: not there, and %s is sealed with one; give its file with --seal-key-file",
				path, errdefs.ErrFailedPrecondition, filepath.Join(dir, pki.CAKeyFile))
		}
	}
	if key, _, err = seal.LoadOrCreate(path); err != nil {
		return nil, err
	}
	ca, _, err := loadCA(dir, key, mayCreate && needCA)
	if err != nil {
		return nil, err
	}
	if ca == nil && needCA {
		return nil, fmt.Errorf("cluster CA %s: %w: a server joining a cluster of several needs the cluster's secrets first: "+
			`run "berth server init" on one server and copy its seal.key, tls/ca.crt and tls/ca.key to every other server's data dir`,
			filepath.Join(dir, pki.CACertFile), errdefs.ErrFailedPrecondition)
	}
	return &serverSecrets{key: key, ca: ca, dir: dir}, nil
}

// loadCA reads the CA in dir (ca.crt, ca.key sealed with key). With none
// there, it makes one when create is set and returns nil otherwise. A key
// kept in the clear (an older version's) is sealed in place.
func loadCA(dir string, key *seal.Key, create bool) (ca *pki.CA, made bool, err error) {
	certPath, keyPath := filepath.Join(dir, pki.CACertFile), filepath.Join(dir, pki.CAKeyFile)
	certPEM, certErr := os.ReadFile(certPath)
	keyData, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, os.ErrNotExist) && errors.Is(keyErr, os.ErrNotExist):
		if !create {
			return nil, false, nil
		}
		ca, err := pki.NewCA()
		if err != nil {
			return nil, false, err
		}
		if err := saveCA(dir, key, ca); err != nil {
			return nil, false, err
		}
		return ca, true, nil
	case certErr != nil || keyErr != nil:
		return nil, false, fmt.Errorf("cluster CA in %s: %w: needs both %s and %s (%v; %v)", dir, errdefs.ErrFailedPrecondition, pki.CACertFile, pki.CAKeyFile, certErr, keyErr)
	}
	keyPEM := keyData
	if seal.IsSealed(keyData) {
		if keyPEM, err = key.Open(sealedCAKeyName, keyData); err != nil {
			return nil, false, fmt.Errorf("cluster CA key %s: %w: was it sealed with another cluster's seal key?", keyPath, err)
		}
	}
	ca, err = pki.ParseCA(certPEM, keyPEM)
	if err != nil {
		return nil, false, fmt.Errorf("cluster CA in %s: %w", dir, err)
	}
	if !seal.IsSealed(keyData) {
		if err := saveCA(dir, key, ca); err != nil {
			return nil, false, err
		}
	}
	return ca, false, nil
}

// saveCA writes ca to dir: the certificate as is, the key sealed. The key
// goes first: a crash between the writes leaves a key without a
// certificate, which the next start reports rather than replacing a CA
// that nodes may trust already.
func saveCA(dir string, key *seal.Key, ca *pki.CA) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tls dir %s: %w", dir, err)
	}
	sealed, err := key.Seal(sealedCAKeyName, ca.KeyPEM())
	if err != nil {
		return err
	}
	keyPath := filepath.Join(dir, pki.CAKeyFile)
	if err := atomicfile.Write(keyPath, sealed, 0o600); err != nil {
		return fmt.Errorf("cluster CA key %s: %w", keyPath, err)
	}
	certPath := filepath.Join(dir, pki.CACertFile)
	if err := atomicfile.Write(certPath, ca.CertPEM, 0o644); err != nil {
		return fmt.Errorf("cluster CA certificate %s: %w", certPath, err)
	}
	return nil
}

// peerRenewBefore is how long before its end a peer certificate is
// replaced; peerRenewCheck how often a running server looks.
const (
	peerRenewBefore = 30 * 24 * time.Hour
	peerRenewCheck  = 12 * time.Hour
)

// peerTLS issues this server's etcd peer certificate for the host of its
// peer URL (and its name and loopback), fresh on every start, and says
// where etcd finds it.
func (s *serverSecrets) peerTLS(name, peerURL string) (*store.PeerTLS, error) {
	return s.issuePeer(name, peerURL, 0)
}

// renewPeer replaces the peer certificate whenever it nears its end,
// until ctx ends: etcd reads the files again on every handshake, so a
// server running for longer than a certificate lasts keeps meeting its
// peers.
func (s *serverSecrets) renewPeer(ctx context.Context, name, peerURL string, log *slog.Logger) error {
	t := time.NewTicker(peerRenewCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if renewed, err := s.renewPeerIfDue(name, peerURL, time.Now()); err != nil {
			log.Error("peer certificate", "err", err)
		} else if renewed {
			log.Info("renewed the etcd peer certificate")
		}
	}
}

// renewPeerIfDue issues a new peer certificate when the one on disk ends
// within peerRenewBefore of now (or cannot be read).
func (s *serverSecrets) renewPeerIfDue(name, peerURL string, now time.Time) (bool, error) {
	b, err := os.ReadFile(filepath.Join(s.dir, peerCertFile))
	if err == nil {
		if c, err := nodecert.ParseCertificate(b); err == nil && c.NotAfter.Sub(now) > peerRenewBefore {
			return false, nil
		}
	}
	if _, err := s.issuePeer(name, peerURL, 0); err != nil {
		return false, err
	}
	return true, nil
}

func (s *serverSecrets) issuePeer(name, peerURL string, validity time.Duration) (*store.PeerTLS, error) {
	u, err := urlHost(peerURL)
	if err != nil {
		return nil, err
	}
	certPEM, keyPEM, err := s.ca.IssuePeer(apiHosts(u, name), validity)
	if err != nil {
		return nil, fmt.Errorf("server %q: %w", name, err)
	}
	t := &store.PeerTLS{CertFile: filepath.Join(s.dir, peerCertFile), KeyFile: filepath.Join(s.dir, peerKeyFile),
		CAFile: filepath.Join(s.dir, pki.CACertFile), CommonName: pki.PeerCommonName}
	// A handshake between the two writes pairs the new key with the old
	// certificate and fails; the peer dials again.
	if err := atomicfile.Write(t.KeyFile, keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("peer key %s: %w", t.KeyFile, err)
	}
	if err := atomicfile.Write(t.CertFile, certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("peer certificate %s: %w", t.CertFile, err)
	}
	return t, nil
}

// urlHost is the host of a URL or host:port.
func urlHost(s string) (string, error) {
	hp := s
	if _, rest, ok := strings.Cut(s, "://"); ok {
		hp = rest
	}
	h, _, err := net.SplitHostPort(hp)
	if err != nil {
		return "", fmt.Errorf("peer URL %q: %w: %w", s, errdefs.ErrInvalidArgument, err)
	}
	return h, nil
}

// sharedSecret returns the cluster-wide secret called name, opened with
// key: made by mk (and sealed) when there is none yet. A value an older
// version stored in the clear is sealed in place, so that it leaves etcd's
// live keys on the first start of this version.
func sharedSecret(ctx context.Context, st *store.Store, key *seal.Key, name string, mk func() ([]byte, error)) ([]byte, error) {
	raw, err := st.SharedValue(ctx, name, func() ([]byte, error) {
		v, err := mk()
		if err != nil {
			return nil, err
		}
		return key.Seal(name, v)
	})
	if err != nil {
		return nil, err
	}
	for range 5 {
		if seal.IsSealed(raw) {
			v, err := key.Open(name, raw)
			if err != nil {
				return nil, fmt.Errorf("cluster secret %q: %w: the servers of a cluster share one seal key; copy it from a server of the cluster", name, err)
			}
			return v, nil
		}
		sealed, err := key.Seal(name, raw)
		if err != nil {
			return nil, err
		}
		swapped, err := st.ReplaceSharedValue(ctx, name, raw, sealed)
		if err != nil {
			return nil, err
		}
		if swapped {
			return raw, nil
		}
		// Another server sealed it first: read what it wrote.
		if raw, err = st.SharedValue(ctx, name, func() ([]byte, error) {
			return nil, fmt.Errorf("%w: gone while being sealed", errdefs.ErrConflict)
		}); err != nil {
			return nil, err
		}
	}
	return nil, fmt.Errorf("cluster secret %q: %w: kept changing while being sealed", name, errdefs.ErrConflict)
}

// Credentials are what a TCP client of the API needs, the same on every
// server of a cluster so that a client or agent trusting the cluster CA
// with the token reaches any of them: the CA (CAFile, to trust) and the
// token (in TokenFile, root-only). TLS is the server's side: its
// certificate, issued by the CA.
type Credentials struct {
	CA                *pki.CA
	TLS               *tls.Config
	Token             string
	CAFile, TokenFile string
}

// sharedCA is the cluster CA as the servers keep it in the store (sealed).
type sharedCA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// clusterCredentials takes the cluster CA and API token from the store,
// sealed there with the servers' seal key, the first server putting them
// there; writes them under sec.dir (ca.crt, ca.key sealed, token) next
// to this server's API certificate, issued by the CA for hosts.
//
// A server that came with its own CA (an embedded member's, needed
// before etcd) must find the same one in the store: two CAs in one
// cluster would split its nodes.
func clusterCredentials(ctx context.Context, st *store.Store, sec *serverSecrets, hosts []string) (*Credentials, error) {
	raw, err := sharedSecret(ctx, st, sec.key, sealedCAName, func() ([]byte, error) {
		ca := sec.ca
		if ca == nil {
			var err error
			if ca, err = pki.NewCA(); err != nil {
				return nil, err
			}
		}
		return json.Marshal(sharedCA{Cert: string(ca.CertPEM), Key: string(ca.KeyPEM())})
	})
	if err != nil {
		return nil, err
	}
	var sc sharedCA
	if err := json.Unmarshal(raw, &sc); err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	ca, err := pki.ParseCA([]byte(sc.Cert), []byte(sc.Key))
	if err != nil {
		return nil, fmt.Errorf("cluster CA: %w", err)
	}
	dir := sec.dir
	if sec.ca != nil && !sec.ca.Cert.Equal(ca.Cert) {
		return nil, fmt.Errorf("cluster CA: %w: %s is not the CA the cluster's store holds; copy tls/ca.crt and tls/ca.key from a server of the cluster",
			errdefs.ErrFailedPrecondition, filepath.Join(dir, pki.CACertFile))
	}
	if sec.ca == nil {
		if err := saveCA(dir, sec.key, ca); err != nil {
			return nil, err
		}
	}
	tokenFile := filepath.Join(dir, "token")
	tok, err := sharedSecret(ctx, st, sec.key, sealedTokenName, func() ([]byte, error) {
		// A token handed out before the store held one (berth up's, from
		// before it shared the servers' credentials) stays good.
		if b, err := os.ReadFile(tokenFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return bytes.TrimSpace(b), nil
		}
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(b)), nil
	})
	if err != nil {
		return nil, err
	}
	c := &Credentials{CA: ca, Token: string(tok), CAFile: filepath.Join(dir, pki.CACertFile), TokenFile: tokenFile}
	// The token file is the operator's copy to hand to clients, root-only
	// like the data dir; etcd holds it sealed.
	if err := writeIfChanged(c.TokenFile, append(tok, '\n'), 0o600); err != nil {
		return nil, err
	}
	cert, err := pki.LoadOrIssueServer(dir, ca, hosts)
	if err != nil {
		return nil, err
	}
	c.TLS = ca.ServerTLSConfig(cert)
	return c, nil
}
