// Package server wires berth's pieces into the processes users run:
// `berth up` is the whole cluster on one machine (embedded etcd, the API
// server, the controllers and scheduler, and a node agent), and the agent
// reaches the control plane only through the API, as it would from
// another machine.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/dashboard"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/promdefer"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/seal"
	"github.com/berth-dev/berth/internal/store"
)

// Config configures `berth up`.
type Config struct {
	DataDir string
	// EtcdEndpoints use an external etcd instead of the embedded one.
	EtcdEndpoints []string
	// NodeName names this machine's node; the hostname when empty.
	NodeName string
	Logger   *slog.Logger
	// Listen, when set, also serves the API over TCP at this address,
	// with TLS and a bearer token (both made on first use in DataDir/tls).
	Listen string
	// Network configures container networking.
	Network Network
	// AllowedHostPaths, when set, are the only host directories a
	// hostPath volume may mount (see apiserver.Config).
	AllowedHostPaths []string
	// CgroupFavorDynMods remounts cgroup2 with favordynmods, for faster
	// container starts (see runtime.FavorDynMods).
	CgroupFavorDynMods bool
	// DiskReserve is the free space the node keeps for itself on the
	// filesystem of its containers' writable layers (agent.Config).
	DiskReserve agent.DiskReserve
	// CgroupDriver is runtime.CgroupDriverCgroupfs or CgroupDriverSystemd; "" detects it.
	CgroupDriver string
	// Ready is called once the API answers, with the socket's path and,
	// with Listen, the TCP credentials.
	Ready func(socket string, tcp *Credentials)
}

// favorDynMods sets favordynmods on the host's cgroup2 mount. Without it
// containers still start, only slower, so a failure is logged and passed over.
func favorDynMods(log *slog.Logger) {
	mount, changed, err := runtime.FavorDynMods()
	switch {
	case err != nil:
		log.Warn("cgroup2 favordynmods not set: each container start waits an RCU grace period", "err", err)
	case changed:
		log.Info("remounted cgroup2 with favordynmods", "mount", mount)
	}
}

// Up runs a single-node cluster until ctx ends. Containers keep running
// when it returns; the next Up adopts them.
func Up(ctx context.Context, cfg Config) error {
	promdefer.Release() // etcd serves /metrics
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	name := cfg.NodeName
	if name == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("node name: %w", err)
		}
		name = nodeName(h)
	}
	st, err := store.Open(ctx, store.Config{DataDir: cfg.DataDir, EtcdEndpoints: cfg.EtcdEndpoints, Logger: log.With("component", "store")})
	if err != nil {
		return err
	}
	defer st.Close()
	// Secrets are sealed at rest, as on a cluster's servers.
	sealKey, _, err := seal.LoadOrCreate(filepath.Join(cfg.DataDir, seal.KeyFile))
	if err != nil {
		return err
	}

	sock := api.SocketPath(cfg.DataDir)
	l, err := apiserver.ListenUnix(sock)
	if err != nil {
		return err
	}
	if cfg.CgroupFavorDynMods {
		favorDynMods(log)
	}
	rt, err := runtime.New(filepath.Join(cfg.DataDir, "containers"), runtime.WithCgroupDriver(cfg.CgroupDriver))
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
	c, err := client.New("unix://" + sock)
	if err != nil {
		return err
	}

	var creds *Credentials
	var tl net.Listener
	if cfg.Listen != "" {
		// Everything that can fail is set up before any goroutine starts.
		host, _, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return fmt.Errorf("--listen %q: %w", cfg.Listen, err)
		}
		if creds, err = LoadOrCreateCredentials(filepath.Join(cfg.DataDir, "tls"), []string{host, "127.0.0.1", "localhost", name}); err != nil {
			return err
		}
		if tl, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("--listen %q: %w", cfg.Listen, err)
		}
	}

	g := newGroup(ctx)
	defer g.cancel()
	ctx, run := g.ctx, g.run
	srv := apiserver.New(apiserver.Config{Store: st, Logger: log.With("component", "apiserver"), AllowedHostPaths: cfg.AllowedHostPaths, SealKey: sealKey})
	upstream, err := upstreamOptions()
	if err != nil {
		return err
	}
	srv.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages, Logger: log.With("component", "registry"), Upstream: upstream}))
	srv.Mount("/metrics/", apiserver.AdminOnly(metrics.Handler(metrics.Cluster(st))))
	var token string
	if creds != nil {
		token = creds.Token
	}
	ui := dashboard.New(dashboard.Options{Client: c, Token: token, Logger: log.With("component", "dashboard")})
	srv.MountSignIn(dashboard.Prefix, ui)
	run("dashboard", ui.Run)
	run("api server", func(ctx context.Context) error { return srv.Serve(ctx, l, apiserver.UnixRootOnly) })
	if tl != nil {
		run("api server (tcp)", func(ctx context.Context) error { return srv.ServeTLS(ctx, tl, creds.TLS, creds.Token) })
	}
	mgr := controller.NewManager(st, controller.Options{Logger: log, Network: cfg.Network.controller(), Admit: srv.Admit})
	run("controllers", mgr.Run)
	run("image pruner", func(ctx context.Context) error {
		return keepPinnedImages(ctx, st, imgs, log.With("component", "images"))
	})
	ag := agent.New(agent.Config{
		Node:         agent.NodeInfo{Name: name, Address: "127.0.0.1", Info: info},
		ControlPlane: agent.NewAPIPlane(c),
		Runtime:      rt,
		Images:       Images{imgs},
		Logger:       log,
		Network:      cfg.Network.agentNetwork(c, name, cfg.DataDir, log),
		DiskReserve:  cfg.DiskReserve,
		VolumesDir:   filepath.Join(cfg.DataDir, "volumes"),
		DataDir:      filepath.Join(cfg.DataDir, "data"),
		// One process, one setting: the node holds to what the API admits.
		AllowedHostPaths: cfg.AllowedHostPaths,
	})
	run("agent", ag.Run)
	// The agent serves remote operations through the API, as on any node.
	remote := ag.RemoteHandler(metrics.Handler(ag.InstanceCollector()))
	run("agent tunnel", func(ctx context.Context) error {
		agent.ServeTunnel(ctx, func(ctx context.Context) (io.ReadWriteCloser, error) { return c.OpenTunnel(ctx, name) }, remote, log)
		return nil
	})
	if cfg.Ready != nil {
		if waitHealthy(ctx, c) {
			cfg.Ready(sock, creds)
		}
	}
	return g.wait()
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

// Images serves an image store to the agent.
type Images struct{ Store *image.Store }

var _ agent.Images = Images{}

// Prepare unpacks ref for a container and says how to start it. A ref
// pinned to a digest (REPOSITORY:TAG@sha256:…) is the image of that digest,
// whatever the tag names now.
func (i Images) Prepare(ctx context.Context, ref, containerID string) (agent.Rootfs, error) {
	snap, err := i.Store.Prepare(ctx, localRef(ref), containerID)
	if err != nil {
		return agent.Rootfs{}, err
	}
	c := snap.Image.Config
	return agent.Rootfs{LowerDirs: snap.LowerDirs, Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env,
		WorkingDir: c.WorkingDir, User: c.User}, nil
}

// Release forgets that a container uses its image.
func (i Images) Release(ctx context.Context, containerID string) error {
	err := i.Store.Release(ctx, containerID)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
