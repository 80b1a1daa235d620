package cli

import (
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/agent/simrt"
	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/sim"
)

func newSimCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sim",
		Short: "Simulate parts of a cluster to measure the control plane",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(newSimAgentsCmd(g))
	return cmd
}

// newSimAgentsCmd is `berth sim agents`.
// Long because most of it is the command's help text and flag declarations.
func newSimAgentsCmd(g *globals) *cobra.Command {
	var (
		count, joining int
		prefix, caPin  string
		startDelay     time.Duration
		failRate       float64
		cpus           int
		memory         string
		verbose        bool
		cpuProfile     string
		heapProfile    string
	)
	cmd := &cobra.Command{
		Use:   "agents --count N --server URL --token JOIN-TOKEN [--ca-pin PIN | --ca-file FILE]",
		Short: "Run N hollow nodes in this process, in the foreground",
		Long: `Run N hollow nodes: each is the real agent (it joins with the join token
and keeps its own node certificate under <data-dir>/NAME, holds its own
connection to the servers, watches its assigned instances, reconciles,
heartbeats and reports status) over a simulated runtime that starts
nothing on this machine. Starts take --start-delay; a share --fail-rate of
them fails. The nodes are named PREFIX-00000 on and report --cpus and
--memory. Without tunnels, exec and logs do not reach them. Given several
servers (comma separated), node i starts on the i-th in turn and moves
on to the next when it stops answering, so that the fleet spreads over
them.

It prints a line when all have registered, and runs until interrupted.`,
		Example: `  berth sim agents --count 1000 --server https://127.0.0.1:7443 \
      --token $(cat /var/lib/berth/join-token) --ca-file /var/lib/berth/tls/ca.crt --data-dir /tmp/hollow`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if g.server == "" {
				return fmt.Errorf("--server is required: the API servers' https://HOST:PORT URLs, comma separated")
			}
			tok := strings.TrimSpace(g.token)
			if !strings.HasPrefix(tok, api.JoinTokenPrefix) {
				return fmt.Errorf("--token: want a join token (%s...): every hollow node joins with it", api.JoinTokenPrefix)
			}
			if failRate < 0 || failRate > 1 {
				return fmt.Errorf("--fail-rate %v: want a share between 0 and 1", failRate)
			}
			if startDelay < 0 {
				return fmt.Errorf("--start-delay %v: must not be negative", startDelay)
			}
			if cpus <= 0 {
				return fmt.Errorf("--cpus %d: must be at least 1", cpus)
			}
			mem, err := parseBytes(memory)
			if err != nil || mem <= 0 {
				return fmt.Errorf("--memory %q: want a size such as 128Gi", memory)
			}
			var servers []string
			for _, s := range strings.Split(g.server, ",") {
				if s = strings.TrimSpace(s); s != "" {
					servers = append(servers, s)
				}
			}
			if cpuProfile != "" {
				// The agents' own cost (TLS, JSON, reconcile passes) is half of
				// what a fleet measures; the server has /debug/pprof for its half.
				pf, err := os.Create(cpuProfile)
				if err != nil {
					return fmt.Errorf("--cpuprofile: %w", err)
				}
				if err := pprof.StartCPUProfile(pf); err != nil {
					pf.Close()
					return fmt.Errorf("--cpuprofile %s: %w", cpuProfile, err)
				}
				defer func() {
					pprof.StopCPUProfile()
					pf.Close()
				}()
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			t0 := time.Now()
			f, err := sim.Start(ctx, sim.Config{
				Count: count, Prefix: prefix, Servers: servers, CAFile: g.caFile, CAPin: caPin, JoinToken: tok,
				DataDir: g.dataDir, Runtime: simrt.Config{StartDelay: startDelay, FailRate: failRate},
				Capacity: hostinfo.Capacity{MilliCPU: int64(cpus) * 1000, MemoryBytes: mem, Pids: 100000},
				Joining:  joining, Logger: cliLogger(verbose),
			})
			if err != nil {
				return err
			}
			if err := f.WaitReady(ctx); err != nil {
				if ctx.Err() != nil && len(f.Stopped()) == 0 {
					f.Wait()
					return nil
				}
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "berth sim: %d hollow nodes registered in %v\n", count, time.Since(t0).Round(time.Millisecond))
			<-ctx.Done()
			if heapProfile != "" {
				// Taken before the nodes stop: what a fleet holds while it runs.
				if err := writeHeapProfile(heapProfile); err != nil {
					return err
				}
			}
			f.Wait()
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&count, "count", 1, "how many hollow nodes to run")
	f.StringVar(&prefix, "prefix", "hollow", "the nodes' names are PREFIX-00000, PREFIX-00001, ...")
	f.StringVar(&caPin, "ca-pin", "", "the cluster CA's public key pin (sha256:<hex>) to trust the servers by")
	f.IntVar(&joining, "joining", 32, "how many nodes join at once")
	f.DurationVar(&startDelay, "start-delay", 50*time.Millisecond, "how long each simulated container start takes")
	f.Float64Var(&failRate, "fail-rate", 0, "share of simulated starts that fail, 0 to 1")
	f.IntVar(&cpus, "cpus", 32, "CPUs every hollow node reports")
	f.StringVar(&memory, "memory", "128Gi", "memory every hollow node reports")
	f.BoolVarP(&verbose, "verbose", "v", false, "log what the agents do")
	f.StringVar(&heapProfile, "heapprofile", "", "write this process's heap profile, as it is when the process is stopped (before its nodes stop), to this file")
	f.StringVar(&cpuProfile, "cpuprofile", "", "write this process's CPU profile, from its start until it is stopped, to this file (go tool pprof reads it)")
	return cmd
}

// writeHeapProfile writes the heap profile, after a collection so that
// it is up to date, to path.
func writeHeapProfile(path string) error {
	pf, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("--heapprofile: %w", err)
	}
	defer pf.Close()
	runtime.GC()
	if err := pprof.WriteHeapProfile(pf); err != nil {
		return fmt.Errorf("--heapprofile %s: %w", path, err)
	}
	return pf.Close()
}
