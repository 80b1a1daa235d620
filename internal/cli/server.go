package cli

import (
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/memlimit"
	"github.com/berth-dev/berth/internal/pki"
	"github.com/berth-dev/berth/internal/server"
)

// newServerCmd is `berth server`. Long because its flags, their checks
// and the server's configuration from them read best in one place.
func newServerCmd(g *globals) *cobra.Command {
	var (
		name, listen, peerListen, etcdListen, peers string
		sealKeyFile, memoryLimit                    string
		clusterCIDR, serviceCIDR                    string
		etcd, allowedHostPaths                      []string
		joinExisting, verbose                       bool
		leaderTTL, nodeCertTTL, nodeTTL             time.Duration
		maxDraining                                 int
	)
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane only, one of several servers, in the foreground",
		Long:  serverLong,
		Example: `  # once, on 10.0.0.1; then copy seal.key, tls/ca.crt, tls/ca.key to .2 and .3:
  berth server init
  # on each of three machines (10.0.0.1, .2, .3), with its own --name and addresses:
  berth server --name s1 --listen 10.0.0.1:7443 --peer-listen 10.0.0.1:7380 \
      --peers s1=10.0.0.1:7380,s2=10.0.0.2:7380,s3=10.0.0.3:7380

  # servers sharing an existing etcd cluster:
  berth server --name s1 --listen 10.0.0.1:7443 --etcd-endpoints http://10.0.0.9:2379`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg := server.ServerConfig{
				DataDir: g.dataDir, Name: name, Listen: listen, PeerListen: peerListen,
				EtcdClientListen: etcdListen, JoinExisting: joinExisting, EtcdEndpoints: etcd, SealKeyFile: sealKeyFile,
				LeaderTTL: leaderTTL, Logger: cliLogger(verbose), MaxDraining: maxDraining, NodeCertTTL: nodeCertTTL,
				NodeTTL: nodeTTL,
			}
			var err error
			if cfg.MemoryLimit, err = memoryLimitFlag(memoryLimit); err != nil {
				return err
			}
			if nodeTTL < minNodeTTL || nodeTTL > maxNodeTTL {
				return fmt.Errorf("--node-ttl %v: want at least %v and at most %v", nodeTTL, minNodeTTL, maxNodeTTL)
			}
			if nodeCertTTL <= 0 || nodeCertTTL > pki.DefaultNodeValidity {
				return fmt.Errorf("--node-cert-ttl %v: want more than 0 and at most %v", nodeCertTTL, pki.DefaultNodeValidity)
			}
			if len(etcd) > 0 && (peers != "" || peerListen != "" || etcdListen != "" || joinExisting) {
				return fmt.Errorf("--etcd-endpoints uses an external etcd: --peers, --peer-listen, --etcd-client-listen and --join-existing are for embedded members")
			}
			if err := peersFlag(&cfg, peers); err != nil {
				return err
			}
			if len(etcd) == 0 && cfg.PeerListen == "" {
				return fmt.Errorf("--peer-listen HOST:PORT is required for the embedded etcd member (or give --etcd-endpoints)")
			}
			if cfg.AllowedHostPaths, err = hostPathsFlag(allowedHostPaths); err != nil {
				return err
			}
			if cfg.Network.ClusterCIDR, err = cidrFlag("--cluster-cidr", clusterCIDR); err != nil {
				return err
			}
			if cfg.Network.ServiceCIDR, err = cidrFlag("--service-cidr", serviceCIDR); err != nil {
				return err
			}
			cfg.Ready = serverReady(cmd.OutOrStdout(), etcd)
			return server.Server(cmd.Context(), cfg)
		},
	}
	f := cmd.Flags()
	f.StringVar(&name, "name", "", "this server's name, unique in the cluster (default: the hostname)")
	f.StringVar(&listen, "listen", ":7443", "serve the API over TCP at HOST:PORT, with TLS and the cluster's token")
	f.StringVar(&peerListen, "peer-listen", "", "where this server's etcd member meets the others, HOST:PORT (default: its URL in --peers)")
	f.StringVar(&peers, "peers", "", "every server of a new cluster as NAME=HOST:PORT,... (this one too; the same on all; TLS, so https:// if a scheme is given)")
	f.BoolVar(&joinExisting, "join-existing", false, "join a running cluster that already lists this server (etcdctl member add)")
	f.StringVar(&etcdListen, "etcd-client-listen", "", "also serve etcd's client API at HOST:PORT, unauthenticated (for etcdctl), so on a loopback address only")
	f.StringSliceVar(&etcd, "etcd-endpoints", nil, "use this etcd cluster instead of embedded members")
	f.StringVar(&clusterCIDR, "cluster-cidr", "", "network the nodes' pod subnets come from (default 10.244.0.0/16; the same on every server)")
	f.StringVar(&serviceCIDR, "service-cidr", "", "network the services' virtual IPs come from (default 10.96.0.0/16; the same on every server)")
	f.DurationVar(&leaderTTL, "leader-ttl", 0, "how long the controllers wait for a dead leader before another server takes over (default 3s)")
	f.BoolVarP(&verbose, "verbose", "v", false, "log what the components do, and who leads")
	f.DurationVar(&nodeTTL, "node-ttl", api.NodeTTL, "how long a node stays Ready after its last heartbeat; agents beat at a third of it (a longer one beats less often: fewer requests for many nodes, slower to find a lost one; the same on every server)")
	f.DurationVar(&nodeCertTTL, "node-cert-ttl", apiserver.DefaultNodeCertTTL, "how long the node certificates this server signs last; agents renew them when two thirds are over")
	f.StringVar(&sealKeyFile, "seal-key-file", "", "the key that seals the cluster's secrets at rest, the same on every server (default <data-dir>/seal.key)")
	f.StringSliceVar(&allowedHostPaths, "allowed-host-paths", nil, "host directories hostPath volumes may mount, DIR,...; others are refused at apply (default: any; the same on every server)")
	f.StringVar(&memoryLimit, "memory-limit", memlimit.Default, memoryLimitUsage)
	f.IntVar(&maxDraining, "max-draining", 1, "how many nodes may drain at once, cluster-wide (a reboot lock; the same on every server)")
	cmd.AddCommand(newServerInitCmd(g))
	return cmd
}

