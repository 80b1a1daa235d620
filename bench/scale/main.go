// Command scale measures the control plane with hollow nodes: one `berth
// server` (embedded etcd) and `berth sim agents` fleets (each node joined
// with its own certificate and connection, a simulated runtime). It times
// services totalling -instances to all Running on -nodes, the loss of 1%
// of the nodes until their instances run elsewhere, a rollout of a new
// template to a tenth of the services, and a scale 0 -> N -> 0; and
// records, throughout, a probe client's mutating API latency (p50/p99),
// the lag of a watch behind the probe's writes, the server's RSS and CPU,
// and etcd's db size. It prints figures and asserts nothing.
//
// -full is the size: 15,000 nodes and 300,000 instances.
// -servers 3 runs three servers as one cluster, the nodes spread over
// them, and adds each server's figures and who leads to every phase.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

func main() {
	bin := flag.String("berth", "bin/berth", "the berth binary to measure")
	nodes := flag.Int("nodes", 200, "hollow nodes")
	instances := flag.Int("instances", 4000, "instances in all")
	services := flag.Int("services", 20, "services the instances are spread over")
	full := flag.Bool("full", false, "the full size: 15,000 nodes, 300,000 instances in 1,000 services")
	timeout := flag.Duration("timeout", 10*time.Minute, "give up a phase after this long")
	flag.BoolVar(&keepWork, "keep", false, "keep the servers' and fleets' logs and data dirs")
	flag.StringVar(&cpuProfile, "cpuprofile", "", "write the server's CPU profile over the first 30 s from the apply to this file (go tool pprof reads it)")
	flag.StringVar(&idleProfile, "idleprofile", "", "write the server's CPU profile over the steady state after the apply (-idlewindow) to this file")
	flag.DurationVar(&idleWindow, "idlewindow", time.Minute, "how long the server's idle CPU is measured after the apply, whole seconds; a minute holds each of its periodic tasks (the controllers' cache check, their idle passes) at least once")
	flag.BoolVar(&idleOnly, "idleonly", false, "stop after the idle measurement: skip node loss, rollout and scaling")
	flag.StringVar(&lossProfile, "lossprofile", "", "write the server's CPU profile over 12 s from a second before the lost nodes' leases lapse to this file: its reaction")
	flag.StringVar(&scaleProfile, "scaleprofile", "", "write the server's CPU profile over the first 30 s of the scale 0 -> N to this file")
	flag.StringVar(&heapProfile, "heapprofile", "", "write the server's heap profile, taken once all are Running after the apply, to this file")
	flag.StringVar(&scaleHeapProfile, "scaleheapprofile", "", "write the server's heap profile, taken once all are Running after the scale 0 -> N (the peak of the run), to this file")
	flag.StringVar(&joinProfile, "joinprofile", "", "write the server's heap profile to this file, and its goroutines (debug=1 text) to this file with .goroutines appended, once all nodes are Ready and before the apply: what each connected node costs")
	flag.StringVar(&simProfile, "simprofile", "", "write the live fleet's (berth sim agents) CPU profile, over its whole run, to this file")
	flag.BoolVar(&writesOnly, "writes", false, "count etcd's writes by kind of key and change (puts, deletes, bytes, per instance) over the join, the apply and a scale to 0, then stop")
	flag.BoolVar(&applyOnly, "applyonly", false, "stop after the apply: its figures, and the fleet's profiles over the join and the apply alone (a short A/B run)")
	flag.StringVar(&simHeapProfile, "simheapprofile", "", "write the live fleet's (berth sim agents) heap profile, as it is at the end of the run, to this file")
	flag.DurationVar(&leaderTTL, "leader-ttl", 0, "the server's --leader-ttl (when 0, 10 s, or 30 s for 2,000 nodes or more)")
	flag.DurationVar(&nodeTTL, "node-ttl", 0, "the server's --node-ttl: agents beat at a third of it (when 0, its default, or longer for a fleet whose beats would pass 500/s)")
	flag.StringVar(&memoryLimit, "memory-limit", "", "the server's --memory-limit (its default when empty)")
	servers := flag.Int("servers", 1, "servers forming one cluster, each with its embedded etcd member; the probe, the appliers and the profiles talk to the first, the nodes start on each in turn")
	flag.IntVar(&joining, "joining", 0, "how many nodes each fleet joins at once (berth sim agents --joining; its default when 0)")
	flag.Parse()
	if *full {
		*nodes, *instances, *services = 15000, 300000, 1000
	}
	if nodeTTL == 0 {
		nodeTTL = fleetNodeTTL(*nodes)
	}
	if leaderTTL == 0 {
		// At 5,000 nodes on a loaded machine the server renewed its
		// controllers' lease late 14 times in 20 minutes at 10 s, and
		// each new term started from a full list of 100,000 instances,
		// which stalled a rollout for minutes.
		leaderTTL = 10 * time.Second
		if *nodes >= 2000 {
			leaderTTL = 30 * time.Second
		}
	}
	// Interrupted, the bench stops what it started before it goes, as it
	// does when a phase fails: a server and fleets left behind would hold
	// their cores, ports and data dirs, and weigh on the next run.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		s := <-sigs
		fmt.Fprintf(os.Stderr, "bench: %v: stopping the servers and fleets\n", s)
		cleanup()
		os.Exit(1)
	}()
	err := bench(*bin, *nodes, *instances, *services, *servers, *timeout)
	cleanup()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

// started is every process the bench started, and its work directory:
// cleanup stops the one and removes the other on every way out.
var started struct {
	mu    sync.Mutex
	procs []*proc
	work  string
}

// cleanup stops every process the bench started, all at once, and removes
// its work directory unless -keep. It may run twice (a signal during the
// cleanup at the end): stopping a stopped process is a no-op.
func cleanup() {
	started.mu.Lock()
	procs, work := started.procs, started.work
	started.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range procs {
		wg.Go(func() { p.stop(syscall.SIGTERM) })
	}
	wg.Wait()
	if work == "" {
		return
	}
	if keepWork {
		fmt.Println("logs and data kept in", work)
		return
	}
	os.RemoveAll(work)
}

type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func start(log string, bin string, args ...string) (*proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own session, so that a terminal's Ctrl-C reaches the bench
	// alone, which stops it in order; killed outright, the bench takes it
	// along (Pdeathsig).
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	started.mu.Lock()
	started.procs = append(started.procs, p)
	started.mu.Unlock()
	return p, nil
}

