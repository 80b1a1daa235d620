package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/server"
	"github.com/berth-dev/berth/internal/store"
)

func newAgentCmd(g *globals) *cobra.Command {
	var (
		name, address, bridge    string
		caPin                    string
		clusterCIDR, serviceCIDR string
		labels                   []string
		noNetwork, verbose       bool
		favorDynMods             bool
		cgroupDriver             string
	)
	cmd := &cobra.Command{
		Use:   "agent --server URL --token JOIN-TOKEN [--ca-pin PIN | --ca-file FILE]",
		Short: "Run this machine as a node of a cluster, in the foreground",
		Long: `Run this machine as a node: register it with the cluster's API servers,
keep its heartbeat, and run the containers the scheduler places on it.

--server takes one or more of the servers' https:// URLs, comma
separated; the agent talks to one at a time and moves to the next when
it stops answering.

On its first start the agent joins: it trades --token, a join token (the
one a server prints on the cluster's first start, or one from "berth
token create"), for a client certificate naming its node, and keeps it
in <data-dir>/node (the key mode 0600). It trusts the servers by the
cluster CA's pin (--ca-pin, as a server prints it) or the CA itself
(--ca-file, a server's <data-dir>/tls/ca.crt). From then on it
authenticates with that certificate alone, which lets it write only its
own node and its own instances' status; later starts need no token.

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
			if err := runtime.ValidateCgroupDriver(cgroupDriver); err != nil {
				return fmt.Errorf("--cgroup-driver: %w", err)
			}
			if g.server == "" {
				return fmt.Errorf("--server is required: the API servers' https://HOST:PORT URLs, comma separated")
			}
			var servers []string
			for _, s := range strings.Split(g.server, ",") {
				if s = strings.TrimSpace(s); s != "" {
					servers = append(servers, s)
				}
			}
			cfg := server.AgentConfig{
				DataDir: g.dataDir, Servers: servers, CAFile: g.caFile, CAPin: caPin,
				NodeName: name, Address: address, Logger: cliLogger(verbose),
				Network:            server.Network{Disabled: noNetwork, Bridge: bridge},
				CgroupFavorDynMods: favorDynMods, CgroupDriver: cgroupDriver,
			}
			joined := false
			if _, err := os.Stat(filepath.Join(server.NodeCredentialsDir(g.dataDir), client.NodeCertFile)); err == nil {
				joined = true
			}
			switch {
			case strings.HasPrefix(strings.TrimSpace(g.token), store.JoinTokenPrefix):
				cfg.JoinToken = strings.TrimSpace(g.token)
			case g.token != "" && !joined:
				// The admin token, for agents set up before join tokens.
				cfg.Credential = server.BearerToken(g.token)
			case g.token == "" && !joined:
				return fmt.Errorf("--token is required to join: a join token (berth token create), with --ca-pin or --ca-file")
			}
			for _, l := range labels {
				k, v, ok := strings.Cut(l, "=")
				if !ok || k == "" {
					return fmt.Errorf("--label %q: want KEY=VALUE", l)
				}
				if cfg.Labels == nil {
					cfg.Labels = map[string]string{}
				}
				cfg.Labels[k] = v
			}
			var err error
			if cfg.Network.ClusterCIDR, err = cidrFlag("--cluster-cidr", clusterCIDR); err != nil {
				return err
			}
			if cfg.Network.ServiceCIDR, err = cidrFlag("--service-cidr", serviceCIDR); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			cfg.Ready = func(node string) {
				fmt.Fprintf(out, "berth agent: node %s joined the cluster at %s\n", node, strings.Join(servers, ","))
			}
			return server.Agent(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&caPin, "ca-pin", "", "the cluster CA's pin, sha256:<hex> as a server prints it, to trust the servers by when joining (or --ca-file)")
	f.StringVar(&name, "name", "", "this node's name (default: the hostname)")
	f.StringVar(&address, "address", "", "this node's address as other nodes reach it (default: the local address on the route to the first server)")
	f.StringSliceVar(&labels, "label", nil, "a node label KEY=VALUE, for placement constraints (repeatable)")
	f.BoolVar(&noNetwork, "no-network", false, "give containers only loopback: no bridge, addresses, VIPs or DNS")
	f.StringVar(&clusterCIDR, "cluster-cidr", "", "the servers' --cluster-cidr (default 10.244.0.0/16)")
	f.StringVar(&serviceCIDR, "service-cidr", "", "the servers' --service-cidr (default 10.96.0.0/16)")
	f.StringVar(&bridge, "bridge", "", "the node's bridge device (default berth0)")
	f.StringVar(&cgroupDriver, "cgroup-driver", "", cgroupDriverUsage)
	f.BoolVar(&favorDynMods, "cgroup-favordynmods", true, "remount cgroup2 with favordynmods: container starts no longer wait an RCU grace period per cgroup move (a small cost to fork and exit, host-wide)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log what the agent does")
	return cmd
}