// minNodeTTL and maxNodeTTL bound --node-ttl: etcd keeps a lease at
// least about two seconds (1.5 election timeouts of a lone member), and a
// node unheard of for longer than ten minutes is not worth waiting for.
const (
	minNodeTTL = 2 * time.Second
	maxNodeTTL = 10 * time.Minute
)

const serverLong = `Run the control plane alone: the API server, the controllers and the
scheduler, with an embedded etcd member, and no node agent (nodes join
with "berth agent").

Three servers make a cluster that survives the loss of any one: each
runs an etcd member, and --peers names all three with their peer URLs
(the same list on every server). Or every server points at an existing
etcd cluster with --etcd-endpoints. The API answers on every server; the
controllers and the scheduler run on one at a time, chosen by election,
and move to another within seconds when it dies.

A server alone makes its cluster's CA and seal key on its first start.
Servers of a cluster of several share them from the start, since their
etcd members meet over TLS with the CA's certificates: run "berth server
init" on one, then copy its <data-dir>/seal.key, tls/ca.crt and tls/ca.key
to every other server's data dir before starting them. The seal key
encrypts the CA key and the admin API token wherever they rest (etcd,
tls/ca.key); agents never get it. Servers sharing --etcd-endpoints need
no CA before they start, but share the seal key all the same: copy the
first one's seal.key to the others. The first server to start makes the
admin token; every server writes the CA certificate and the token to
<data-dir>/tls (ca.crt, token) for clients.

It also makes a join token, kept in <data-dir>/join-token (mode 0600)
and never printed: it works for 24 hours, for any number of joins, and
an agent trades it for a node certificate on its first start (see
"berth agent"); "berth token create" makes more. A name held by a node,
even a NotReady one, cannot be joined again until an admin removes the
node ("berth node rm"). Node certificates last --node-cert-ttl (a week)
and agents renew them before they end; "berth node revoke" and "berth
node rm" make a node's certificate stop working on every server at
once. A server restarted with its data dir rejoins its cluster.

Peer traffic is TLS both ways: each member presents a peer certificate of
the cluster CA and accepts only peers that do.`

// peersFlag sets the embedded members of a new cluster from --peers; this
// server must be among them.
func peersFlag(cfg *server.ServerConfig, peers string) error {
	if peers == "" {
		return nil
	}
	m, err := api.ParseInitialCluster(peers)
	if err != nil {
		return fmt.Errorf("--peers: %w", err)
	}
	cfg.Peers = m
	if cfg.Name == "" {
		return fmt.Errorf("--name is required with --peers: it says which of the peers this server is")
	}
	if _, ok := m[cfg.Name]; !ok {
		return fmt.Errorf("--peers does not name %q: list every server, this one too", cfg.Name)
	}
	if cfg.PeerListen == "" {
		cfg.PeerListen = m[cfg.Name]
	}
	return nil
}