func (p *proc) stop(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// waitFile waits for the file at path, which process p (logging to log)
// writes, for d at most; a process that ends first says why in its log's
// last lines (a flag it refused).
func waitFile(path string, d time.Duration, p *proc, log string) error {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited (%v) before it wrote %s; the end of %s:\n%s", p.cmd.Path, p.cmd.ProcessState, path, log, logTail(log, 10))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not there after %v", path, d)
		}
	}
}

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	lines := strings.Split(strings.TrimRight(readFile(path), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// leaderTTL is the server's controller leader TTL.
var leaderTTL time.Duration

// nodeTTL is the server's node TTL; its default when zero.
var nodeTTL time.Duration

// memoryLimit is the server's --memory-limit; its default when empty.
var memoryLimit string

// maxBeatsPerSecond is the heartbeat rate the bench holds a fleet to, by
// its node TTL (fleetNodeTTL), as Nomad paces its clients' heartbeats by
// the cluster's size (50/s by default). At berth's default 10 s TTL a
// node beats every 3.3 s: 15,000 nodes would send 4,500 beats a second,
// each a TLS request, more than two cores serve, and nodes lapsed by the
// thousand for want of CPU, not of life.
const maxBeatsPerSecond = 500

// fleetNodeTTL is the node TTL for a fleet of n: the server's default
// unless its beats (three per TTL) would pass maxBeatsPerSecond.
func fleetNodeTTL(n int) time.Duration {
	ttl := time.Duration(3*n/maxBeatsPerSecond) * time.Second
	if ttl <= api.NodeTTL {
		return 0
	}
	return ttl.Round(10 * time.Second)
}

// joining is how many nodes a fleet joins at once; its default when zero.
var joining int

// fleetSampler samples the live fleet's process.
var fleetSampler *sampler

// keepWork keeps the work directory, logs included.
var keepWork bool

// cpuProfile is where the server's CPU profile of the apply goes, if set.
var cpuProfile string

// idleProfile is where the server's CPU profile at steady state goes, if set.
var idleProfile string

// idleWindow is how long the idle CPU is measured.
var idleWindow time.Duration

// idleOnly ends the run after the idle measurement.
var idleOnly bool

// lossProfile is where the server's CPU profile of its reaction to the
// node loss goes, if set.
var lossProfile string

// scaleProfile is where the server's CPU profile of the scale 0 -> N goes, if set.
var scaleProfile string

// heapProfile is where the server's heap profile after the apply goes, if set.
var heapProfile string

// scaleHeapProfile is where the server's heap profile after the scale
// 0 -> N goes, if set.
var scaleHeapProfile string

// simProfile is where the live fleet's CPU profile goes, if set.
var simProfile string

// applyOnly stops the run after the apply's phase.
var applyOnly bool

// writesOnly counts etcd's writes over the join, the apply and a scale
// to 0, then stops the run.
var writesOnly bool

// joinProfile is where the server's heap and goroutine profiles after the
// join go, if set.
var joinProfile string

// simHeapProfile is where the live fleet's heap profile goes, if set.
var simHeapProfile string

// profile fetches 30 s of the server's CPU profile into cpuProfile.
func profile(url, caFile, token, file string, secs int) error {
	b, err := adminGet(url, caFile, token, fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs))
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// adminGet reads path from the server with the admin token.
func adminGet(url, caFile, token, path string) ([]byte, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, url+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return io.ReadAll(resp.Body)
}

// passCounts reads the server's controller passes by cause
// (berth_controller_passes_total); nil when it cannot.
func passCounts(url, caFile, token string) map[string]float64 {
	b, err := adminGet(url, caFile, token, "/metrics")
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(b)) {
		rest, ok := strings.CutPrefix(line, `berth_controller_passes_total{cause="`)
		if !ok {
			continue
		}
		cause, val, _ := strings.Cut(rest, `"} `)
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			out[cause] = v
		}
	}
	return out
}

