package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/berth-dev/berth/api/errdefs"
)

// Member makes the embedded etcd one member of a cluster of servers
// instead of a cluster of its own.
//
// With TLS set, peer traffic is TLS both ways: every member presents a
// certificate of the cluster CA and accepts only others that do, with the
// peer common name (so a node's certificate, from the same CA, does not
// open the peer port). Without it, peer traffic is plain HTTP: only for
// tests on loopback.
type Member struct {
	// Name is this member's name, unique in the cluster.
	Name string
	// PeerURL is where this member listens for and is reached by the
	// others: https://host:port (http:// without TLS). An unspecified host (0.0.0.0) cannot be
	// advertised.
	PeerURL string
	// ClientURL, when set, also serves etcd's client API there
	// (http://host:port), for etcdctl and the like; the store itself uses
	// an in-process client. Unauthenticated, so loopback only.
	ClientURL string
	// InitialCluster names every member of a new cluster with its peer
	// URL, this one included.
	InitialCluster map[string]string
	// Existing joins a running cluster that already lists this member
	// (etcdctl member add): etcd's "existing" cluster state. A member
	// whose data dir already holds etcd data rejoins its cluster either
	// way, and ignores InitialCluster.
	Existing bool
	// TLS secures the peer port; the peer URLs are https:// then.
	TLS *PeerTLS
}

// PeerTLS is a member's peer certificate and the CA it trusts, as files
// (etcd reads them itself).
type PeerTLS struct {
	CertFile, KeyFile, CAFile string
	// CommonName is the one a peer's certificate must bear.
	CommonName string
}

// scheme is the peer URLs' scheme.
func (m *Member) scheme() string {
	if m.TLS != nil {
		return "https"
	}
	return "http"
}

// memberReadyTimeout bounds the wait for a member's cluster to have a
// quorum: servers of a new cluster start one by one, minutes apart.
const memberReadyTimeout = 10 * time.Minute

// validate checks m before etcd sees it, so that mistakes read in
// berth's terms.
func (m *Member) validate() error {
	if m.Name == "" {
		return fmt.Errorf("etcd member: %w: no name", errdefs.ErrInvalidArgument)
	}
	if _, err := memberURL("peer", m.PeerURL, m.scheme()); err != nil {
		return fmt.Errorf("etcd member %q: %w", m.Name, err)
	}
	if m.ClientURL != "" {
		cu, err := memberURL("client", m.ClientURL, "http")
		if err != nil {
			return fmt.Errorf("etcd member %q: %w", m.Name, err)
		}
		// It serves the whole store, unauthenticated and in the clear.
		if h := cu.Hostname(); h != "localhost" && !net.ParseIP(h).IsLoopback() {
			return fmt.Errorf("etcd member %q: client URL %q: %w: the client API is unauthenticated; serve it on a loopback address only", m.Name, m.ClientURL, errdefs.ErrInvalidArgument)
		}
	}
	own, ok := m.InitialCluster[m.Name]
	if !ok {
		return fmt.Errorf("etcd member %q: %w: the initial cluster does not list it (name=%s)", m.Name, errdefs.ErrInvalidArgument, m.PeerURL)
	}
	if own != m.PeerURL {
		return fmt.Errorf("etcd member %q: %w: the initial cluster gives it %s, its peer URL is %s", m.Name, errdefs.ErrInvalidArgument, own, m.PeerURL)
	}
	for name, u := range m.InitialCluster {
		if _, err := memberURL("peer", u, m.scheme()); err != nil {
			return fmt.Errorf("etcd member %q: %w", name, err)
		}
	}
	return nil
}

// memberURL parses a URL of scheme with a host and a port.
func memberURL(what, s, scheme string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%s URL %q: %w: %w", what, s, errdefs.ErrInvalidArgument, err)
	}
	if u.Scheme != scheme {
		why := ""
		if scheme == "https" {
			why = " (peer traffic is TLS)"
		}
		return nil, fmt.Errorf("%s URL %q: %w: want %s://HOST:PORT%s", what, s, errdefs.ErrInvalidArgument, scheme, why)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" {
		return nil, fmt.Errorf("%s URL %q: %w: want %s://HOST:PORT", what, s, errdefs.ErrInvalidArgument, scheme)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return nil, fmt.Errorf("%s URL %q: %w: other members cannot reach an unspecified address; name this machine's own", what, s, errdefs.ErrInvalidArgument)
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%s URL %q: %w: no path allowed", what, s, errdefs.ErrInvalidArgument)
	}
	return &url.URL{Scheme: u.Scheme, Host: u.Host}, nil
}

