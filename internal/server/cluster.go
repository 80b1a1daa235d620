package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/promdefer"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/store"
)

// ServerConfig configures `berth server`: the control plane alone, one of
// several servers sharing a store.
type ServerConfig struct {
	DataDir string
	// MaxDraining is how many nodes may drain at once, cluster-wide; 1 when zero.
	MaxDraining int
	// Name names this server: its etcd member and its identity in the
	// controllers' election. The hostname when empty.
	Name string
	// Listen is where the API answers over TCP (host:port), with TLS and
	// the cluster's token.
	Listen string

	// PeerListen is where the embedded etcd member meets the others
	// (host:port or http://host:port). Unused with EtcdEndpoints.
	PeerListen string
	// EtcdClientListen, when set, also serves etcd's client API there
	// (host:port), for etcdctl. Unauthenticated: keep it on loopback.
	EtcdClientListen string
	// Peers maps each server's name to its peer URL. This server is added
	// when missing; none makes a cluster of one.
	Peers map[string]string
	// JoinExisting joins a running cluster that already lists this
	// server (etcdctl member add) instead of forming a new one.
	JoinExisting bool
	// EtcdEndpoints use an external etcd cluster instead of embedded members.
	EtcdEndpoints []string

	// Network is what the controllers hand out (pod subnets, service VIPs).
	Network Network
	// LeaderTTL bounds how long the controllers stay without a leader
	// after the leading server dies; leader.DefaultTTL when zero.
	LeaderTTL time.Duration
	Logger    *slog.Logger
	// Ready is called once the API answers.
	Ready func(ServerInfo)
}

// ServerInfo is what a server tells its operator once it answers.
type ServerInfo struct {
	Name string
	// Socket is the root-only unix socket; API the TCP endpoint.
	Socket, API string
	// CAFile is the cluster CA certificate clients and agents trust;
	// TokenFile holds the cluster's API token, Token itself.
	CAFile, TokenFile, Token string
	// CAPin is the cluster CA's public key pin, for agents joining
	// without a copy of CAFile.
	CAPin string
	// JoinTokenFile holds the join token this server made on the
	// cluster's first start (mode 0600); JoinToken is that token while it
	// works, "" when another server made the first or it was revoked.
	// JoinTokenCreated says this start made it.
	JoinTokenFile, JoinToken string
	JoinTokenCreated         bool
}

// controllerRole names the controllers' election under the store's prefix.
const controllerRole = "controller"