// passDiff says how many passes each cause started between two counts.
func passDiff(before, after map[string]float64) string {
	var parts []string
	for _, cause := range slices.Sorted(maps.Keys(after)) {
		if n := after[cause] - before[cause]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.0f", cause, n))
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// bench measures a cluster of nodes and instances at scale.
// Long because it is the benchmark's script: start the servers and the hollow
// agents, then one timed phase after another, each printed as it ends.
func bench(bin string, nodes, instances, services, servers int, timeout time.Duration) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "berth-bench-scale-")
	if err != nil {
		return err
	}
	started.mu.Lock()
	started.work = work
	started.mu.Unlock()
	// A cluster network with a /24 for each of up to 65,536 nodes, as a
	// cluster this size is set up (the default /16 holds 256). A lone
	// server that shares two cores with a thousand agents answers its own
	// lease renewals late: at the default 3 s leader TTL its controllers
	// lost their term again and again, each new term listing everything
	// afresh; -leader-ttl sets it.
	srvArgs := []string{"--cluster-cidr", "10.0.0.0/8", "--leader-ttl", leaderTTL.String()}
	if nodeTTL > 0 {
		srvArgs = append(srvArgs, "--node-ttl", nodeTTL.String())
	}
	if memoryLimit != "" {
		srvArgs = append(srvArgs, "--memory-limit", memoryLimit)
	}
	if err := startServers(bin, work, servers, srvArgs); err != nil {
		return err
	}
	// The probe, the appliers, the trackers and the profiles talk to the
	// first server; the agents to all.
	url, ca := members[0].url, caFile
	join, err := joinToken(time.Minute)
	if err != nil {
		return err
	}
	c, err := client.New(url, client.WithToken(adminToken), client.WithCAFile(ca))
	if err != nil {
		return err
	}
	ctx := context.Background()
	for deadline := time.Now().Add(30 * time.Second); c.Healthz(ctx) != nil; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("server not healthy in 30s")
		}
	}
	for _, m := range members[1:] {
		mc, err := client.New(m.url, client.WithToken(adminToken), client.WithCAFile(ca))
		if err != nil {
			return err
		}
		for deadline := time.Now().Add(30 * time.Second); mc.Healthz(ctx) != nil; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				return fmt.Errorf("server %s not healthy in 30s", m.name)
			}
		}
	}
	what := "1 server (embedded etcd)"
	if servers > 1 {
		what = fmt.Sprintf("%d servers (embedded etcd each, one cluster; the probe and appliers on s1, each node starting on one in turn)", servers)
	}
	fmt.Printf("hollow nodes: %d, instances: %d in %d services, %s, node TTL %v, leader TTL %v\n", nodes, instances, services, what, cmp.Or(nodeTTL, api.NodeTTL), leaderTTL)

	var fleetExtra []string
	// 1% of the nodes (at least one) run in their own process, to kill.
	doomedN := max(1, nodes/100)
	// Nodes sized for twice the instances (of 0.05 CPU each), so that
	// bin-packing spreads them and the nodes lost hold their share.
	cpus := max(1, (instances+nodes*10-1)/(nodes*10))
	if joining > 0 {
		// Joins wait on the server's writes: more at once keep it busy.
		fleetExtra = append(fleetExtra, "--joining", strconv.Itoa(joining))
	}
	fleet := func(prefix string, n int, extra ...string) (*proc, error) {
		return start(filepath.Join(work, prefix+".log"), bin, append([]string{"--data-dir", filepath.Join(work, prefix), "--server", serverURLs(),
			"--token", join, "--ca-file", ca,
			"sim", "agents", "--count", strconv.Itoa(n), "--prefix", prefix, "--start-delay", "20ms", "--cpus", strconv.Itoa(cpus), "--memory", "128Gi"},
			append(extra, fleetExtra...)...)...)
	}
	sampler := members[0].sampler
	for _, m := range members {
		go m.sampler.run()
	}
	var tally *writeTally
	if writesOnly {
		if tally, err = newWriteTally(members[0].sampler.etcdDir); err != nil {
			return err
		}
		defer tally.close()
	}
	probe, err := newProbe(c, url, ca, adminToken)
	if err != nil {
		return err
	}
	probe.metrics = func() ([]byte, error) {
		return adminGet(url, ca, adminToken, "/metrics")
	}
	go probe.run()

	t0 := time.Now()
	var liveExtra []string
	if simProfile != "" {
		liveExtra = append(liveExtra, "--cpuprofile", simProfile)
	}
	if simHeapProfile != "" {
		liveExtra = append(liveExtra, "--heapprofile", simHeapProfile)
	}
	live, err := fleet("live", nodes-doomedN, liveExtra...)
	if err != nil {
		return err
	}
	fleetSampler = newSampler(live.cmd.Process.Pid, "")
	go fleetSampler.run()
	doomed, err := fleet("doomed", doomedN)
	if err != nil {
		return err
	}
	// Nodes are counted from one watch too: a list of 15,000 nodes twice
	// a second was more of the server's work than their heartbeats.
	nt := newNodeTracker(c)
	go nt.run(ctx)
	if err := waitFor(timeout, func() (bool, string) {
		ready, _ := nt.count(func(c api.NodeCondition) bool { return c == api.NodeReady })
		return ready == nodes, fmt.Sprintf("%d of %d nodes Ready", ready, nodes)
	}); err != nil {
		return err
	}
	phase("join", t0, nodes, "nodes", sampler, probe)
	if tally != nil {
		tally.report("the join", 0)
	}
	if joinProfile != "" {
		token := adminToken
		for path, file := range map[string]string{"/debug/pprof/heap": joinProfile, "/debug/pprof/goroutine?debug=1": joinProfile + ".goroutines"} {
			b, err := adminGet(url, ca, token, path)
			if err != nil {
				return fmt.Errorf("join profile %s: %w", path, err)
			}
			if err := os.WriteFile(file, b, 0o644); err != nil {
				return err
			}
		}
		fmt.Println("  server heap and goroutine profiles after the join:", joinProfile)
		b, err := adminGet(url, ca, token, "/debug/pprof/heap?gc=1&debug=1")
		if err != nil {
			return fmt.Errorf("join heap after a GC: %w", err)
		}
		fmt.Println("  " + perNode(string(b), nodes))
	}

	per := instances / services
	// The services go in appliers at a time, as several operators or a
	// deploy tool would send them: one after another, 1,000 applies at a
	// loaded server's p50 took minutes before the controllers saw the last.
	apply := func(replicas int, env string, only int) error {
		n := services
		if only > 0 {
			n = min(only, services)
		}
		next := make(chan int)
		errs := make(chan error, appliers)
		var wg sync.WaitGroup
		for range appliers {
			wg.Go(func() {
				for i := range next {
					s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: fmt.Sprintf("svc-%04d", i)},
						// A quarter of the replicas new at once, Kubernetes' default
						// surge: one at a time, berth's default, rolls 1,000 replicas
						// in as many steps.
						Spec: api.ServiceSpec{Replicas: replicas, Update: api.UpdateStrategy{MaxSurge: max(1, replicas/4)},
							Template: api.Template{Image: "sim/none:1", Env: map[string]string{"V": env},
								Resources: api.Resources{CPU: 0.05, Memory: 64 << 20}}}}
					if err := applyRetrying(ctx, c, s); err != nil {
						errs <- fmt.Errorf("apply %s: %w", s.Metadata.Name, err)
						return
					}
				}
			})
		}
	send:
		for i := range n {
			select {
			case next <- i:
			case err := <-errs:
				errs <- err
				break send
			}
		}
		close(next)
		wg.Wait()
		select {
		case err := <-errs:
			return err
		default:
			return nil
		}
	}
	// Instances are counted from one watch, not listed on every poll: a
	// list of 300,000 instances twice a second would be most of what the
	// server does.
	tr := newTracker(c)
	go tr.run(ctx)
	running := func(want int, avoid string) func() (bool, string) {
		return func() (bool, string) {
			n, total := tr.count(func(in inst) bool {
				return in.phase == api.PhaseRunning && (avoid == "" || !strings.HasPrefix(in.node, avoid))
			})
			return n == want && total == want, fmt.Sprintf("%d instances, %d Running", total, n)
		}
	}
	t0 = time.Now()
	profiled := make(chan error, 1)
	if cpuProfile != "" {
		go func() { profiled <- profile(url, ca, adminToken, cpuProfile, 30) }()
	}
	if err := apply(per, "1", 0); err != nil {
		return err
	}
	if err := waitFor(timeout, running(per*services, "")); err != nil {
		return err
	}
	phase("apply to all Running", t0, per*services, "instances", sampler, probe)
	if tally != nil {
		return writesScaleDown(tally, per*services, apply, running, timeout)
	}
	if cpuProfile != "" {
		if err := <-profiled; err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		fmt.Println("  server CPU profile:", cpuProfile)
	}

	if heapProfile != "" {
		if err := heapTo(url, ca, adminToken, heapProfile, nodes); err != nil {
			return err
		}
	}
	if applyOnly {
		if simProfile != "" || simHeapProfile != "" {
			live.stop(syscall.SIGTERM) // it writes its profiles as it ends
			fmt.Println("fleet profiles:", simProfile, simHeapProfile)
		}
		return nil
	}

	// The mean over a window that holds the server's periodic work, not
	// a glimpse that may miss it or catch nothing else.
	secs := max(1, int(idleWindow.Round(time.Second)/time.Second))
	idleProfiled := make(chan error, 1)
	if idleProfile != "" {
		go func() {
			idleProfiled <- profile(url, ca, adminToken, idleProfile, secs)
		}()
	}
	before := passCountsAll()
	t0 = time.Now()
	idle := sampler.cpuOver(time.Duration(secs) * time.Second)
	fmt.Printf("  idle server CPU at steady state: %.2f cores (mean over %d s from all Running; busiest 5 s %.2f)\n",
		idle, secs, sampler.busiest(t0, 5*time.Second))
	if len(members) > 1 {
		var each []string
		for _, m := range members {
			each = append(each, fmt.Sprintf("%s %.2f (busiest 5 s %.2f)", m.name, m.sampler.cpuSince(t0), m.sampler.busiest(t0, 5*time.Second)))
		}
		fmt.Printf("  idle CPU by server, cores: %s\n", strings.Join(each, ", "))
	}
	if after := passCountsAll(); after != nil {
		fmt.Printf("  controller passes at steady state, by cause: %s\n", passDiff(before, after))
	}
	if idleProfile != "" {
		if err := <-idleProfiled; err != nil {
			return fmt.Errorf("idle cpu profile: %w", err)
		}
		fmt.Println("  server CPU profile at steady state:", idleProfile)
	}
	if idleOnly {
		return nil
	}

	t0 = time.Now()
	doomed.stop(syscall.SIGKILL)
	lastBeat := lastBeatOf(ctx, c, nt.names("doomed"))
	lossProfiled := make(chan error, 1)
	if lossProfile != "" && !lastBeat.IsZero() {
		go func() {
			time.Sleep(time.Until(lastBeat.Add(cmp.Or(nodeTTL, api.NodeTTL) - time.Second)))
			lossProfiled <- profile(url, ca, adminToken, lossProfile, 12)
		}()
	} else {
		lossProfiled <- nil
	}
	var marks lossMarks
	if err := waitFor(timeout, func() (bool, string) {
		now := time.Now()
		if n, total := nt.countNamed("doomed", func(c api.NodeCondition) bool { return c != api.NodeReady }); marks.notReady.IsZero() && n == total {
			marks.notReady = now
		}
		// Given up: Lost, or deleted already (the controller deletes a
		// service's Lost instances as it replaces them, often before the
		// bench sees them Lost).
		if n, _ := tr.count(func(in inst) bool { return strings.HasPrefix(in.node, "doomed") && in.phase != api.PhaseLost }); marks.lost.IsZero() && n <= per*services/nodes*doomedN/2 {
			marks.lost = now // most of them: the nodes' share is about even
		}
		if n, _ := tr.count(func(in inst) bool { return in.node != "" && !strings.HasPrefix(in.node, "doomed") }); marks.placed.IsZero() && n >= per*services {
			marks.placed = now
		}
		if n, _ := tr.count(func(in inst) bool { return in.phase == api.PhaseRunning && !strings.HasPrefix(in.node, "doomed") }); marks.started.IsZero() && n >= per*services {
			marks.started = now
		}
		return running(per*services, "doomed")()
	}); err != nil {
		return err
	}
	marks.running = time.Now()
	phase(fmt.Sprintf("%d nodes lost to all Running elsewhere", doomedN), t0, per*services, "instances", sampler, probe)
	fmt.Printf("%-40s %s\n", "", marks.String(t0, lastBeat, cmp.Or(nodeTTL, api.NodeTTL)))
	if err := <-lossProfiled; err != nil {
		return fmt.Errorf("cpu profile of the node loss: %w", err)
	}

	t0 = time.Now()
	roll := max(1, services/10)
	if err := apply(per, "2", roll); err != nil {
		return err
	}
	if err := waitFor(timeout, func() (bool, string) {
		ok, msg := running(per*services, "doomed")()
		old, _ := tr.count(func(in inst) bool {
			svc, _ := strconv.Atoi(strings.TrimPrefix(in.owner, "svc-"))
			return svc < roll && in.v != "2"
		})
		return ok && old == 0, fmt.Sprintf("%s, %d of the old template", msg, old)
	}); err != nil {
		return err
	}
	phase(fmt.Sprintf("rollout of %d services", roll), t0, roll*per, "instances", sampler, probe)

	for _, step := range []struct {
		name string
		n    int
	}{{"scale to 0", 0}, {"scale 0 -> N", per}, {"scale N -> 0", 0}} {
		t0 = time.Now()
		scaleProfiled := make(chan error, 1)
		profiling := scaleProfile != "" && step.n > 0
		if profiling {
			go func() {
				scaleProfiled <- profile(url, ca, adminToken, scaleProfile, 30)
			}()
		}
		if err := apply(step.n, "2", 0); err != nil {
			return err
		}
		if err := waitFor(timeout, running(step.n*services, "doomed")); err != nil {
			return err
		}
		phase(step.name, t0, per*services, "instances", sampler, probe)
		if scaleHeapProfile != "" && step.n > 0 {
			if err := heapTo(url, ca, adminToken, scaleHeapProfile, nodes); err != nil {
				return err
			}
		}
		if profiling {
			if err := <-scaleProfiled; err != nil {
				return fmt.Errorf("cpu profile of the scale: %w", err)
			}
			fmt.Println("  server CPU profile of the scale:", scaleProfile)
		}
	}
	fmt.Printf("server peak RSS %d MiB (%s), etcd db %d MiB\n", sampler.peakRSS()>>20, sampler.peakParts(), sampler.dbSize()>>20)
	if peaks := clusterPeaks(); peaks != "" {
		fmt.Println(peaks)
	}
	if simProfile != "" || simHeapProfile != "" {
		live.stop(syscall.SIGTERM) // it writes its profiles as it ends
		fmt.Println("fleet profiles:", simProfile, simHeapProfile)
	}
	return nil
}

