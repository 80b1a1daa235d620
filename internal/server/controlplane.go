package server

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"strings"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/dashboard"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/memlimit"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/store"
)

// controlPlane is what `berth up` and `berth server` both serve: the API
// on the root-only unix socket (and over TCP with TLS and the cluster's
// token), the image registry at /v2/, the cluster's metrics, the
// dashboard, the image pruner and the controllers.
type controlPlane struct {
	Store  *store.Store
	Images *image.Store
	// API configures the API server; its Logger is set here.
	API         apiserver.Config
	MaxDraining int
	// Socket is the unix socket's path, Unix its listener; TCP, when not
	// nil, is served with Creds.
	Socket string
	Unix   net.Listener
	TCP    net.Listener
	Creds  *Credentials
	// Peers, when set, are the other servers' registries, which images
	// this one lacks are pulled through from.
	Peers *registry.Peers
	// Controllers runs the controllers and the scheduler; srv is the API
	// server, whose live migrations (over the nodes' tunnels to it) a
	// drain with --migrate uses.
	Controllers func(ctx context.Context, srv *apiserver.Server) error
	// Phases is the controllers' count of instances by phase, which
	// /metrics reads while they run here (controller.Options).
	Phases *metrics.Phases
	Log    *slog.Logger
}

// start runs the control plane's components in g and returns its API server.
func (cp controlPlane) start(g *group) (*apiserver.Server, error) {
	log := cp.Log
	cfg := cp.API
	cfg.Logger = log.With("component", "apiserver")
	if cp.Creds != nil {
		cfg.MetricsToken = cp.Creds.MetricsToken
	}
	srv := apiserver.New(cfg)
	srv.SetMaxDraining(cp.MaxDraining)
	// What no server has comes from the image's own registry.
	upstream, err := upstreamOptions()
	if err != nil {
		return nil, err
	}
	reg := registry.New(cp.Images, registry.Options{Authorize: apiserver.AuthorizeImages, Readable: srv.ReadableImages, Logger: log.With("component", "registry"),
		Peers: cp.Peers, Upstream: upstream, Private: privateRepos(cp.Store)})
	srv.Mount("/v2/", reg)
	g.run("registry settings", func(ctx context.Context) error {
		return followRegistrySettings(ctx, cp.Store, reg, upstream, log.With("component", "registry"))
	})
	srv.Mount("/metrics/", apiserver.Scrapers(metrics.Handler(metrics.Cluster(cp.Store, cp.Phases))))
	uc, err := client.New("unix://" + cp.Socket)
	if err != nil {
		return nil, err
	}
	var token string
	if cp.Creds != nil {
		token = cp.Creds.Token
	}
	ui := dashboard.New(dashboard.Options{Client: uc, Token: token, Logger: log.With("component", "dashboard")})
	srv.MountSignIn(dashboard.Prefix, ui)
	g.run("image pruner", func(ctx context.Context) error {
		return cp.Images.KeepPinned(ctx, cp.Store.PinnedImageDigests, log.With("component", "images"))
	})
	g.run("dashboard", ui.Run)
	g.run("api server", func(ctx context.Context) error { return srv.Serve(ctx, cp.Unix, apiserver.UnixRootOnly) })
	if cp.TCP != nil {
		g.run("api server (tcp)", func(ctx context.Context) error { return srv.ServeTLS(ctx, cp.TCP, cp.Creds.TLS, cp.Creds.Token) })
	}
	g.run("controllers", func(ctx context.Context) error { return cp.Controllers(ctx, srv) })
	return srv, nil
}

// processName is given, or else this machine's hostname made a DNS label;
// what names the process in the error.
func processName(given, what string) (string, error) {
	if given != "" {
		return given, nil
	}
	h, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	return nodeName(h), nil
}

// nodeName makes a DNS label of a hostname: "Build-01.example" → "build-01".
func nodeName(host string) string {
	host, _, _ = strings.Cut(strings.ToLower(host), ".")
	var b strings.Builder
	for _, r := range host {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			b.WriteRune(r)
		}
	}
	n := strings.Trim(b.String(), "-")
	if len(n) > 63 {
		n = n[:63]
	}
	if n == "" {
		n = "node"
	}
	return n
}

// setMemoryLimit puts the process's soft memory limit in effect, for as
// long as ctx lasts under auto, and says which it is.
func setMemoryLimit(ctx context.Context, l memlimit.Limit, log *slog.Logger) error {
	a, err := memlimit.Set(ctx, l, nil)
	if err != nil {
		return err
	}
	switch {
	case a.Bytes == math.MaxInt64:
		log.Info("no memory limit", "source", a.Source)
	case a.Ceiling > 0:
		log.Info("memory limit follows the live heap", "mib", a.Bytes>>20, "ceiling_mib", a.Ceiling>>20, "source", a.Source)
	default:
		log.Info("memory limit", "bytes", a.Bytes, "mib", a.Bytes>>20, "source", a.Source)
	}
	return nil
}

// logger is log, or the default logger when nil.
func logger(log *slog.Logger) *slog.Logger {
	if log == nil {
		return slog.Default()
	}
	return log
}