// configure makes ec this member of its cluster.
func (m *Member) configure(ec *embed.Config) error {
	if len(m.InitialCluster) == 0 && hasMemberData(ec.Dir) {
		// A restarted member knows its cluster from its own data.
		c := *m
		c.InitialCluster = map[string]string{m.Name: m.PeerURL}
		m = &c
	}
	if err := m.validate(); err != nil {
		return err
	}
	pu, _ := memberURL("peer", m.PeerURL, m.scheme())
	ec.Name = m.Name
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	if m.TLS != nil {
		ec.PeerTLSInfo = transport.TLSInfo{
			CertFile: m.TLS.CertFile, KeyFile: m.TLS.KeyFile, TrustedCAFile: m.TLS.CAFile,
			ClientCertAuth: true,
		}
		if m.TLS.CommonName != "" {
			ec.PeerTLSInfo.AllowedCNs = []string{m.TLS.CommonName}
		}
	}
	if m.ClientURL != "" {
		cu, _ := memberURL("client", m.ClientURL, "http")
		ec.ListenClientUrls = append(ec.ListenClientUrls, *cu)
		ec.AdvertiseClientUrls = []url.URL{*cu}
	}
	names := make([]string, 0, len(m.InitialCluster))
	for name := range m.InitialCluster {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = name + "=" + m.InitialCluster[name]
	}
	ec.InitialCluster = strings.Join(parts, ",")
	// A fixed token keeps members of unrelated berth clusters that share
	// peer addresses (a test's, a rebuilt one's) from joining each other
	// by accident only as far as etcd's own checks go; the member names
	// and URLs must match too.
	ec.InitialClusterToken = "berth"
	ec.ClusterState = embed.ClusterStateFlagNew
	if m.Existing {
		ec.ClusterState = embed.ClusterStateFlagExisting
	}
	// Refuse to add a member that would leave the cluster without quorum.
	ec.StrictReconfigCheck = true
	return nil
}

// hasMemberData reports whether dir already holds an etcd member's data:
// such a member rejoins its cluster whatever the flags say.
func hasMemberData(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, "member", "wal"))
	return err == nil
}

// LeaderKey is the etcd key prefix of the election for role (say
// "controller"), under the store's prefix.
func (s *Store) LeaderKey(role string) string { return s.prefix + "/leader/" + role }

// RegistriesPrefix is the etcd key prefix under which each server records
// its registry's URL while it runs (registries/<name>), for the others to
// pull through from.
func (s *Store) RegistriesPrefix() string { return s.prefix + "/registries/" }

// clusterKey is where the servers share cluster-wide settings.
func (s *Store) clusterKey(name string) string { return s.prefix + "/cluster/" + name }

// SharedValue returns the cluster-wide value called name, making it with
// mk when there is none yet. Servers starting together agree on one: the
// first write wins, in a transaction, and the others read it.
//
// Values are kept in etcd as given: secrets come sealed (package seal).
func (s *Store) SharedValue(ctx context.Context, name string, mk func() ([]byte, error)) ([]byte, error) {
	key := s.clusterKey(name)
	r, err := s.client.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("cluster value %q: %w", name, wrapEtcd(err))
	}
	if len(r.Kvs) > 0 {
		return r.Kvs[0].Value, nil
	}
	v, err := mk()
	if err != nil {
		return nil, fmt.Errorf("cluster value %q: %w", name, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("cluster value %q: %w: empty", name, errdefs.ErrInvalidArgument)
	}
	t, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(v))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("cluster value %q: %w", name, wrapEtcd(err))
	}
	if t.Succeeded {
		return v, nil
	}
	kvs := t.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return nil, fmt.Errorf("cluster value %q: %w: written and gone at once", name, errdefs.ErrConflict)
	}
	return kvs[0].Value, nil
}

// ReplaceSharedValue swaps the cluster-wide value called name from old to
// v, as long as it still holds old: how a server seals a value that an
// older version stored in the clear. It reports whether it swapped; a
// false means another server changed it first, so read it again.
//
// The old value is gone from the store's history too: the store is
// compacted up to the swap, so no read at an older revision returns it
// (etcd's WAL keeps it until its files are rotated away).
func (s *Store) ReplaceSharedValue(ctx context.Context, name string, old, v []byte) (bool, error) {
	key := s.clusterKey(name)
	t, err := s.client.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(key), "=", string(old))).
		Then(clientv3.OpPut(key, string(v))).Commit()
	if err != nil {
		return false, fmt.Errorf("cluster value %q: %w", name, wrapEtcd(err))
	}
	if !t.Succeeded {
		return false, nil
	}
	if _, err := s.client.Compact(ctx, t.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		return true, fmt.Errorf("cluster value %q: forget the old value: %w", name, wrapEtcd(err))
	}
	return true, nil
}