// heapTo writes the server's heap profile as of its last collection to
// file, then prints its live heap after a collection of its own.
func heapTo(url, ca, token, file string, nodes int) error {
	b, err := adminGet(url, ca, token, "/debug/pprof/heap")
	if err != nil {
		return fmt.Errorf("heap profile: %w", err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		return err
	}
	fmt.Println("  server heap profile:", file)
	b, err = adminGet(url, ca, token, "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		return fmt.Errorf("heap after a GC: %w", err)
	}
	fmt.Println("  " + perNode(string(b), nodes))
	return nil
}

// appliers is how many services the bench applies at once.
const appliers = 8

// applyRetries counts the applies the server answered Unavailable (etcd
// timing out under load) and that were sent again, as an operator would:
// an apply is idempotent. Each phase prints them.
var applyRetries atomic.Int64

// applyRetrying applies s, again after a pause while the server answers
// Unavailable, up to a minute: a run of many minutes must not end at one
// timed-out write, but the retries are counted and shown.
func applyRetrying(ctx context.Context, c *client.Client, s *api.Service) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := c.Services().Apply(ctx, s)
		if err == nil || !errdefs.IsUnavailable(err) || time.Now().After(deadline) {
			return err
		}
		applyRetries.Add(1)
		time.Sleep(time.Second)
	}
}