// Server runs one control-plane server until ctx ends: its etcd member
// (or a client of an external etcd), the API on a unix socket and over
// TCP, and the controllers and scheduler whenever this server wins their
// election. Any server answers the API; writes reach etcd's leader
// through the local member.
func Server(ctx context.Context, cfg ServerConfig) error {
	promdefer.Release() // etcd serves /metrics
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	name := cfg.Name
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("server name: %w", err)
		}
		name = nodeName(h)
	}
	log = log.With("server", name)
	if cfg.Listen == "" {
		return fmt.Errorf("server %q: %w: no API address to listen on", name, errdefs.ErrInvalidArgument)
	}
	listenHost, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return fmt.Errorf("server %q: API address %q: %w: %w", name, cfg.Listen, errdefs.ErrInvalidArgument, err)
	}
	scfg := store.Config{DataDir: cfg.DataDir, EtcdEndpoints: cfg.EtcdEndpoints, Logger: log.With("component", "store")}
	if len(cfg.EtcdEndpoints) == 0 {
		if scfg.Member, err = memberOf(name, cfg); err != nil {
			return fmt.Errorf("server %q: %w", name, err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	// Everything that can fail at once is checked before etcd starts,
	// which may wait a long time for its peers.
	tl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("server %q: API address: %w", name, err)
	}
	defer tl.Close()
	sock := apiserver.SocketPath(cfg.DataDir)
	ul, err := apiserver.ListenUnix(sock)
	if err != nil {
		return err
	}
	defer ul.Close()
	imgs, err := image.Open(filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}

	if scfg.Member != nil && len(scfg.Member.InitialCluster) > 1 {
		log.Info("waiting for a quorum of etcd members", "peers", scfg.Member.InitialCluster)
	}
	st, err := store.Open(ctx, scfg)
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}
	defer st.Close()
	creds, err := clusterCredentials(ctx, st, filepath.Join(cfg.DataDir, "tls"), apiHosts(listenHost, name))
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}

	g := newGroup(ctx)
	defer g.cancel()
	ctx, run := g.ctx, g.run
	joinFile := store.JoinTokenFile(cfg.DataDir)
	joinToken, joinCreated, err := st.EnsureJoinToken(ctx, joinFile)
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}
	if joinCreated {
		log.Info("made the cluster's first join token", "file", joinFile)
	}

	// With the CA, nodes authenticate with the certificates it signs on
	// join, and NodeAuthorizer confines them to their own node.
	srv := apiserver.New(apiserver.Config{Store: st, CA: creds.ca, Logger: log.With("component", "apiserver")})
	srv.SetMaxDraining(cfg.MaxDraining)
	// The registry nodes pull images from, and users push them to. What
	// this server's store lacks it pulls through from the other servers'
	// registries (with the cluster's admin token), found in etcd where
	// each records its URL while it runs: <store prefix>/registries/<name>.
	regs := registry.NewDirectory(st.Client(), strings.TrimSuffix(st.LeaderKey(""), "leader/")+"registries/", name)
	regs.Logger = log.With("component", "registry")
	// What no server has comes from the image's own registry.
	upstream, err := upstreamOptions()
	if err != nil {
		return err
	}
	srv.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages, Logger: log.With("component", "registry"),
		Peers:    &registry.Peers{List: regs.Peers, Transport: registry.PeerTransport(creds.ca.Pool(), creds.token)},
		Upstream: upstream}))
	run("image pruner", func(ctx context.Context) error {
		return keepPinnedImages(ctx, st, imgs, log.With("component", "images"))
	})
	run("registry directory", func(ctx context.Context) error {
		return regs.Announce(ctx, registry.AdvertisedURL(cfg.Listen, append([]string{cfg.PeerListen}, cfg.EtcdEndpoints...)))
	})
	run("api server", func(ctx context.Context) error { return srv.Serve(ctx, ul, apiserver.UnixRootOnly) })
	run("api server (tcp)", func(ctx context.Context) error { return srv.ServeTLS(ctx, tl, creds.tls, creds.token) })
	key := st.LeaderKey(controllerRole)
	run("controllers", func(ctx context.Context) error {
		// A fresh manager per term: nothing a past term remembered (how
		// long a node has been NotReady) outlives a gap in leadership.
		return leader.Run(ctx, st.Client(), key, name, func(ctx context.Context) error {
			// Its writes are fenced on the term: a leader paused past
			// its term (stopped, partitioned) writes nothing once back.
			term, ok := leader.TermFrom(ctx)
			if !ok {
				return fmt.Errorf("controllers: %w: no leader term in the work's context", errdefs.ErrFailedPrecondition)
			}
			return controller.NewManager(st.Fenced(term.Cmp()), controller.Options{Logger: log, Network: cfg.Network.controller()}).Run(ctx)
		}, leader.WithTTL(cfg.LeaderTTL), leader.WithLogger(log.With("component", "leader")))
	})
	g.wg.Go(func() {
		leader.Watch(ctx, st.Client(), key, func(t leader.Term) {
			if t.Identity == "" {
				log.Warn("controllers: no leader")
				return
			}
			log.Info("controllers: leader", "leader", t.Identity, "term", t.Revision, "self", t.Identity == name)
		})
	})

	if cfg.Ready != nil {
		c, err := client.New("unix://" + sock)
		if err != nil {
			return err
		}
		if waitHealthy(ctx, c) {
			cfg.Ready(ServerInfo{Name: name, Socket: sock, API: "https://" + cfg.Listen,
				CAFile: creds.caFile, TokenFile: creds.tokenFile, Token: creds.token, CAPin: creds.ca.Pin(),
				JoinTokenFile: joinFile, JoinToken: joinToken, JoinTokenCreated: joinCreated})
		}
	}
	return g.wait()
}

