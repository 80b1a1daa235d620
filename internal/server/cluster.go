package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/atomicfile"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/initgc"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/memlimit"
	"github.com/berth-dev/berth/internal/metrics"
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
	// NodeCertTTL is how long the node certificates this server signs
	// last (agents renew them); apiserver.DefaultNodeCertTTL when zero.
	NodeCertTTL time.Duration
	// NodeTTL is how long a node stays alive after its last heartbeat,
	// and how long the controllers wait before they give up on a node
	// whose lease went with its server's rather than for missed beats
	// (controller.Options.StartGrace); api.NodeTTL when zero. Agents beat
	// at a third of it.
	NodeTTL time.Duration
	// Name names this server: its etcd member and its identity in the
	// controllers' election. The hostname when empty.
	Name string
	// Listen is where the API answers over TCP (host:port), with TLS and
	// the cluster's token.
	Listen string

	// PeerListen is where the embedded etcd member meets the others
	// (host:port or https://host:port), over TLS with a peer certificate
	// of the cluster CA. Unused with EtcdEndpoints.
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
	// SealKeyFile holds the key that seals the cluster's secrets (the CA
	// key, the admin token) at rest; seal.key in DataDir when empty.
	// Every server of a cluster has the same key (see InitCluster).
	SealKeyFile string

	// Network is what the controllers hand out (pod subnets, service VIPs).
	Network Network
	// AllowedHostPaths, when set, are the only host directories a
	// hostPath volume may mount (see apiserver.Config).
	AllowedHostPaths []string
	// LeaderTTL bounds how long the controllers stay without a leader
	// after the leading server dies; leader.DefaultTTL when zero.
	LeaderTTL time.Duration
	// MemoryLimit is the process's soft memory limit (see memlimit); the
	// zero Limit leaves the runtime's as it is.
	MemoryLimit memlimit.Limit
	Logger      *slog.Logger
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
	// JoinTokenExpires is when JoinToken stops working (zero: never).
	JoinTokenExpires time.Time
}

// controllerRole names the controllers' election under the store's prefix.
const controllerRole = "controller"

// Server runs one control-plane server until ctx ends: its etcd member
// (or a client of an external etcd), the API on a unix socket and over
// TCP, and the controllers and scheduler whenever this server wins their
// election. Any server answers the API; writes reach etcd's leader
// through the local member.
//
// Long because it is wiring: the control plane's parts built and started in
// order, nothing more.
func Server(ctx context.Context, cfg ServerConfig) error {
	promdefer.Release() // etcd serves /metrics
	initgc.Restore()    // a long-lived heap, collected at Go's pace
	name, listenHost, err := serverAddress(cfg)
	if err != nil {
		return err
	}
	log := logger(cfg.Logger).With("server", name)
	if err := setMemoryLimit(ctx, cfg.MemoryLimit, log); err != nil {
		return err
	}
	scfg, secrets, err := storeConfig(name, cfg, log)
	if err != nil {
		return err
	}
	// Everything that can fail at once is checked before etcd starts,
	// which may wait a long time for its peers.
	tl, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("server %q: API address: %w", name, err)
	}
	defer tl.Close()
	sock := api.SocketPath(cfg.DataDir)
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
	creds, err := clusterCredentials(ctx, st, secrets, apiHosts(listenHost, name))
	if err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}

	g := newGroup(ctx)
	defer g.cancel()
	ctx, run := g.ctx, g.run
	info := ServerInfo{Name: name, Socket: sock, API: "https://" + cfg.Listen,
		CAFile: creds.CAFile, TokenFile: creds.TokenFile, Token: creds.Token, CAPin: creds.CA.Pin()}
	if err := firstJoinToken(ctx, st, cfg.DataDir, &info, log); err != nil {
		return fmt.Errorf("server %q: %w", name, err)
	}

	regs := registryDirectory(g, st, name, cfg, log)
	key := st.LeaderKey(controllerRole)
	phases := new(metrics.Phases)
	_, err = controlPlane{Store: st, Images: imgs, Socket: sock, Unix: ul, TCP: tl, Creds: creds, Log: log, Phases: phases,
		// With the CA, nodes authenticate with the certificates it signs
		// on join, and NodeAuthorizer confines them to their own node.
		API:         apiserver.Config{Store: st, CA: creds.CA, NodeCertTTL: cfg.NodeCertTTL, NodeTTL: cfg.NodeTTL, AllowedHostPaths: cfg.AllowedHostPaths, SealKey: secrets.key},
		MaxDraining: cfg.MaxDraining,
		Peers:       &registry.Peers{List: regs.Peers, Transport: registry.PeerTransport(creds.CA.Pool(), creds.Token)},
		Controllers: electedControllers(st, key, name, cfg, phases, log),
	}.start(g)
	if err != nil {
		return err
	}
	if scfg.Member != nil {
		run("peer certificate", func(ctx context.Context) error {
			return secrets.renewPeer(ctx, name, scfg.Member.PeerURL, log.With("component", "store"))
		})
	}
	g.wg.Go(func() { logLeaders(ctx, st, key, name, log) })

	if cfg.Ready != nil {
		c, err := client.New("unix://" + sock)
		if err != nil {
			return err
		}
		if waitHealthy(ctx, c) {
			cfg.Ready(info)
		}
	}
	return g.wait()
}

