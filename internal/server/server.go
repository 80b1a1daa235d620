// Package server wires berth's pieces into the processes users run:
// `berth up` is the whole cluster on one machine (embedded etcd, the API
// server, the controllers and scheduler, and a node agent), and the agent
// reaches the control plane only through the API, as it would from
// another machine.
package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/controller"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/initgc"
	"github.com/berth-dev/berth/internal/memlimit"
	"github.com/berth-dev/berth/internal/metrics"
	"github.com/berth-dev/berth/internal/promdefer"
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
	// with TLS and a bearer token (both made on first use in DataDir/tls,
	// as on a cluster's servers: a CA, a server certificate it issues and
	// the token).
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
	// MemoryLimit is the process's soft memory limit (see memlimit); the
	// zero Limit leaves the runtime's as it is.
	MemoryLimit memlimit.Limit
	// Ready is called once the API answers, with the socket's path and,
	// with Listen, the TCP credentials (the cluster CA to trust and the
	// token).
	Ready func(socket string, tcp *Credentials)
}

// Up runs a single-node cluster until ctx ends: the control plane and a
// node. Containers keep running when it returns; the next Up adopts them.
//
// Long because it is wiring: the control plane and the node built and
// started in order, nothing more.
func Up(ctx context.Context, cfg Config) error {
	promdefer.Release() // etcd serves /metrics
	initgc.Restore()    // a long-lived heap, collected at Go's pace
	log := logger(cfg.Logger)
	if err := setMemoryLimit(ctx, cfg.MemoryLimit, log); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	name, err := processName(cfg.NodeName, "node name")
	if err != nil {
		return err
	}
	st, err := store.Open(ctx, store.Config{DataDir: cfg.DataDir, EtcdEndpoints: cfg.EtcdEndpoints, Logger: log.With("component", "store")})
	if err != nil {
		return err
	}
	defer st.Close()
	// Secrets are sealed at rest, as on a cluster's servers; the CA is made
	// only when the API is served over TCP.
	secrets, err := loadSecrets(cfg.DataDir, "", true, false)
	if err != nil {
		return err
	}

	sock := api.SocketPath(cfg.DataDir)
	l, err := apiserver.ListenUnix(sock)
	if err != nil {
		return err
	}
	imgs, err := image.Open(filepath.Join(cfg.DataDir, "images"))
	if err != nil {
		return err
	}
	c, err := client.New("unix://" + sock)
	if err != nil {
		return err
	}
	n := &node{Name: name, Address: "127.0.0.1", DataDir: cfg.DataDir, Client: c, Network: cfg.Network, DiskReserve: cfg.DiskReserve,
		// One process, one setting: the node holds to what the API admits.
		AllowedHostPaths: cfg.AllowedHostPaths,
		Images:           agent.StoreImages{Store: imgs}, CgroupFavorDynMods: cfg.CgroupFavorDynMods, CgroupDriver: cfg.CgroupDriver, Log: log}
	if err := n.open(); err != nil {
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
		if creds, err = clusterCredentials(ctx, st, secrets, apiHosts(host, name)); err != nil {
			return err
		}
		if tl, err = net.Listen("tcp", cfg.Listen); err != nil {
			return fmt.Errorf("--listen %q: %w", cfg.Listen, err)
		}
	}

	g := newGroup(ctx)
	defer g.cancel()
	phases := new(metrics.Phases)
	srv, err := controlPlane{Store: st, Images: imgs, Socket: sock, Unix: l, TCP: tl, Creds: creds, Log: log, Phases: phases,
		API: apiserver.Config{Store: st, AllowedHostPaths: cfg.AllowedHostPaths, SealKey: secrets.key},
		Controllers: func(ctx context.Context, srv *apiserver.Server) error {
			return controller.NewManager(st, controller.Options{Logger: log, Network: cfg.Network.controller(), Migrate: srv.Migrate, Admit: srv.Admit,
				Phases: phases}).Run(ctx)
		},
	}.start(g)
	if err != nil {
		return err
	}
	// The node is this process's own: its heartbeats need no request.
	n.Beat = srv.Heartbeat
	ag := n.agent()
	g.run("agent", ag.Run)
	// The agent serves remote operations through the API, as on any node.
	n.serveTunnels(ag, []*client.Client{c}, g.run)
	if cfg.Ready != nil {
		if waitHealthy(g.ctx, c) && waitJoined(g.ctx, c, name, 30*time.Second) {
			cfg.Ready(sock, creds)
		}
	}
	return g.wait()
}