// memberOf is this server's etcd member.
func memberOf(name string, cfg ServerConfig) (*store.Member, error) {
	if cfg.PeerListen == "" {
		return nil, fmt.Errorf("%w: no etcd peer address (or give etcd endpoints)", errdefs.ErrInvalidArgument)
	}
	m := &store.Member{Name: name, PeerURL: httpURL(cfg.PeerListen), Existing: cfg.JoinExisting,
		InitialCluster: map[string]string{}}
	if cfg.EtcdClientListen != "" {
		m.ClientURL = httpURL(cfg.EtcdClientListen)
	}
	for n, u := range cfg.Peers {
		m.InitialCluster[n] = httpURL(u)
	}
	if _, ok := m.InitialCluster[name]; !ok {
		m.InitialCluster[name] = m.PeerURL
	}
	return m, nil
}

// httpURL takes host:port for http://host:port.
func httpURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		return s
	}
	return "http://" + s
}

// apiHosts are the names and addresses the API certificate covers.
func apiHosts(listenHost, name string) []string {
	hosts := []string{"127.0.0.1", "::1", "localhost", name}
	if h, err := os.Hostname(); err == nil {
		hosts = append(hosts, h)
	}
	ip := net.ParseIP(listenHost)
	if listenHost != "" && (ip == nil || !ip.IsUnspecified()) {
		return append(hosts, listenHost)
	}
	// Listening everywhere: every address of this machine.
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && !n.IP.IsLinkLocalUnicast() {
			hosts = append(hosts, n.IP.String())
		}
	}
	return hosts
}

// clusterCreds are the TLS and token credentials every server of a
// cluster shares, so that a client or agent trusting the cluster CA with
// the token reaches any of them.
type clusterCreds struct {
	ca                *pki.CA
	tls               *tls.Config
	token             string
	caFile, tokenFile string
}

// sharedCA is the cluster CA as the servers keep it in the store.
type sharedCA struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// clusterCredentials takes the cluster CA and API token from the store,
// the first server making them, and writes them under dir (ca.crt,
// ca.key, token) next to this server's certificate, issued by the CA for
// hosts.
//
// The CA key and the token sit in etcd in the clear: whoever reads etcd
// (or its unencrypted peer traffic) can act as the cluster. Encrypting
// them with a secret the servers are given, and peer TLS, are still to do.
func clusterCredentials(ctx context.Context, st *store.Store, dir string, hosts []string) (*clusterCreds, error) {
	raw, err := st.SharedValue(ctx, "api-ca", func() ([]byte, error) {
		ca, err := pki.NewCA()
		if err != nil {
			return nil, err
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
	tok, err := st.SharedValue(ctx, "api-token", func() ([]byte, error) {
		b := make([]byte, 32)
		if _, err := rand.Read(b); err != nil {
			return nil, err
		}
		return []byte(hex.EncodeToString(b)), nil
	})
	if err != nil {
		return nil, err
	}
	c := &clusterCreds{ca: ca, token: string(tok), caFile: filepath.Join(dir, pki.CACertFile), tokenFile: filepath.Join(dir, "token")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("tls dir %s: %w", dir, err)
	}
	for _, f := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{filepath.Join(dir, pki.CAKeyFile), []byte(sc.Key), 0o600},
		{c.caFile, []byte(sc.Cert), 0o644},
		{c.tokenFile, append(tok, '\n'), 0o600},
	} {
		if err := writeIfChanged(f.path, f.data, f.mode); err != nil {
			return nil, err
		}
	}
	cert, err := pki.LoadOrIssueServer(dir, ca, hosts)
	if err != nil {
		return nil, err
	}
	c.tls = ca.ServerTLSConfig(cert)
	return c, nil
}

// writeIfChanged writes data to path through a temporary file unless it
// holds data already.
func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(data) {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