// serverAddress is the server's name and the host its API listens on.
func serverAddress(cfg ServerConfig) (name, host string, err error) {
	if name, err = processName(cfg.Name, "server name"); err != nil {
		return "", "", err
	}
	if cfg.Listen == "" {
		return "", "", fmt.Errorf("server %q: %w: no API address to listen on", name, errdefs.ErrInvalidArgument)
	}
	if host, _, err = net.SplitHostPort(cfg.Listen); err != nil {
		return "", "", fmt.Errorf("server %q: API address %q: %w: %w", name, cfg.Listen, errdefs.ErrInvalidArgument, err)
	}
	return name, host, nil
}

// registryDirectory lists the servers' registries, this one's announced
// there while g runs. The registry nodes pull images from, and users push
// them to: what this server's store lacks it pulls through from the other
// servers' registries (with the cluster's admin token), found in etcd
// where each records its URL while it runs.
func registryDirectory(g *group, st *store.Store, name string, cfg ServerConfig, log *slog.Logger) *registry.Directory {
	regs := registry.NewDirectory(st.Client(), st.RegistriesPrefix(), name)
	regs.Logger = log.With("component", "registry")
	g.run("registry directory", func(ctx context.Context) error {
		return regs.Announce(ctx, registry.AdvertisedURL(cfg.Listen, append([]string{cfg.PeerListen}, cfg.EtcdEndpoints...)))
	})
	return regs
}

