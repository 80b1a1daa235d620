package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Directory is where the servers of a cluster say, in etcd, at which URL
// their registries answer, so that each finds the others to pull through
// from (Peers.List). Each server's record is one key, PREFIX<name>, whose
// value is its API's base URL (https://HOST:PORT, /v2/ being served
// there), bound to a lease the server keeps alive while it runs (see
// Announce). A server that stops drops out of the others' lists when its
// lease ends (at once when it stops cleanly), and one restarted at a new
// address replaces its record. The etcd is the store's, embedded or
// external alike: etcd's own member list knows peer URLs, not APIs, and
// there is none with an external etcd.
type Directory struct {
	client *clientv3.Client
	prefix string
	self   string
	// TTL is how long a server's record outlives it; 10s unless set
	// before Announce.
	TTL time.Duration
	// Logger hears about records lost and made again; none when nil.
	Logger *slog.Logger
}

// NewDirectory returns the directory kept under prefix (a key prefix
// ending in "/") in c, as seen by the server named self.
func NewDirectory(c *clientv3.Client, prefix, self string) *Directory {
	return &Directory{client: c, prefix: prefix, self: self, TTL: 10 * time.Second}
}

// Peers returns the base URLs of the other servers' registries, sorted by
// the servers' names, as this server's etcd member has them: read with no
// raft round, since every apply of a service asks (to pin its image), and
// a linearizable read waits until etcd has applied everything committed
// before it, the controller's instance batches included. A list a moment
// old names a peer just gone, passed over, or misses one just come.
func (d *Directory) Peers(ctx context.Context) ([]string, error) {
	r, err := d.client.Get(ctx, d.prefix, clientv3.WithPrefix(), clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("registry directory: %w", err)
	}
	var out []string
	for _, kv := range r.Kvs { // etcd returns keys sorted
		if name := strings.TrimPrefix(string(kv.Key), d.prefix); name != d.self && len(kv.Value) > 0 {
			out = append(out, string(kv.Value))
		}
	}
	return out, nil
}

// Announce records base as this server's URL and keeps the record until
// ctx ends, then removes it. A lease lost meanwhile (etcd unreachable for
// longer than the TTL) is made again once etcd answers. It returns nil
// when ctx ends.
func (d *Directory) Announce(ctx context.Context, base string) error {
	log := d.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ttl := int64(d.TTL / time.Second)
	if ttl < 2 {
		ttl = 2
	}
	key := d.prefix + d.self
	log.Info("registry directory: recording this server's registry", "key", key, "url", base)
	for ctx.Err() == nil {
		lease, err := d.keep(ctx, key, base, ttl)
		if lease != 0 {
			// Gone at once rather than after the TTL: stopping is no failure.
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			_, _ = d.client.Revoke(rctx, lease)
			cancel()
		}
		if ctx.Err() != nil {
			break
		}
		log.Warn("registry directory: this server's record lapsed; making it again", "key", key, "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	return nil
}

// keep writes the record bound to a new lease and renews the lease until
// ctx ends or a renewal fails; it returns the lease, 0 if none was made.
func (d *Directory) keep(ctx context.Context, key, base string, ttl int64) (clientv3.LeaseID, error) {
	g, err := d.client.Grant(ctx, ttl)
	if err != nil {
		return 0, err
	}
	if _, err := d.client.Put(ctx, key, base, clientv3.WithLease(g.ID)); err != nil {
		return g.ID, err
	}
	ka, err := d.client.KeepAlive(ctx, g.ID)
	if err != nil {
		return g.ID, err
	}
	for range ka { // closed when ctx ends or the lease cannot be renewed
	}
	return g.ID, fmt.Errorf("lease %x no longer renewed", g.ID)
}

// AdvertisedURL is the URL the other servers reach this server's API at,
// given the address it listens on (host:port): that host when it names
// one, else this machine's address on the route to the first of toward
// (the server's own etcd peer URL, or the external etcd's endpoints:
// addresses the other servers reach too) that gives one other than
// loopback. The API's certificate covers either (it names every address
// of the machine when the API listens on all).
func AdvertisedURL(listen string, toward []string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "https://" + listen
	}
	if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
		return "https://" + net.JoinHostPort(host, port)
	}
	addr := "127.0.0.1"
	for _, t := range toward {
		hp := t
		if u, err := url.Parse(t); err == nil && u.Host != "" {
			hp = u.Host
		}
		h, p, err := net.SplitHostPort(hp)
		if err != nil {
			h, p = hp, "1"
		}
		if h == "" {
			continue
		}
		c, err := net.Dial("udp", net.JoinHostPort(h, p)) // sends nothing: it only picks a route
		if err != nil {
			continue
		}
		ip := c.LocalAddr().(*net.UDPAddr).IP
		c.Close()
		if !ip.IsLoopback() {
			addr = ip.String()
			break
		}
	}
	return "https://" + net.JoinHostPort(addr, port)
}

// PeerTransport is the transport a server reaches the other servers'
// registries with: TLS trusting roots (the cluster CA) and the cluster's
// admin token, which every server has and the registries let pull. A dead
// peer fails the dial within seconds, so the next is asked.
func PeerTransport(roots *x509.CertPool, token string) http.RoundTripper {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.Proxy = nil
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	tr.DialContext = (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	tr.TLSHandshakeTimeout = 5 * time.Second
	tr.ResponseHeaderTimeout = 30 * time.Second
	return bearer{token: token, inner: tr}
}

// bearer adds a bearer token to every request.
type bearer struct {
	token string
	inner http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.token)
	return b.inner.RoundTrip(r)
}