// lastBeatOf is the latest heartbeat the server took from the named
// nodes (zero when none could be read).
func lastBeatOf(ctx context.Context, c *client.Client, names []string) time.Time {
	var last time.Time
	for _, name := range names {
		n, err := c.Nodes().Get(ctx, "", name)
		if err == nil && n.Status.LastHeartbeat.After(last) {
			last = n.Status.LastHeartbeat
		}
	}
	return last
}

// lossMarks are when the bench saw each step of the node-loss phase:
// the nodes all NotReady, most of their instances given up (Lost or
// deleted), replacements for
// all of them placed elsewhere and Running, and the Lost ones gone.
type lossMarks struct{ notReady, lost, placed, started, running time.Time }

// String splits the phase, from the kill at t0: the nodes' leases lapse
// a TTL after their last beat, which came up to a beat interval before
// the kill (the luck of the kill's moment), and what follows the lapse
// is the server's reaction, which the goal of TTL + 5 s from the kill
// bounds at 5 s when the kill follows a beat.
func (m lossMarks) String(t0, lastBeat time.Time, ttl time.Duration) string {
	since := func(t time.Time) string {
		if t.IsZero() {
			return "?"
		}
		return fmt.Sprintf("%+.1f s", t.Sub(t0).Seconds())
	}
	steps := fmt.Sprintf("all NotReady %s, most instances given up %s, all replaced %s, all replacements Running %s, all Running and no Lost %s",
		since(m.notReady), since(m.lost), since(m.placed), since(m.started), since(m.running))
	if lastBeat.IsZero() {
		return "from the kill (last beats unknown): " + steps
	}
	lapse := lastBeat.Add(ttl)
	return fmt.Sprintf("from the kill: last beat %s, leases lapsed %s, %s: %.1f s from the lapse",
		since(lastBeat), since(lapse), steps, m.running.Sub(lapse).Seconds())
}

// waitFor polls cond, printing its progress now and then, until it holds.
func waitFor(timeout time.Duration, cond func() (bool, string)) error {
	deadline := time.Now().Add(timeout)
	last := time.Now()
	for {
		ok, msg := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v: %s", timeout, msg)
		}
		if time.Since(last) > 10*time.Second {
			fmt.Printf("  ... %s\n", msg)
			last = time.Now()
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func phase(name string, t0 time.Time, n int, what string, s *sampler, p *probe) {
	d := time.Since(t0)
	p50, p99, lag, count, slow := p.take()
	fmt.Printf("%-40s %8.1fs  %8.0f %s/s  | probe writes %d: p50 %v p99 %v, watch lag p99 %v | server RSS %d MiB, CPU %.2f cores (%.1f s) | etcd db %d MiB\n",
		name, d.Seconds(), float64(n)/d.Seconds(), what, count, p50, p99, lag, s.rss()>>20, s.cpuSince(t0), s.cpuSecondsSince(t0), s.dbSize()>>20)
	fmt.Printf("%-40s etcd writes %.0f/s, %s, %s | live fleet RSS %d MiB, CPU %.2f cores (%.1f s) | applies retried %d, probe writes failed %d\n", "", p.writeRate(), p.watches(), p.events(),
		fleetSampler.rss()>>20, fleetSampler.cpuSince(t0), fleetSampler.cpuSecondsSince(t0), applyRetries.Swap(0), p.failed.Swap(0))
	pk := s.peakSince(t0)
	fmt.Printf("%-40s server RSS %s, the phase's peak %d MiB (anon %d, file %d) | %s\n", "", s.rssParts(), pk.rss>>20, pk.anon>>20, pk.file>>20, p.goMemory())
	if slow != "" {
		fmt.Printf("%-40s %s\n", "", slow)
	}
	fmt.Printf("%-40s %s\n", "", p.stalls())
	if line := clusterLine(t0); line != "" {
		fmt.Printf("%-40s %s\n", "", line)
	}
	fmt.Printf("%-40s %s\n", "", p.puts())
}

// puts is etcd's count of puts and of the bytes they stored (keys and
// values, each kept until a compaction) over the phase and since the
// server started: the database's growth without bbolt's page rounding.
func (p *probe) puts() string {
	if p.metrics == nil {
		return "etcd puts unknown"
	}
	b, err := p.metrics()
	if err != nil {
		return "etcd puts unknown: " + err.Error()
	}
	var n, size float64
	for line := range strings.Lines(string(b)) {
		name, val, ok := strings.Cut(strings.TrimSpace(line), " ")
		if !ok {
			continue
		}
		v, _ := strconv.ParseFloat(val, 64)
		switch name {
		case "etcd_mvcc_put_total":
			n = v
		case "etcd_debugging_mvcc_total_put_size_in_bytes":
			size = v
		}
	}
	p.mu.Lock()
	dn, dsize := n-p.putsSeen, size-p.putBytesSeen
	p.putsSeen, p.putBytesSeen = n, size
	p.mu.Unlock()
	return fmt.Sprintf("etcd puts %.0f (%.1f MiB) in the phase, %.0f (%.1f MiB) since the server started", dn, dsize/(1<<20), n, size/(1<<20))
}

// stallHists are the server's histograms of what can hold up every
// write at once: etcd's backend commits (its database's batch, written
// and fsynced while the apply waits), its WAL fsyncs, its applies, and
// Go's stop-the-world pauses; each with the bound, in seconds, above
// which one counts as a stall (a bucket's bound; none for a summary), in
// the histogram's unit: seconds, or milliseconds where its name says.
var stallHists = []struct {
	name, label string
	over        float64
}{
	{"etcd_disk_backend_commit_duration_seconds", "etcd backend commits", 0.256},
	{"etcd_disk_wal_fsync_duration_seconds", "WAL fsyncs", 0.256},
	{"etcd_server_apply_duration_seconds", "etcd applies", 0.1024},
	{"go_gc_duration_seconds", "GC pauses", 0}, // a summary: no bound
	// A defragmentation stops etcd's reads and writes while it copies
	// the database; a compaction's batches of deletes hold its applies.
	{"etcd_disk_backend_defrag_duration_seconds", "defragmentations", 0.8},
	{"etcd_debugging_mvcc_db_compaction_pause_duration_milliseconds", "compaction pauses", 64},
}

// hist is a histogram read from the server's metrics, summed over its
// labels: count, sum and cumulative counts by upper bound.
type hist struct {
	count, sum float64
	le         map[float64]float64
}

// upTo is the count of the bucket whose bound is about bound, which a
// page prints as it pleases (0.1024 may be 0.10240000000000001).
func (h hist) upTo(bound float64) float64 {
	for le, n := range h.le {
		if math.Abs(le-bound) < 1e-9 {
			return n
		}
	}
	return 0
}

// stalls says, for each of stallHists, how many the server recorded
// since the last call, their mean, and how many took longer than its
// bound.
func (p *probe) stalls() string {
	if p.metrics == nil {
		return "stalls unknown"
	}
	b, err := p.metrics()
	if err != nil {
		return "stalls unknown: " + err.Error()
	}
	now := readHists(string(b))
	var out []string
	for _, h := range stallHists {
		cur, prev := now[h.name], p.hists[h.name]
		n := cur.count - prev.count
		if n <= 0 {
			out = append(out, h.label+" 0")
			continue
		}
		mean, unit := (cur.sum-prev.sum)/n*1000, 1000.0
		if strings.HasSuffix(h.name, "_milliseconds") {
			mean, unit = mean/1000, 1
		}
		if h.over == 0 {
			out = append(out, fmt.Sprintf("%s %.0f (mean %.1f ms)", h.label, n, mean))
			continue
		}
		out = append(out, fmt.Sprintf("%s %.0f (mean %.1f ms, over %v ms %.0f)", h.label, n, mean, h.over*unit, n-(cur.upTo(h.over)-prev.upTo(h.over))))
	}
	p.hists = now
	return strings.Join(out, ", ")
}

// readHists reads stallHists' histograms from a Prometheus text page.
func readHists(page string) map[string]hist {
	out := map[string]hist{}
	for line := range strings.Lines(page) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, labels := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
			if line[i] == '{' {
				labels = line[i : strings.LastIndexByte(line, '}')+1]
			}
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			continue
		}
		for _, h := range stallHists {
			base, ok := strings.CutPrefix(name, h.name)
			if !ok {
				continue
			}
			x := out[h.name]
			if x.le == nil {
				x.le = map[float64]float64{}
			}
			switch base {
			case "_count":
				x.count += v
			case "_sum":
				x.sum += v
			case "_bucket":
				_, le, _ := strings.Cut(labels, `le="`)
				le, _, _ = strings.Cut(le, `"`)
				if bound, err := strconv.ParseFloat(le, 64); err == nil {
					x.le[bound] += v
				}
			}
			out[h.name] = x
		}
	}
	return out
}

