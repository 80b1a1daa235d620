package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/initgc"
)

// AgentConfig configures `berth agent`: a node of a cluster whose control
// plane runs elsewhere.
type AgentConfig struct {
	// DataDir holds the node's images and containers.
	DataDir string
	// Servers are the API servers' https:// URLs. Requests go to one at a
	// time and move on to the next when it cannot answer. The agent starts
	// on the one its node's name picks (ServerOrder), not the first, so
	// that a fleet whose machines are all given the same list spreads over
	// the servers; ServersInOrder starts it on the first.
	Servers []string
	// ServersInOrder starts the agent on Servers[0]: for a caller that
	// ordered them itself (hollow agents, node i on the i-th server).
	ServersInOrder bool
	// CAFile is the cluster CA certificate (a server's
	// <data-dir>/tls/ca.crt); the system's roots when empty. A joining
	// agent trusts the servers by it (or CAPin); a joined one by the CA
	// saved with its certificate.
	CAFile string
	// Credential is how the agent proves itself to the servers. When nil
	// the agent uses its node certificate (NodeCredentialsDir), joining
	// with JoinToken on its first start to get one.
	Credential Credential
	// JoinToken is a join token (berth_<id>.<secret>), traded once for a
	// node certificate; later starts use the certificate and need none.
	JoinToken string
	// CAPin is the cluster CA's public key pin (sha256:<hex>, as a server
	// prints it), to trust the servers by on the first join when CAFile
	// is empty.
	CAPin string
	// NodeName names the node; the hostname when empty.
	NodeName string
	// Address is the node's address as other nodes reach it; when empty,
	// the local address this machine uses to reach the server it starts on.
	Address string
	Labels  map[string]string
	Network Network
	Logger  *slog.Logger
	// CgroupFavorDynMods remounts cgroup2 with favordynmods, for faster
	// container starts (see runtime.FavorDynMods).
	CgroupFavorDynMods bool
	// DiskReserve is the free space the node keeps for itself on the
	// filesystem of its containers' writable layers (agent.Config).
	DiskReserve agent.DiskReserve
	// CgroupDriver is runtime.CgroupDriverCgroupfs or CgroupDriverSystemd; "" detects it.
	CgroupDriver string
	// Ready is called once the node has registered.
	Ready func(node string)
	// Runtime, Images and Info, when set, replace the node's container
	// runtime, image store and what it reads of its hardware: hollow
	// agents (berth sim agents) run the rest of the agent as it is.
	Runtime agent.Runtime
	Images  agent.Images
	Info    *hostinfo.Info
	// NoTunnels leaves out the tunnels servers reach the node by (exec,
	// logs): one connection per server fewer for each hollow agent.
	NoTunnels bool
	// UnsyncedCredentials saves the node's credentials without syncing
	// them to disk (client.NodeCredentials.SaveUnsynced): a hollow node's
	// need not survive a power cut, and thousands of joins each waited on
	// six fsyncs.
	UnsyncedCredentials bool
}

// Credential is how an agent authenticates to the API servers. It adds
// what it needs to the agent's TLS configuration (a client certificate)
// or to its client (a bearer token).
type Credential interface {
	Apply(cfg *tls.Config) ([]client.Option, error)
}

// BearerToken authenticates with the cluster's admin API token. It is a
// fallback for agents set up before join tokens: it gives the agent every
// right in the cluster, where a NodeCertificate gives it only its own
// node's.
type BearerToken string

var _ Credential = BearerToken("")

// Apply sends the token with every request.
func (t BearerToken) Apply(*tls.Config) ([]client.Option, error) {
	if len(t) == 0 {
		return nil, fmt.Errorf("api token: %w: empty", errdefs.ErrInvalidArgument)
	}
	return []client.Option{client.WithToken(string(t))}, nil
}

// NodeCertificate authenticates with a node's client certificate, got
// by joining; the servers are trusted by the cluster CA that came with it.
type NodeCertificate struct{ *client.NodeCredentials }

