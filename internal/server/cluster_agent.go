package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/runtime"
)

// AgentConfig configures `berth agent`: a node of a cluster whose control
// plane runs elsewhere.
type AgentConfig struct {
	// DataDir holds the node's images and containers.
	DataDir string
	// Servers are the API servers' https:// URLs. Requests go to one at a
	// time and move on to the next when it cannot answer.
	Servers []string
	// CAFile is the cluster CA certificate (a server's
	// <data-dir>/tls/ca.crt); the system's roots when empty.
	CAFile string
	// Credential is how the agent proves itself to the servers.
	Credential Credential
	// NodeName names the node; the hostname when empty.
	NodeName string
	// Address is the node's address as other nodes reach it; when empty,
	// the local address this machine uses to reach the first server.
	Address string
	Labels  map[string]string
	Network Network
	Logger  *slog.Logger
	// Ready is called once the node has registered.
	Ready func(node string)
}

// Credential is how an agent authenticates to the API servers. It adds
// what it needs to the agent's TLS configuration (a client certificate)
// or to its client (a bearer token).
type Credential interface {
	Apply(cfg *tls.Config) ([]client.Option, error)
}

// BearerToken authenticates with the cluster's API token, until nodes
// join with join tokens and authenticate with their own certificates.
type BearerToken string

var _ Credential = BearerToken("")

// Apply sends the token with every request.
func (t BearerToken) Apply(*tls.Config) ([]client.Option, error) {
	if len(t) == 0 {
		return nil, fmt.Errorf("api token: %w: empty", errdefs.ErrInvalidArgument)
	}
	return []client.Option{client.WithToken(string(t))}, nil
}

// Agent runs a node agent against remote API servers until ctx ends.
// Containers keep running when it returns; the next Agent adopts them.
func Agent(ctx context.Context, cfg AgentConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if len(cfg.Servers) == 0 {
		return fmt.Errorf("agent: %w: no API server given", errdefs.ErrInvalidArgument)
	}
	if cfg.Credential == nil {
		return fmt.Errorf("agent: %w: no credential for the API servers", errdefs.ErrInvalidArgument)
	}
	name := cfg.NodeName
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		name = nodeName(h)
	}
	c, hosts, err := agentClient(cfg)
	if err != nil {
		return err
	}
	addr := cfg.Address
	if addr == "" {
		if addr, err = localAddressTo(hosts[0]); err != nil {
			return fmt.Errorf("node %q: address: %w (give one)", name, err)
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	rt, err := runtime.New(filepath.Join(cfg.DataDir, "containers"))
	if err != nil {
		return err
	}
	imgs, err := image.Open(filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return err
	}
	info, err := hostinfo.Read()
	if err != nil {
		return fmt.Errorf("read host capacity: %w", err)
	}
	// Say at once when the servers refuse us or cannot be trusted; keep
	// trying while they cannot be reached.
	for warned := false; ; {
		err := c.Healthz(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if errdefs.IsUnauthorized(err) || errdefs.IsForbidden(err) || isCertError(err) {
			return fmt.Errorf("node %q: API servers %v: %w", name, cfg.Servers, err)
		}
		if !warned {
			log.Warn("waiting for an API server", "servers", cfg.Servers, "err", err)
			warned = true
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
	ag := agent.New(agent.Config{
		Node:         agent.NodeInfo{Name: name, Address: addr, Labels: cfg.Labels, Info: info},
		ControlPlane: agent.NewAPIPlane(c),
		Runtime:      rt,
		Images:       Images{imgs},
		Logger:       log,
		Network:      cfg.Network.agentNetwork(c, cfg.DataDir, log),
	})
	if cfg.Ready != nil {
		go func() {
			for ctx.Err() == nil {
				if _, err := c.Nodes().Get(ctx, "", name); err == nil {
					cfg.Ready(name)
					return
				}
				select {
				case <-ctx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
	}
	return ag.Run(ctx)
}

// agentClient is an API client that reaches whichever of cfg.Servers
// answers, and the servers' host:port in the order given.
func agentClient(cfg AgentConfig) (*client.Client, []string, error) {
	var hosts []string
	for _, s := range cfg.Servers {
		u, err := url.Parse(s)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, nil, fmt.Errorf("API server %q: %w: want https://HOST:PORT", s, errdefs.ErrInvalidArgument)
		}
		hosts = append(hosts, u.Host)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("CA file %s: %w: no PEM certificate", cfg.CAFile, errdefs.ErrInvalidArgument)
		}
	}
	opts, err := cfg.Credential.Apply(tc)
	if err != nil {
		return nil, nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.MaxIdleConnsPerHost = 32
	// A dead server must not hold a request for long: fail the dial fast
	// and move on to the next.
	tr.DialContext = (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 15 * time.Second}).DialContext
	hc := &http.Client{Transport: &failover{base: tr, hosts: hosts}}
	c, err := client.New(cfg.Servers[0], append(opts, client.WithHTTPClient(hc))...)
	if err != nil {
		return nil, nil, err
	}
	return c, hosts, nil
}

// failover sends each request to the server that answered last, and on to
// the others in turn when it cannot be reached or says it is unavailable
// (its etcd member has no quorum).
type failover struct {
	base  http.RoundTripper
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
		resp, err := f.base.RoundTrip(r)
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
		if req.Context().Err() != nil || isCertError(err) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
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
