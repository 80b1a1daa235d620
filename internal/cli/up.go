package cli

import (
	"cmp"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/internal/agent"
	"github.com/berth-dev/berth/internal/memlimit"
	"github.com/berth-dev/berth/internal/netsync"
	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/server"
)

func newUpCmd(g *globals) *cobra.Command {
	var etcd []string
	var node, listen string
	var verbose, noNetwork, favorDynMods bool
	var diskReserve, memoryLimit string
	var clusterCIDR, serviceCIDR, bridge, cgroupDriver string
	var allowedHostPaths []string
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Run a whole cluster on this machine, in the foreground",
		Long: `Run a whole berth cluster on this machine: an embedded etcd, the API
server, the controllers and scheduler, and a node agent, in one process.

It stays in the foreground; Ctrl-C or "berth down" stops it cleanly.
Containers keep running while it is stopped, and the next "berth up"
adopts them; "berth down --purge" removes them too.

Containers get an address on the node's bridge (berth0) from the pod
subnet the control plane hands the node out of --cluster-cidr; each
service gets a virtual IP from --service-cidr and the DNS name
<service>.<namespace>.berth, answered by the node's DNS server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := runtime.ValidateCgroupDriver(cgroupDriver); err != nil {
				return fmt.Errorf("--cgroup-driver: %w", err)
			}
			log := cliLogger(verbose)
			netw := server.Network{Disabled: noNetwork, Bridge: bridge}
			var err error
			if netw.ClusterCIDR, err = cidrFlag("--cluster-cidr", clusterCIDR); err != nil {
				return err
			}
			if netw.ServiceCIDR, err = cidrFlag("--service-cidr", serviceCIDR); err != nil {
				return err
			}
			reserve, err := agent.ParseDiskReserve(diskReserve)
			if err != nil {
				return fmt.Errorf("--disk-reserve: %w", err)
			}
			hostPaths, err := hostPathsFlag(allowedHostPaths)
			if err != nil {
				return err
			}
			memLimit, err := memoryLimitFlag(memoryLimit)
			if err != nil {
				return err
			}
			a := upAnnouncement{out: cmd.OutOrStdout(), log: log, dataDir: g.dataDir, listen: listen, etcd: etcd}
			if !noNetwork {
				a.bridge = cmp.Or(bridge, netsync.DefaultBridge)
			}
			return server.Up(cmd.Context(), server.Config{
				AllowedHostPaths: hostPaths,
				DataDir:          g.dataDir, EtcdEndpoints: etcd, NodeName: node, Logger: log, Listen: listen, Network: netw,
				CgroupFavorDynMods: favorDynMods, DiskReserve: reserve, CgroupDriver: cgroupDriver, MemoryLimit: memLimit,
				Ready: a.ready,
			})
		},
	}
	cmd.Flags().StringSliceVar(&etcd, "etcd-endpoints", nil, "use this etcd cluster instead of the embedded one")
	cmd.Flags().StringVar(&node, "node-name", "", "name of this machine's node (default: the hostname)")
	cmd.Flags().StringVar(&listen, "listen", "", "also serve the API over TCP at HOST:PORT, with TLS and a token")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log what the components do")
	cmd.Flags().BoolVar(&noNetwork, "no-network", false, "give containers only loopback: no bridge, addresses, VIPs or DNS")
	cmd.Flags().StringVar(&clusterCIDR, "cluster-cidr", "", "network the nodes' pod subnets come from (default 10.244.0.0/16)")
	cmd.Flags().StringVar(&serviceCIDR, "service-cidr", "", "network the services' virtual IPs come from (default 10.96.0.0/16)")
	cmd.Flags().StringVar(&bridge, "bridge", "", "the node's bridge device (default berth0)")
	cmd.Flags().StringVar(&diskReserve, "disk-reserve", "5%", diskReserveUsage)
	cmd.Flags().StringVar(&memoryLimit, "memory-limit", memlimit.Default, memoryLimitUsage)
	cmd.Flags().StringSliceVar(&allowedHostPaths, "allowed-host-paths", nil, "host directories hostPath volumes may mount, DIR,...; others are refused at apply (default: any)")
	cmd.Flags().StringVar(&cgroupDriver, "cgroup-driver", "", cgroupDriverUsage)
	cmd.Flags().BoolVar(&favorDynMods, "cgroup-favordynmods", true, "remount cgroup2 with favordynmods: container starts no longer wait an RCU grace period per cgroup move (a small cost to fork and exit, host-wide)")
	return cmd
}

// upAnnouncement is what berth up says once it is up.
type upAnnouncement struct {
	out     io.Writer
	log     *slog.Logger
	dataDir string
	listen  string
	bridge  string // the node's bridge; none without a network
	etcd    []string
}

// ready records the bridge for berth down --purge and tells the user
// where the API and the dashboard are and what to try.
func (a upAnnouncement) ready(sock string, tcp *server.Credentials) {
	if err := writeUpRecord(a.dataDir, upRecord{Bridge: a.bridge, NetNS: netNS()}); err != nil {
		a.log.Warn("berth down --purge will not know the bridge", "err", err)
	}
	store := "embedded etcd in " + a.dataDir
	if len(a.etcd) > 0 {
		store = "etcd at " + strings.Join(a.etcd, ",")
	}
	if tcp != nil {
		fmt.Fprintf(a.out, "API also on https://%s: token in %s, CA certificate in %s\n"+
			"  berth --server https://%s --token $(cat %s) --ca-file %s get nodes\n",
			a.listen, tcp.TokenFile, tcp.CAFile, a.listen, tcp.TokenFile, tcp.CAFile)
		fmt.Fprintf(a.out, "Dashboard on https://%s/ui/: sign in with the token in %s\n", a.listen, tcp.TokenFile)
	} else {
		fmt.Fprintf(a.out, "Dashboard: run \"berth dashboard\" for a sign-in link\n")
	}
	fmt.Fprintf(a.out, `berth is up: API on unix://%s, %s.

From another terminal:
  berth run --name web --replicas 3 --port 80 demo/busybox:1 httpd -f -p 80 -h /www
  berth ps
  berth exec web wget -qO- http://web.default.berth/
  berth scale web=5
  berth apply -f examples/web.yaml
Ctrl-C or "berth down" stops berth; containers keep running until it is back.
`, sock, store)
}

const cgroupDriverUsage = "who makes containers' cgroups: cgroupfs (berth writes /sys/fs/cgroup itself) or systemd " +
	"(a transient scope per container in berth.slice, limits as unit properties); the default is systemd " +
	"when PID 1 is systemd on a pure cgroup v2 host, else cgroupfs"