var _ Credential = NodeCertificate{}

// Apply presents the certificate and trusts the cluster CA alone.
func (nc NodeCertificate) Apply(cfg *tls.Config) ([]client.Option, error) {
	if nc.NodeCredentials == nil {
		return nil, fmt.Errorf("node certificate: %w: none", errdefs.ErrInvalidArgument)
	}
	tc, err := nc.TLSConfig()
	if err != nil {
		return nil, err
	}
	cfg.Certificates, cfg.RootCAs = tc.Certificates, tc.RootCAs
	return nil, nil
}

// NodeCredentialsDir is where an agent keeps its node certificate, key
// (mode 0600) and the cluster CA under its data dir.
func NodeCredentialsDir(dataDir string) string { return filepath.Join(dataDir, "node") }

// Agent runs a node agent against remote API servers until ctx ends.
// Containers keep running when it returns; the next Agent adopts them.
func Agent(ctx context.Context, cfg AgentConfig) error {
	initgc.Restore() // a long-lived heap, collected at Go's pace
	log := logger(cfg.Logger)
	if len(cfg.Servers) == 0 {
		return fmt.Errorf("agent: %w: no API server given", errdefs.ErrInvalidArgument)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	name, renewing, err := agentCredential(ctx, &cfg, log)
	if err != nil || cfg.Credential == nil {
		return err
	}
	c, hosts, tr, tunnelClients, err := agentClient(cfg)
	if err != nil {
		return err
	}
	if renewing != nil {
		go renewing.run(ctx, c, tr)
	}
	addr := cfg.Address
	if addr == "" {
		if addr, err = localAddressTo(hosts[0]); err != nil {
			return fmt.Errorf("node %q: address: %w (give one)", name, err)
		}
	}
	n := &node{Name: name, Address: addr, Labels: cfg.Labels, DataDir: cfg.DataDir, Client: c, Network: cfg.Network, DiskReserve: cfg.DiskReserve,
		Runtime: cfg.Runtime, Images: cfg.Images, Info: cfg.Info, CgroupFavorDynMods: cfg.CgroupFavorDynMods, CgroupDriver: cfg.CgroupDriver, Log: log,
		PeerTLS: peerTLS(cfg)}
	if n.Images == nil {
		store, err := image.Open(filepath.Join(cfg.DataDir, "images"))
		if err != nil {
			return err
		}
		n.Images = &agent.PullingImages{StoreImages: agent.StoreImages{Store: store}, Base: "https://" + hosts[0], Transport: tr, Events: c, Node: name, Logger: log,
			Settings: c.RegistrySettings}
	}
	// The agent says when it has registered: polling the node for it, ten
	// times a second, was a fleet's joins' largest share of reads.
	n.Registered = cfg.Ready
	if err := n.open(); err != nil {
		return err
	}
	if ok, err := waitForServers(ctx, c, cfg.Servers, name, log); !ok {
		return err
	}
	ag := n.agent()
	// A tunnel to every server: whichever one a client asks reaches this node.
	if !cfg.NoTunnels {
		n.serveTunnels(ag, tunnelClients, func(_ string, f func(context.Context) error) { go f(ctx) })
	}
	return ag.Run(ctx)
}

// agentCredential is the node's name and how it proves itself to the
// servers, set in cfg.Credential: as given, or its node certificate,
// joining the cluster with cfg.JoinToken first if it has none; renewing
// keeps that certificate fresh. cfg.Credential stays nil when ctx ended
// while joining. Once the name is known it puts cfg.Servers in the order
// the node asks them (ServerOrder).
func agentCredential(ctx context.Context, cfg *AgentConfig, log *slog.Logger) (name string, renewing *renewingCertificate, err error) {
	name = cfg.NodeName
	var saved *client.NodeCredentials
	if cfg.Credential == nil {
		nc, node, err := loadNodeCredentials(cfg.DataDir)
		switch {
		case errors.Is(err, os.ErrNotExist):
		case err != nil:
			return "", nil, err
		case name != "" && name != node:
			return "", nil, fmt.Errorf("node %q: %w: the certificate in %s names node %q; remove that directory to join again under another name",
				name, errdefs.ErrFailedPrecondition, NodeCredentialsDir(cfg.DataDir), node)
		case cfg.CAPin != "":
			// The pin must still match the CA saved at the join: a
			// mismatch is the wrong cluster, and waiting will not cure it.
			if err := client.CheckPin(nc.CA, cfg.CAPin); err != nil {
				return "", nil, fmt.Errorf("node %q: --ca-pin against the CA saved in %s: %w", node, NodeCredentialsDir(cfg.DataDir), err)
			}
			saved, name = nc, node
		default:
			saved, name = nc, node
		}
	}
	if name, err = processName(name, "node name"); err != nil {
		return "", nil, err
	}
	if !cfg.ServersInOrder {
		// Joining included: the node's first server is the same from its
		// first start on.
		cfg.Servers = ServerOrder(cfg.Servers, name)
	}
	if cfg.Credential != nil {
		return name, nil, nil
	}
	if saved == nil {
		nc, err := joinCluster(ctx, *cfg, name, log)
		if err != nil || nc == nil {
			return name, nil, err
		}
		saved = nc
	}
	if renewing, err = newRenewingCertificate(NodeCredentialsDir(cfg.DataDir), name, saved, cfg.saveCredentials, log); err != nil {
		return "", nil, err
	}
	cfg.Credential = renewing
	return name, renewing, nil
}

// ServerOrder is servers rotated to start at the one a hash of node
// picks, and on from there in the order given (the failover order). The
// same node starts on the same server across restarts, and a fleet whose
// machines are all given the same list spreads over the servers rather
// than every node on the first.
func ServerOrder(servers []string, node string) []string {
	if len(servers) < 2 {
		return servers
	}
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	k := int(h.Sum64() % uint64(len(servers)))
	return append(slices.Clone(servers[k:]), servers[:k]...)
}

// waitForServers waits until an API server answers. It fails at once
// when the servers refuse the node or cannot be trusted, and keeps trying
// while they cannot be reached; false with no error when ctx ends first.
func waitForServers(ctx context.Context, c *client.Client, servers []string, name string, log *slog.Logger) (bool, error) {
	for warned := false; ; {
		err := c.Healthz(ctx)
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			return false, nil
		}
		if errdefs.IsUnauthorized(err) || errdefs.IsForbidden(err) || isCertError(err) {
			return false, fmt.Errorf("node %q: API servers %v: %w", name, servers, err)
		}
		if !warned {
			log.Warn("waiting for an API server", "servers", servers, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return false, nil
		case <-time.After(time.Second):
		}
	}
}

// loadNodeCredentials reads the node credentials saved under dataDir
// and the node their certificate names; the error matches os.ErrNotExist
// when the agent has not joined yet.
func loadNodeCredentials(dataDir string) (*client.NodeCredentials, string, error) {
	nc, err := client.LoadNodeCredentials(NodeCredentialsDir(dataDir))
	if err != nil {
		return nil, "", err
	}
	leaf, err := nodecert.ParseCertificate(nc.Certificate)
	if err != nil {
		return nil, "", fmt.Errorf("node certificate in %s: %w", NodeCredentialsDir(dataDir), err)
	}
	node, ok := nodecert.NodeName(leaf)
	if !ok {
		return nil, "", fmt.Errorf("node certificate in %s: %w: not a node certificate (%q)",
			NodeCredentialsDir(dataDir), errdefs.ErrFailedPrecondition, leaf.Subject.CommonName)
	}
	// Stopped past its certificate's end, the agent could not renew it;
	// no server will take it, and waiting would not help.
	if time.Now().After(leaf.NotAfter) {
		return nil, "", fmt.Errorf("node %q: certificate in %s: %w: expired at %s; an admin removes the node (berth node rm %s), then the agent joins again with a join token (after removing %s)",
			node, NodeCredentialsDir(dataDir), errdefs.ErrFailedPrecondition, leaf.NotAfter.UTC().Format(time.RFC3339), node, NodeCredentialsDir(dataDir))
	}
	return nc, node, nil
}

// joinCluster trades cfg.JoinToken for a node certificate for node,
// asking the servers in turn and waiting while none can be reached, and
// saves it under the data dir. It returns nil, nil when ctx ends first.
func joinCluster(ctx context.Context, cfg AgentConfig, node string, log *slog.Logger) (*client.NodeCredentials, error) {
	dir := NodeCredentialsDir(cfg.DataDir)
	if cfg.JoinToken == "" {
		return nil, fmt.Errorf("node %q: %w: not joined yet (no credentials in %s): give a join token", node, errdefs.ErrInvalidArgument, dir)
	}
	opts := client.JoinOptions{Token: cfg.JoinToken, Node: node, CAPin: cfg.CAPin}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		opts.CA = pem
	}
	if len(opts.CA) == 0 && opts.CAPin == "" {
		return nil, fmt.Errorf("node %q: %w: joining needs the cluster CA (a file) or its pin to trust the servers by", node, errdefs.ErrInvalidArgument)
	}
	// One key for every attempt: a join whose answer timed out may have
	// gone through, and only its key gets its certificate back.
	var err error
	if _, opts.Key, err = nodecert.NewKey(node); err != nil {
		return nil, err
	}
	for warned := false; ; {
		for _, s := range cfg.Servers {
			var nc *client.NodeCredentials
			if nc, err = client.Join(ctx, s, opts); err == nil {
				if err := cfg.saveCredentials(nc, dir); err != nil {
					return nil, err
				}
				log.Info("joined the cluster", "node", node, "server", s, "credentials", dir)
				return nc, nil
			}
			if ctx.Err() != nil {
				return nil, nil
			}
			if !unreachable(err) {
				return nil, fmt.Errorf("node %q: %w", node, err)
			}
		}
		if !warned {
			log.Warn("waiting for an API server to join", "servers", cfg.Servers, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(time.Second):
		}
	}
}

// saveCredentials writes the node's credentials into dir, synced to disk
// unless cfg.UnsyncedCredentials.
func (cfg AgentConfig) saveCredentials(nc *client.NodeCredentials, dir string) error {
	if cfg.UnsyncedCredentials {
		return nc.SaveUnsynced(dir)
	}
	return nc.Save(dir)
}

// unreachable reports an error that asking again later, or another
// server, may cure: no answer, or an unavailable server, but not a
// server that cannot be trusted.
func unreachable(err error) bool {
	var op *net.OpError
	var pin *client.PinMismatchError
	if errors.As(err, &pin) || isCertError(err) {
		return false
	}
	return errdefs.IsUnavailable(err) || errors.As(err, &op) && op.Op == "dial"
}

// agentClient is an API client that reaches whichever of cfg.Servers
// answers, the servers' host:port in the order given, the client's
// transport with the agent's credential, for the registry at /v2/, and a
// client of each server alone, for the node's tunnels.
func agentClient(cfg AgentConfig) (*client.Client, []string, http.RoundTripper, []*client.Client, error) {
	var hosts []string
	for _, s := range cfg.Servers {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, nil, nil, nil, fmt.Errorf("API server %q: %w: want https://HOST:PORT", s, errdefs.ErrInvalidArgument)
		}
		hosts = append(hosts, u.Host)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, nil, nil, fmt.Errorf("CA file %s: %w: no PEM certificate", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
	}
	opts, err := cfg.Credential.Apply(tc)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	// The API client's transport: its frames and headers are what the
	// server keeps least for, for the life of the node's connection.
	tr := client.NewTransport()
	tr.TLSClientConfig = tc
	// A dead server must not hold a request for long: fail the dial fast
	// and move on to the next.
	tr.DialContext = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	fo := &failover{hosts: hosts}
	fo.base.Store(tr)
	var rt http.RoundTripper = fo
	c, err := client.New(cfg.Servers[0], append(opts, client.WithHTTPClient(&http.Client{Transport: rt}))...)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	var each []*client.Client
	for _, s := range cfg.Servers {
		sc, err := client.New(s, append(opts, client.WithHTTPClient(&http.Client{Transport: tr}))...)
		if err != nil {
			return nil, nil, nil, nil, err
		}
		each = append(each, sc)
	}
	if tok, ok := cfg.Credential.(BearerToken); ok {
		rt = bearerTransport{token: string(tok), inner: rt}
	}
	return c, hosts, rt, each, nil
}

// peerTLS is the node's TLS towards other nodes' agents (a migration's
// direct stream): its node certificate and the cluster CA; nil without a
// node certificate.
func peerTLS(cfg AgentConfig) *tls.Config {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	if _, err := cfg.Credential.Apply(tc); err != nil || tc.RootCAs == nil || (len(tc.Certificates) == 0 && tc.GetClientCertificate == nil) {
		return nil
	}
	return tc
}

// failover sends each request to the server that answered last, and on to
// the others in turn when it cannot be reached or says it is unavailable
// (its etcd member has no quorum).
type failover struct {
	base  atomic.Pointer[http.Transport]
	hosts []string
	cur   atomic.Int32
}

func (f *failover) RoundTrip(req *http.Request) (*http.Response, error) {
	start := int(f.cur.Load())
	var lastErr error
	for i := range f.hosts {
		n := (start + i) % len(f.hosts)
		r := req.Clone(req.Context())
		r.URL.Host, r.Host = f.hosts[n], ""
		if i > 0 && req.Body != nil && req.Body != http.NoBody {
			if req.GetBody == nil {
				break
			}
			b, err := req.GetBody()
			if err != nil {
				break
			}
			r.Body = b
		}
		resp, err := f.base.Load().RoundTrip(r)
		last := i == len(f.hosts)-1
		if err == nil && (resp.StatusCode != http.StatusServiceUnavailable || last) {
			f.cur.Store(int32(n))
			return resp, nil
		}
		if err == nil {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			lastErr = fmt.Errorf("%s: %s", f.hosts[n], resp.Status)
			continue
		}
		if cerr := req.Context().Err(); cerr != nil {
			// Timed out on this server: the next request tries the next one
			// (a server cut off without a reset never refuses a connection).
			if errors.Is(cerr, context.DeadlineExceeded) {
				f.cur.CompareAndSwap(int32(n), int32((n+1)%len(f.hosts)))
			}
			return nil, err
		}
		if isCertError(err) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

// CloseIdleConnections closes the idle connections to every server.
func (f *failover) CloseIdleConnections() { f.base.Load().CloseIdleConnections() }

// Renewed makes the next requests dial again, presenting a renewed
// certificate. Closing the idle connections is not enough over HTTP/2:
// the node's one connection is never idle while its watch is open, and
// every request would go on presenting the old certificate until the
// servers refuse it. Requests under way (the watch) finish on the old
// transport; the servers end the watch once the old certificate stops
// working, and the agent watches again on the new one.
func (f *failover) Renewed() {
	old := f.base.Swap(f.base.Load().Clone())
	old.CloseIdleConnections()
}

// isCertError reports a server the agent cannot trust: trying it again
// would not help.
func isCertError(err error) bool {
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var tv *tls.CertificateVerificationError
	return errors.As(err, &ua) || errors.As(err, &hn) || errors.As(err, &ci) || errors.As(err, &tv)
}

// localAddressTo is this machine's address on the route to hostport.
func localAddressTo(hostport string) (string, error) {
	c, err := net.Dial("udp", hostport) // sends nothing: it only picks a route
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP.String(), nil
}
