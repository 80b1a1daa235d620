package server

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

// renewingCertificate is an agent's node certificate kept fresh: the
// agent renews it when two thirds of its life are over (the servers sign
// for a week unless told otherwise), saves it, and presents the new one
// on every connection from then on.
type renewingCertificate struct {
	dir   string
	node  string
	save  func(nc *client.NodeCredentials, dir string) error
	log   *slog.Logger
	creds atomic.Pointer[client.NodeCredentials]
	cert  atomic.Pointer[tls.Certificate]
}

var _ Credential = (*renewingCertificate)(nil)

func newRenewingCertificate(dir, node string, nc *client.NodeCredentials, save func(*client.NodeCredentials, string) error, log *slog.Logger) (*renewingCertificate, error) {
	r := &renewingCertificate{dir: dir, node: node, save: save, log: log}
	return r, r.set(nc)
}

func (r *renewingCertificate) set(nc *client.NodeCredentials) error {
	tc, err := nc.TLSConfig()
	if err != nil {
		return err
	}
	r.creds.Store(nc)
	r.cert.Store(&tc.Certificates[0])
	return nil
}

// Apply trusts the cluster CA alone and presents whichever certificate
// is newest when a connection is made.
func (r *renewingCertificate) Apply(cfg *tls.Config) ([]client.Option, error) {
	tc, err := r.creds.Load().TLSConfig()
	if err != nil {
		return nil, err
	}
	cfg.RootCAs = tc.RootCAs
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return r.cert.Load(), nil }
	return nil, nil
}

// renewAt is when a certificate is due for renewal: two thirds into its
// life.
func renewAt(cert *tls.Certificate) time.Time {
	nb, na := cert.Leaf.NotBefore, cert.Leaf.NotAfter
	return nb.Add(na.Sub(nb) * 2 / 3)
}

// run renews the certificate whenever it is due, until ctx ends. New
// connections present the new certificate; those made with the old carry
// no new requests (failover.Renewed).
func (r *renewingCertificate) run(ctx context.Context, c *client.Client, rt http.RoundTripper) {
	for {
		cur := r.cert.Load()
		wait := time.Until(renewAt(cur))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		nc, err := c.Renew(ctx, r.node, r.creds.Load())
		if err == nil {
			if err = r.save(nc, r.dir); err == nil {
				err = r.set(nc)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			left := time.Until(cur.Leaf.NotAfter)
			level := slog.LevelWarn
			if errdefs.IsUnauthorized(err) || left <= 0 {
				level = slog.LevelError
			}
			r.log.Log(ctx, level, "renewing the node certificate failed", "node", r.node, "expires", cur.Leaf.NotAfter, "err", err)
			// Try again soon, and more often as the end nears.
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(30*time.Second, max(time.Second, left/10))):
			}
			continue
		}
		r.log.Info("renewed the node certificate", "node", r.node, "expires", r.cert.Load().Leaf.NotAfter)
		switch t := rt.(type) {
		case interface{ Renewed() }:
			t.Renewed()
		case interface{ CloseIdleConnections() }:
			t.CloseIdleConnections()
		}
	}
}