// writeRate is the store's revisions per second since the last call: one
// revision per write transaction.
func (p *probe) writeRate() float64 {
	_, rev, err := p.c.Services().List(context.Background(), "default")
	if err != nil {
		return 0
	}
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	r := 0.0
	if !p.revAt.IsZero() {
		r = float64(rev-p.rev) / now.Sub(p.revAt).Seconds()
	}
	p.rev, p.revAt = rev, now
	return r
}

// watches is the server's count of open watch streams, from its metrics.
func (p *probe) watches() string {
	if p.metrics == nil {
		return "watches unknown"
	}
	b, err := p.metrics()
	if err != nil {
		return "watches unknown: " + err.Error()
	}
	n, goroutines := 0.0, 0.0
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "berth_api_watches{"):
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			n += v
		case strings.HasPrefix(line, "go_goroutines "):
			goroutines, _ = strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return fmt.Sprintf("%.0f watches open, %.0f server goroutines", n, goroutines)
}

// goMemory is where the server's Go runtime memory is, from its metrics:
// all it allocated since it started (the phases' differences are what
// each cost), the heap in use (live and not yet collected), goroutine stacks, the
// runtime's own, and the soft limit. With RSS's parts it tells the heap's
// share from etcd's database pages (file-backed) and from the stacks.
func (p *probe) goMemory() string {
	if p.metrics == nil {
		return "Go memory unknown"
	}
	b, err := p.metrics()
	if err != nil {
		return "Go memory unknown: " + err.Error()
	}
	v := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if ok && strings.HasPrefix(name, "go_") {
			v[name], _ = strconv.ParseFloat(strings.TrimSpace(val), 64)
		}
	}
	mib := func(name string) float64 { return v[name] / (1 << 20) }
	return fmt.Sprintf("Go allocated since start %.0f MiB, heap in use %.0f MiB, stacks %.0f MiB, runtime %.0f MiB, limit %.0f MiB",
		mib("go_memstats_alloc_bytes_total"), mib("go_memstats_heap_inuse_bytes"), mib("go_memstats_stack_inuse_bytes"),
		mib("go_memstats_sys_bytes")-mib("go_memstats_heap_sys_bytes")-mib("go_memstats_stack_sys_bytes"), mib("go_gc_gomemlimit_bytes"))
}

// events is how many events the store holds.
func (p *probe) events() string {
	evs, _, err := p.c.Events().List(context.Background(), "")
	if err != nil {
		return "events unknown: " + err.Error()
	}
	return fmt.Sprintf("%d events stored", len(evs))
}

// probe applies one small service every 200 ms and times it, and watches
// services to time when each write comes back. Its writes go through a
// client of their own that keeps each answer's Server-Timing (see
// apiserver's serverTiming): where the slowest spent their time.
type probe struct {
	c       *client.Client
	w       *client.Client         // the probe's writes, their Server-Timing kept in last
	last    string                 // the Server-Timing of the probe's latest write
	metrics func() ([]byte, error) // the server's /metrics
	hists   map[string]hist        // stallHists as the last phase ended
	rev     int64
	revAt   time.Time
	mu      sync.Mutex
	lat     []probeWrite
	lag     []time.Duration
	written map[string]time.Time
	failed  atomic.Int64 // probe writes refused, timed out included

	// putsSeen and putBytesSeen are etcd's puts and their bytes at the
	// last phase's end (puts).
	putsSeen, putBytesSeen float64
}

// probeWrite is one of the probe's writes: its time at the client, and
// the server's account of it.
type probeWrite struct {
	sent   time.Time
	took   time.Duration
	timing string // Server-Timing
}

func newProbe(c *client.Client, url, caFile, token string) (*probe, error) {
	p := &probe{c: c, written: map[string]time.Time{}}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}
	hc := &http.Client{Transport: roundTripper(func(req *http.Request) (*http.Response, error) {
		resp, err := tr.RoundTrip(req)
		if err == nil {
			p.last = resp.Header.Get("Server-Timing")
		}
		return resp, err
	})}
	p.w, err = client.New(url, client.WithToken(token), client.WithHTTPClient(hc))
	return p, err
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

