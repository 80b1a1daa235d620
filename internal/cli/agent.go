package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/server"
)

// diskReserveUsage describes --disk-reserve of berth up and berth agent.
const diskReserveUsage = "free space kept on the filesystem of the containers' writable layers, a share (5%) or a size (2Gi); below it the container writing most is stopped (DiskPressure); 0 keeps none"

// agentOptions are berth agent's flags.
type agentOptions struct {
	name, address, bridge    string
	caPin                    string
	clusterCIDR, serviceCIDR string
	labels                   []string
	noNetwork, verbose       bool
	favorDynMods             bool
	diskReserve              string
	cgroupDriver             string
}

func newAgentCmd(g *globals) *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent --server URL --token JOIN-TOKEN [--ca-pin PIN | --ca-file FILE]",
		Short: "Run this machine as a node of a cluster, in the foreground",
		Long: `Run this machine as a node: register it with the cluster's API servers,
keep its heartbeat, and run the containers the scheduler places on it.

--server takes one or more of the servers' https:// URLs, comma
separated; the agent talks to one at a time and moves to the next when
it stops answering. It starts on the one a hash of its node's name
picks, not on the first, and moves on in the order given: a fleet whose
machines are all given the same list spreads over the servers, and a
node starts on the same server each time.

On its first start the agent joins: it trades --token, a join token (the
one in a server's <data-dir>/join-token, made on the cluster's first
start, or one from "berth token create"), for a client certificate
naming its node, and keeps it in <data-dir>/node (the key mode 0600). It
trusts the servers by the cluster CA's pin (--ca-pin, as a server prints
it) or the CA itself (--ca-file, a server's <data-dir>/tls/ca.crt); a
pin that does not match stops the agent at once, naming both pins. A
name another node holds, even a NotReady one, is refused until an admin
removes that node ("berth node rm").

From then on the agent authenticates with that certificate alone, which
lets it write only what the node observes: its status, the capacity and
topology it reports (capped at what it first registered), its own labels
(--label zone=a is stored as node.berth/zone=a) and its own instances'
status. The certificate lasts a week (the servers' --node-cert-ttl); the
agent renews it when two thirds are over. Later starts need no token.

The cluster's admin API token (a server's <data-dir>/tls/token) is still
accepted as --token, with --ca-file, by an agent that has not joined: it
gives the agent every right in the cluster, so prefer a join token.

Containers keep running while the agent is stopped; the next "berth
agent" with the same --data-dir adopts them.`,
		Example: `  berth agent --server https://10.0.0.1:7443,https://10.0.0.2:7443,https://10.0.0.3:7443 \
      --token berth_4fk2mzq7.<secret> --ca-pin sha256:<hex>

  # later starts use the saved certificate:
  berth agent --server https://10.0.0.1:7443,https://10.0.0.2:7443,https://10.0.0.3:7443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := o.config(g)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			cfg.Ready = func(node string) {
				fmt.Fprintf(out, "berth agent: node %s joined the cluster at %s\n", node, strings.Join(cfg.Servers, ","))
			}
			return server.Agent(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.caPin, "ca-pin", "", "the cluster CA's pin, sha256:<hex> as a server prints it, to trust the servers by when joining (or --ca-file)")
	f.StringVar(&o.name, "name", "", "this node's name (default: the hostname)")
	f.StringVar(&o.address, "address", "", "this node's address as other nodes reach it (default: the local address on the route to the server it starts on)")
	f.StringSliceVar(&o.labels, "label", nil, "a label KEY=VALUE the node reports about itself, stored as node.berth/KEY: constraints that trust it name node.berth/KEY (repeatable)")
	f.BoolVar(&o.noNetwork, "no-network", false, "give containers only loopback: no bridge, addresses, VIPs or DNS")
	f.StringVar(&o.clusterCIDR, "cluster-cidr", "", "the servers' --cluster-cidr (default 10.244.0.0/16)")
	f.StringVar(&o.serviceCIDR, "service-cidr", "", "the servers' --service-cidr (default 10.96.0.0/16)")
	f.StringVar(&o.bridge, "bridge", "", "the node's bridge device (default berth0)")
	f.StringVar(&o.diskReserve, "disk-reserve", "5%", diskReserveUsage)
	f.StringVar(&o.cgroupDriver, "cgroup-driver", "", cgroupDriverUsage)
	f.BoolVar(&o.favorDynMods, "cgroup-favordynmods", true, "remount cgroup2 with favordynmods: container starts no longer wait an RCU grace period per cgroup move (a small cost to fork and exit, host-wide)")
	f.BoolVarP(&o.verbose, "verbose", "v", false, "log what the agent does")
	return cmd
}

// config is the agent's configuration from o, the global flags and
// whether the node has joined already (its certificate is saved).
func (o *agentOptions) config(g *globals) (server.AgentConfig, error) {
	if err := runtime.ValidateCgroupDriver(o.cgroupDriver); err != nil {
		return server.AgentConfig{}, fmt.Errorf("--cgroup-driver: %w", err)
	}
	if g.server == "" {
		return server.AgentConfig{}, fmt.Errorf("--server is required: the API servers' https://HOST:PORT URLs, comma separated")
	}
	var servers []string
	for _, s := range strings.Split(g.server, ",") {
		if s = strings.TrimSpace(s); s != "" {
			servers = append(servers, s)
		}
	}
	cfg := server.AgentConfig{
		DataDir: g.dataDir, Servers: servers, CAFile: g.caFile, CAPin: o.caPin,
		NodeName: o.name, Address: o.address, Logger: cliLogger(o.verbose),
		Network:            server.Network{Disabled: o.noNetwork, Bridge: o.bridge},
		CgroupFavorDynMods: o.favorDynMods, CgroupDriver: o.cgroupDriver,
	}
	var err error
	if cfg.DiskReserve, err = agent.ParseDiskReserve(o.diskReserve); err != nil {
		return server.AgentConfig{}, fmt.Errorf("--disk-reserve: %w", err)
	}
	joined := false
	if _, err := os.Stat(filepath.Join(server.NodeCredentialsDir(g.dataDir), client.NodeCertFile)); err == nil {
		joined = true
	}
	switch {
	case strings.HasPrefix(strings.TrimSpace(g.token), api.JoinTokenPrefix):
		cfg.JoinToken = strings.TrimSpace(g.token)
	case g.token != "" && !joined:
		// The admin token, for agents set up before join tokens.
		cfg.Credential = server.BearerToken(g.token)
	case g.token == "" && !joined:
		return server.AgentConfig{}, fmt.Errorf("--token is required to join: a join token (berth token create), with --ca-pin or --ca-file")
	}
	for _, l := range o.labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return server.AgentConfig{}, fmt.Errorf("--label %q: want KEY=VALUE", l)
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		cfg.Labels[k] = v
	}
	if cfg.Network.ClusterCIDR, err = cidrFlag("--cluster-cidr", o.clusterCIDR); err != nil {
		return server.AgentConfig{}, err
	}
	if cfg.Network.ServiceCIDR, err = cidrFlag("--service-cidr", o.serviceCIDR); err != nil {
		return server.AgentConfig{}, err
	}
	return cfg, nil
}