// storeConfig is how this server opens the store: its etcd member (none
// with external etcd) and the secrets it needs first. The cluster's CA
// comes before etcd: the members meet over TLS with its certificates. A
// server alone makes its cluster's secrets; a member of several needs
// copies made by "berth server init".
func storeConfig(name string, cfg ServerConfig, log *slog.Logger) (store.Config, *serverSecrets, error) {
	scfg := store.Config{DataDir: cfg.DataDir, EtcdEndpoints: cfg.EtcdEndpoints, Logger: log.With("component", "store")}
	var err error
	if len(cfg.EtcdEndpoints) == 0 {
		if scfg.Member, err = memberOf(name, cfg); err != nil {
			return scfg, nil, fmt.Errorf("server %q: %w", name, err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return scfg, nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	embedded := scfg.Member != nil
	alone := !embedded || (len(scfg.Member.InitialCluster) == 1 && !scfg.Member.Existing)
	secrets, err := loadSecrets(cfg.DataDir, cfg.SealKeyFile, alone, embedded)
	if err != nil {
		return scfg, nil, fmt.Errorf("server %q: %w", name, err)
	}
	if embedded {
		if scfg.Member.TLS, err = secrets.peerTLS(name, scfg.Member.PeerURL); err != nil {
			return scfg, nil, err
		}
	}
	return scfg, secrets, nil
}

// firstJoinToken makes the cluster's first join token on its first start
// and tells info about it while it works.
func firstJoinToken(ctx context.Context, st *store.Store, dataDir string, info *ServerInfo, log *slog.Logger) error {
	info.JoinTokenFile = store.JoinTokenFile(dataDir)
	var err error
	info.JoinToken, info.JoinTokenCreated, err = st.EnsureJoinToken(ctx, info.JoinTokenFile)
	if err != nil {
		return err
	}
	if info.JoinTokenCreated {
		log.Info("made the cluster's first join token", "file", info.JoinTokenFile)
	}
	if info.JoinToken != "" {
		if tok, err := st.VerifyJoinToken(ctx, info.JoinToken, time.Now()); err == nil {
			info.JoinTokenExpires = tok.Expires
		}
	}
	return nil
}

// electedControllers runs the controllers while this server leads their
// election (key). A fresh manager per term: nothing a past term
// remembered (how long a node has been NotReady) outlives a gap in
// leadership.
func electedControllers(st *store.Store, key, name string, cfg ServerConfig, phases *metrics.Phases, log *slog.Logger) func(context.Context, *apiserver.Server) error {
	return func(ctx context.Context, srv *apiserver.Server) error {
		return leader.Run(ctx, st.Client(), key, name, func(ctx context.Context) error {
			// Its writes are fenced on the term: a leader paused past
			// its term (stopped, partitioned) writes nothing once back.
			term, ok := leader.TermFrom(ctx)
			if !ok {
				return fmt.Errorf("controllers: %w: no leader term in the work's context", errdefs.ErrFailedPrecondition)
			}
			return controller.NewManager(st.Fenced(term.Cmp()), controller.Options{Logger: log, Network: cfg.Network.controller(), Migrate: srv.Migrate, Admit: srv.Admit,
				StartGrace: cfg.NodeTTL, Phases: phases}).Run(ctx)
		}, leader.WithTTL(cfg.LeaderTTL), leader.WithLogger(log.With("component", "leader")), leader.WithRenew(st.RenewLease))
	}
}

// logLeaders logs who leads the controllers, as it changes, until ctx ends.
func logLeaders(ctx context.Context, st *store.Store, key, name string, log *slog.Logger) {
	leader.Watch(ctx, st.Client(), key, func(t leader.Term) {
		if t.Identity == "" {
			log.Warn("controllers: no leader")
			return
		}
		log.Info("controllers: leader", "leader", t.Identity, "term", t.Revision, "self", t.Identity == name)
	})
}

// memberOf is this server's etcd member.
func memberOf(name string, cfg ServerConfig) (*store.Member, error) {
	if cfg.PeerListen == "" {
		return nil, fmt.Errorf("%w: no etcd peer address (or give etcd endpoints)", errdefs.ErrInvalidArgument)
	}
	m := &store.Member{Name: name, PeerURL: withScheme("https", cfg.PeerListen), Existing: cfg.JoinExisting,
		InitialCluster: map[string]string{}}
	if cfg.EtcdClientListen != "" {
		m.ClientURL = withScheme("http", cfg.EtcdClientListen)
	}
	for n, u := range cfg.Peers {
		m.InitialCluster[n] = withScheme("https", u)
	}
	if _, ok := m.InitialCluster[name]; !ok {
		m.InitialCluster[name] = m.PeerURL
	}
	return m, nil
}

// withScheme takes host:port for scheme://host:port; a URL stays as
// given, for the member's checks to name a wrong scheme.
func withScheme(scheme, s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" && u.Host != "" {
		return s
	}
	return scheme + "://" + s
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

// writeIfChanged writes data to path atomically unless it holds data
// already.
func writeIfChanged(path string, data []byte, mode os.FileMode) error {
	if cur, err := os.ReadFile(path); err == nil && string(cur) == string(data) {
		return nil
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s: %w", path, err)
	}
	return atomicfile.Write(path, data, mode)
}