func (p *probe) run() {
	ctx := context.Background()
	go func() {
		for {
			ch, err := p.c.Services().Watch(ctx, "default", 0)
			if err != nil {
				time.Sleep(time.Second)
				continue
			}
			for ev := range ch {
				if ev.Err != nil || ev.Object == nil {
					break
				}
				if ev.Object.Metadata.Name != "bench-probe" {
					continue
				}
				v := ev.Object.Spec.Template.Env["P"]
				now := time.Now()
				p.mu.Lock()
				if t, ok := p.written[v]; ok {
					p.lag = append(p.lag, now.Sub(t))
					delete(p.written, v)
				}
				p.mu.Unlock()
			}
		}
	}()
	for i := 0; ; i++ {
		v := strconv.Itoa(i)
		s := &api.Service{Metadata: api.Metadata{Namespace: "default", Name: "bench-probe"},
			Spec: api.ServiceSpec{Replicas: 0, Template: api.Template{Image: "sim/none:1", Env: map[string]string{"P": v}}}}
		t0 := time.Now()
		p.mu.Lock()
		p.written[v] = t0
		p.mu.Unlock()
		p.last = ""
		_, err := p.w.Services().Apply(ctx, s)
		if err == nil {
			w := probeWrite{sent: t0, took: time.Since(t0), timing: p.last}
			p.mu.Lock()
			p.lat = append(p.lat, w)
			p.mu.Unlock()
		} else {
			p.failed.Add(1)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// take returns the figures since the last take and starts afresh, with
// where the slowest writes' time went (slowest).
func (p *probe) take() (p50, p99, lag99 time.Duration, n int, slow string) {
	p.mu.Lock()
	lat, lag := p.lat, p.lag
	p.lat, p.lag = nil, nil
	p.mu.Unlock()
	q := func(d []time.Duration, f float64) time.Duration {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return d[min(len(d)-1, int(f*float64(len(d))))].Round(time.Millisecond)
	}
	slices.SortFunc(lat, func(a, b probeWrite) int { return cmp.Compare(a.took, b.took) })
	took := make([]time.Duration, len(lat))
	for i, w := range lat {
		took[i] = w.took
	}
	return q(took, 0.5), q(took, 0.99), q(lag, 0.99), len(lat), slowest(lat)
}

// slowest says where the time of the slowest 1% of writes (at least
// one; lat sorted by took) went, in the server's words (Server-Timing):
// etcd reads, the bulk lane, etcd writes, the handler's own (CPU, locks,
// waiting for a CPU), and outside the handler, split at the handler's
// start (bench and server share a clock): "in" from the client's send to
// the handler, "out" from the handler's answer to the client's receipt
// (the network, the server's connection goroutines and the bench's own
// waiting for a CPU); and the same of the writes around the median, to compare. Each
// figure is a mean over the writes, "etcd writes" the write transactions
// each sent (more than one: a conflict tried again); "ahead" is the most
// etcd write transactions one of them found in flight, of which the
// lane's.
func slowest(lat []probeWrite) string {
	if len(lat) == 0 {
		return ""
	}
	k := max(1, len(lat)/100)
	mid := len(lat) / 2
	lo, hi := max(0, mid-max(1, len(lat)/20)), min(len(lat), mid+max(1, len(lat)/20))
	return fmt.Sprintf("probe slowest %d: %s | around p50 (%d): %s", k, breakdown(lat[len(lat)-k:]), hi-lo, breakdown(lat[lo:hi]))
}

// breakdown is the mean of ws' times by part, from their Server-Timing.
func breakdown(ws []probeWrite) string {
	parts := []string{"read", "lane", "write", "handler", "in", "out"}
	sum := map[string]float64{}
	var took float64
	var ahead []string
	writes := 0
	for _, w := range ws {
		took += w.took.Seconds() * 1000
		total, start := 0.0, int64(0)
		for part := range strings.SplitSeq(w.timing, ",") {
			name, params, _ := strings.Cut(strings.TrimSpace(part), ";")
			if v, ok := strings.CutPrefix(params, "dur="); ok {
				d, _ := strconv.ParseFloat(v, 64)
				sum[name] += d
				if name == "total" {
					total = d
				}
			} else if v, ok := strings.CutPrefix(params, "desc="); ok && name == "ahead" {
				ahead = append(ahead, strings.Trim(v, `"`))
			} else if ok && name == "start" {
				start, _ = strconv.ParseInt(v, 10, 64)
			} else if ok && name == "writes" {
				n, _ := strconv.Atoi(v)
				writes += n
			}
		}
		in := 0.0
		if start != 0 {
			in = max(0, float64(start-w.sent.UnixMicro())/1000)
		}
		sum["in"] += in
		sum["out"] += max(0, w.took.Seconds()*1000-total-in)
	}
	n := float64(len(ws))
	out := fmt.Sprintf("%.0f ms =", took/n)
	for _, name := range parts {
		out += fmt.Sprintf(" %s %.0f", name, sum[name]/n)
	}
	out += fmt.Sprintf(", etcd writes %.1f", float64(writes)/n)
	if len(ahead) > 0 {
		if len(ahead) > 3 {
			ahead = ahead[len(ahead)-3:]
		}
		out += ", ahead " + strings.Join(ahead, "; ")
	}
	return out
}

// sampler reads the server's RSS and CPU time from /proc every second.
type sampler struct {
	pid     int
	etcdDir string
	mu      sync.Mutex
	samples []sample
	peak    sample // of the highest RSS
}

type sample struct {
	at         time.Time
	cpu        float64 // seconds
	rss        int64
	anon, file int64 // parts of rss: anonymous memory, and file-backed pages
}

func newSampler(pid int, etcdDir string) *sampler { return &sampler{pid: pid, etcdDir: etcdDir} }

func (s *sampler) run() {
	tick := int64(100) // USER_HZ
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", s.pid))
		if err != nil {
			return
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		rss, _ := strconv.ParseInt(f[21], 10, 64)
		smp := sample{at: time.Now(), cpu: float64(ut+st) / float64(tick), rss: rss * int64(os.Getpagesize())}
		if kb := s.status(); kb != nil {
			smp.anon, smp.file = kb["RssAnon"]<<10, kb["RssFile"]<<10
		}
		s.mu.Lock()
		s.samples = append(s.samples, smp)
		if smp.rss > s.peak.rss {
			s.peak = smp
		}
		s.mu.Unlock()
		time.Sleep(time.Second)
	}
}

func (s *sampler) rss() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.samples) == 0 {
		return 0
	}
	return s.samples[len(s.samples)-1].rss
}

// rssParts splits the server's RSS now: anonymous memory (Go's heap,
// stacks and runtime) and file-backed pages (etcd's database, mapped).
func (s *sampler) rssParts() string {
	kb := s.status()
	if kb == nil {
		return "parts unknown"
	}
	return fmt.Sprintf("anon %d MiB, file %d MiB", kb["RssAnon"]>>10, kb["RssFile"]>>10)
}

// status reads the server's /proc status figures in kB, nil once it is gone.
func (s *sampler) status() map[string]int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", s.pid))
	if err != nil {
		return nil
	}
	kb := map[string]int64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			kb[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return kb
}

// peakSince is the sample of the highest RSS since t0.
func (s *sampler) peakSince(t0 time.Time) sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	var pk sample
	for i := len(s.samples) - 1; i >= 0 && !s.samples[i].at.Before(t0); i-- {
		if s.samples[i].rss > pk.rss {
			pk = s.samples[i]
		}
	}
	return pk
}