// serverReady tells the operator how clients and nodes reach the server.
func serverReady(out io.Writer, etcd []string) func(server.ServerInfo) {
	return func(info server.ServerInfo) {
		where := "etcd member " + info.Name
		if len(etcd) > 0 {
			where = "etcd at " + strings.Join(etcd, ",")
		}
		fmt.Fprintf(out, `berth server %s is up: API on %s and unix://%s, %s.
The controllers run on whichever server leads (-v logs who).
Clients trust %s and send the admin token in %s
(copy both to where you run berth):
  berth --server %s --token $(cat %s) --ca-file %s get nodes
`, info.Name, info.API, info.Socket, where, info.CAFile, info.TokenFile,
			info.API, info.TokenFile, info.CAFile)
		switch {
		case info.JoinToken != "":
			fmt.Fprintf(out, `Nodes join with the join token in %s (mode 0600; it %s):
  berth agent --server %s --token $(cat %s) --ca-pin %s
`, info.JoinTokenFile, expiry(info.JoinTokenExpires), info.API, info.JoinTokenFile, info.CAPin)
		default:
			fmt.Fprintf(out, `Nodes join with a join token from "berth token create":
  berth agent --server %s --token <join token> --ca-pin %s
`, info.API, info.CAPin)
		}
		fmt.Fprintf(out, "(or --ca-file %s instead of --ca-pin).\n", info.CAFile)
		fmt.Fprintf(out, "Dashboard on %s/ui/: sign in with the admin token, or a link from \"berth dashboard\".\n", info.API)
	}
}

func newServerInitCmd(g *globals) *cobra.Command {
	var sealKeyFile string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Make a cluster's CA and seal key, to copy to every server before they start",
		Long: `Make the secrets a cluster of several servers shares before any starts:
the seal key (<data-dir>/seal.key or --seal-key-file, mode 0600) and the
cluster CA (<data-dir>/tls/ca.crt, and tls/ca.key sealed with the key).
What exists is kept, and a CA key kept in the clear is sealed, so it also
readies an existing cluster's data dir for this version. Copy the three
files to the same places on every other server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info, err := server.InitCluster(g.dataDir, sealKeyFile)
			if err != nil {
				return err
			}
			state := func(made bool) string {
				if made {
					return "made"
				}
				return "kept"
			}
			fmt.Fprintf(cmd.OutOrStdout(), `seal key %s (%s), cluster CA %s (%s).
Copy these files to the same paths on every other server before it starts:
  %s
  %s
  %s
`, info.SealKeyFile, state(info.MadeSealKey), info.CACertFile, state(info.MadeCA), info.SealKeyFile, info.CACertFile, info.CAKeyFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&sealKeyFile, "seal-key-file", "", "where to keep the seal key (default <data-dir>/seal.key)")
	return cmd
}

// cliLogger logs warnings, or more with -v or BERTH_DEBUG, to stderr.
func cliLogger(verbose bool) *slog.Logger {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelInfo
	}
	if os.Getenv("BERTH_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

const memoryLimitUsage = "soft limit on this process's memory: as the process nears it, the Go collector runs more often and " +
	"the runtime returns freed memory to the system. auto sets it after each collection to the heap's goal at Go's default " +
	"pace (twice the heap found live) plus the runtime's stacks and metadata, so that what a burst freed goes back to the " +
	"system rather than staying resident, at most half the memory the process may use; or a percentage of that memory " +
	"(the host's, or its cgroup's limit if lower), a size such as 3Gi, or none. GOMEMLIMIT in the environment wins"

// memoryLimitFlag parses --memory-limit.
func memoryLimitFlag(s string) (memlimit.Limit, error) {
	l, err := memlimit.Parse(s)
	if err != nil {
		return memlimit.Limit{}, fmt.Errorf("--memory-limit: %w", err)
	}
	return l, nil
}

// cidrFlag parses an IPv4 network flag; empty is the zero prefix (the default).
func cidrFlag(flag, value string) (netip.Prefix, error) {
	if value == "" {
		return netip.Prefix{}, nil
	}
	p, err := netip.ParsePrefix(value)
	if err != nil || !p.Addr().Is4() || p != p.Masked() {
		return netip.Prefix{}, fmt.Errorf("%s %q: want an IPv4 network such as 10.244.0.0/16", flag, value)
	}
	return p, nil
}

// expiry says how long a join token works.
func expiry(t time.Time) string {
	if t.IsZero() {
		return "never expires"
	}
	return "works until " + t.UTC().Format(time.RFC3339)
}

// hostPathsFlag checks --allowed-host-paths: absolute directories, cleaned.
func hostPathsFlag(dirs []string) ([]string, error) {
	var out []string
	for _, d := range dirs {
		if !filepath.IsAbs(d) {
			return nil, fmt.Errorf("--allowed-host-paths %q: want absolute directories such as /srv,/data", d)
		}
		out = append(out, filepath.Clean(d))
	}
	return out, nil
}