func (s *sampler) peakRSS() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak.rss
}

// peakParts says the anonymous and file-backed parts of the peak sample,
// and the kernel's high-water mark of the RSS (VmHWM), which counts any
// moment between two samples.
func (s *sampler) peakParts() string {
	s.mu.Lock()
	p := s.peak
	s.mu.Unlock()
	out := fmt.Sprintf("anon %d MiB, file %d MiB", p.anon>>20, p.file>>20)
	if kb := s.status(); kb != nil {
		out += fmt.Sprintf("; high-water mark %d MiB", kb["VmHWM"]>>10)
	}
	return out
}

// cpuSince is the server's mean CPU use, in cores, since t0.
func (s *sampler) cpuSince(t0 time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first, last *sample
	for i := range s.samples {
		if s.samples[i].at.Before(t0) {
			continue
		}
		if first == nil {
			first = &s.samples[i]
		}
		last = &s.samples[i]
	}
	if first == nil || last == first {
		return 0
	}
	return (last.cpu - first.cpu) / last.at.Sub(first.at).Seconds()
}

// cpuSecondsSince is the CPU time, in seconds, the process used since t0:
// what a phase cost it, however long a busy machine made the phase last.
func (s *sampler) cpuSecondsSince(t0 time.Time) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var first, last *sample
	for i := range s.samples {
		if s.samples[i].at.Before(t0) {
			continue
		}
		if first == nil {
			first = &s.samples[i]
		}
		last = &s.samples[i]
	}
	if first == nil {
		return 0
	}
	return last.cpu - first.cpu
}

// busiest is the server's highest mean CPU use, in cores, over any
// window of d since t0.
func (s *sampler) busiest(t0 time.Time, d time.Duration) float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var top float64
	for i := range s.samples {
		if s.samples[i].at.Before(t0) {
			continue
		}
		for j := i + 1; j < len(s.samples); j++ {
			if span := s.samples[j].at.Sub(s.samples[i].at); span >= d {
				top = max(top, (s.samples[j].cpu-s.samples[i].cpu)/span.Seconds())
				break
			}
		}
	}
	return top
}

// cpuOver waits d and returns the server's mean CPU use over it.
func (s *sampler) cpuOver(d time.Duration) float64 {
	t0 := time.Now()
	time.Sleep(d)
	return s.cpuSince(t0)
}

// dbSize is the size of etcd's backend file(s) under the server's etcd dir.
func (s *sampler) dbSize() int64 {
	var n int64
	_ = filepath.Walk(s.etcdDir, func(path string, fi os.FileInfo, err error) error {
		if err == nil && fi.Name() == "db" {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// inst is what the bench keeps of an instance.
type inst struct {
	phase       api.Phase
	node, owner string
	v           string // the template's env V: which rollout it is of
}

// mirror follows one kind of object in namespace ns (all when empty)
// through a list and then a watch, listing again when the watch breaks,
// and keeps what of says of each, by name.
type mirror[T any, P interface {
	*T
	api.Object
}, V any] struct {
	r  client.Resource[T, P]
	ns string
	of func(P) V
	mu sync.Mutex
	m  map[string]V
}

func newMirror[T any, P interface {
	*T
	api.Object
}, V any](r client.Resource[T, P], ns string, of func(P) V) *mirror[T, P, V] {
	return &mirror[T, P, V]{r: r, ns: ns, of: of, m: map[string]V{}}
}

func (t *mirror[T, P, V]) run(ctx context.Context) {
	for ctx.Err() == nil {
		list, rev, err := t.r.List(ctx, t.ns)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		m := make(map[string]V, len(list))
		for _, o := range list {
			m[o.GetMetadata().Name] = t.of(o)
		}
		t.mu.Lock()
		t.m = m
		t.mu.Unlock()
		ch, err := t.r.Watch(ctx, t.ns, rev)
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		for ev := range ch {
			if ev.Err != nil {
				break
			}
			t.mu.Lock()
			if ev.Type == "Deleted" {
				delete(t.m, ev.Object.GetMetadata().Name)
			} else {
				t.m[ev.Object.GetMetadata().Name] = t.of(ev.Object)
			}
			t.mu.Unlock()
		}
	}
}

// count is how many objects match, and how many there are.
func (t *mirror[T, P, V]) count(match func(V) bool) (n, total int) {
	return t.countNamed("", match)
}

// countNamed is count over the objects whose names start with prefix.
func (t *mirror[T, P, V]) countNamed(prefix string, match func(V) bool) (n, total int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for name, v := range t.m {
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		total++
		if match(v) {
			n++
		}
	}
	return n, total
}

// names are the names of the objects that start with prefix.
func (t *mirror[T, P, V]) names(prefix string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for name := range t.m {
		if strings.HasPrefix(name, prefix) {
			out = append(out, name)
		}
	}
	return out
}

// newTracker follows the instances.
func newTracker(c *client.Client) *mirror[api.Instance, *api.Instance, inst] {
	return newMirror(c.Instances().Resource, "default", instOf)
}

func instOf(in *api.Instance) inst {
	return inst{phase: in.Status.Phase, node: in.Spec.Node, owner: in.Metadata.Labels["berth.owner"], v: in.Spec.Template.Env["V"]}
}

// newNodeTracker follows the nodes' conditions.
func newNodeTracker(c *client.Client) *mirror[api.Node, *api.Node, api.NodeCondition] {
	return newMirror(c.Nodes().Resource, "", func(n *api.Node) api.NodeCondition { return n.Status.Condition })
}

// perNode reads the runtime's figures at the end of a heap profile in
// text, taken right after a GC (live bytes, not garbage awaiting the
// next), and says what each of n nodes costs.
func perNode(profile string, n int) string {
	var live, stacks float64
	for line := range strings.Lines(profile) {
		f := strings.Fields(line)
		switch {
		case len(f) >= 4 && f[1] == "HeapAlloc":
			live, _ = strconv.ParseFloat(f[3], 64)
		case len(f) >= 4 && f[1] == "Stack":
			stacks, _ = strconv.ParseFloat(f[3], 64)
		}
	}
	return fmt.Sprintf("server after a GC: live heap %.0f MiB, stacks %.0f MiB; per node %.1f KiB heap, %.1f KiB stacks",
		live/(1<<20), stacks/(1<<20), live/1024/float64(n), stacks/1024/float64(n))
}
