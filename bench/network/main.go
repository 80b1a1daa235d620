// Command network measures data-plane programming: a full sync of many
// services and endpoints into nftables, then single changes at that size,
// then the cost of wiring one container (namespace, veth, address). It runs
// inside a network namespace it creates, so the host's ruleset and links
// are never touched, and removes it at the end. No containers are needed.
//
//	go run ./bench/network [-services 10000] [-endpoints 25] [-runs 50]
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/netns"
	"github.com/berth-dev/berth/internal/network/vip"
)

func main() {
	services := flag.Int("services", 10000, "services")
	endpoints := flag.Int("endpoints", 25, "endpoints per service")
	runs := flag.Int("runs", 50, "repetitions of each single change")
	flag.Parse()
	if err := run(*services, *endpoints, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench network:", err)
		os.Exit(1)
	}
}

type row struct {
	what  string
	times []time.Duration
}

func run(nSvc, nEP, runs int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (creates a network namespace)")
	}
	dir, err := os.MkdirTemp("", "berth-bench-network-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ns := filepath.Join(dir, "ns")
	if err := netns.Create(ns, nil); err != nil {
		return err
	}
	defer netns.Delete(ns)

	ctx := context.Background()
	p, err := vip.New(ctx, vip.Config{Table: "berth-bench", NetNS: ns})
	if err != nil {
		return err
	}
	defer p.Close()

	svcs := make([]vip.Service, nSvc)
	for i := range svcs {
		svcs[i] = service(i, nEP)
	}
	fmt.Printf("berth network benchmark: %s, %d CPUs, %d services × %d endpoints = %d endpoints\n\n",
		runtime.Version(), runtime.NumCPU(), nSvc, nEP, nSvc*nEP)

	rows, err := syncTimes(ctx, p, ns, svcs)
	if err != nil {
		return err
	}
	changes, err := changeTimes(ctx, p, svcs, nEP, runs)
	if err != nil {
		return err
	}
	rows = append(rows, changes...)

	start := time.Now()
	if err := p.Delete(ctx); err != nil {
		return err
	}
	rows = append(rows, row{"delete table", []time.Duration{time.Since(start)}})

	att, det, err := attachTimes(ctx, ns, filepath.Join(dir, "state"), runs, 0)
	if err != nil {
		return err
	}
	warm, _, err := attachTimes(ctx, ns, filepath.Join(dir, "state-spare"), runs, 1)
	if err != nil {
		return err
	}
	warm.what = "attach container, spare netns ready"
	rows = append(rows, att, warm, det)

	report(rows)
	return nil
}

// report prints each row's percentiles, and the goals.
func report(rows []row) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "operation\truns\tp50\tp90\tmax\t")
	for _, r := range rows {
		slices.Sort(r.times)
		n := len(r.times)
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t\n", r.what, n, ms(r.times[n/2]), ms(r.times[n*9/10]), ms(r.times[n-1]))
	}
	_ = tw.Flush()
	fmt.Println("\nreference (kube-proxy nftables mode): +1 service at 10k services ≈ 141 ms; full sync at 250k endpoints ≈ 13 min")
	fmt.Println("goals: full sync ≤ 5 s, one endpoint change ≤ 5 ms")
}

// syncTimes times whole syncs of svcs: from empty, with nothing changed,
// and by a restarted agent that reads the kernel back first.
func syncTimes(ctx context.Context, p *vip.Programmer, ns string, svcs []vip.Service) ([]row, error) {
	var rows []row
	start := time.Now()
	if err := p.Sync(ctx, svcs); err != nil {
		return nil, err
	}
	rows = append(rows, row{"full sync (empty → all)", []time.Duration{time.Since(start)}})

	start = time.Now()
	if err := p.Sync(ctx, svcs); err != nil {
		return nil, err
	}
	rows = append(rows, row{"resync, nothing changed", []time.Duration{time.Since(start)}})

	// A restarted agent: read the kernel back, then resync.
	start = time.Now()
	p2, err := vip.New(ctx, vip.Config{Table: "berth-bench", NetNS: ns})
	if err != nil {
		return nil, err
	}
	if err := p2.Sync(ctx, svcs); err != nil {
		return nil, err
	}
	rows = append(rows, row{"restart: read back + resync", []time.Duration{time.Since(start)}})
	_ = p2.Close()

	return rows, nil
}

// changeTimes times single changes, runs of each: a service added, an
// endpoint added, removed, replaced, and unhealthy then healthy again.
func changeTimes(ctx context.Context, p *vip.Programmer, svcs []vip.Service, nEP, runs int) ([]row, error) {
	nSvc := len(svcs)
	var add, addEP, delEP, swapEP, unready row
	add.what, addEP.what, delEP.what = "+1 service (25 endpoints)", "+1 endpoint", "-1 endpoint"
	swapEP.what, unready.what = "replace 1 endpoint (count unchanged)", "1 endpoint unhealthy → healthy (2 changes)"
	for r := range runs {
		s := service(nSvc+r, nEP)
		t0 := time.Now()
		if err := p.UpsertService(ctx, s); err != nil {
			return nil, err
		}
		add.times = append(add.times, time.Since(t0))

		target := svcs[(r*7919)%nSvc]
		eps := append(slices.Clone(target.Endpoints), vip.Endpoint{Addr: podAddr(1_000_000 + r), Ready: true})
		t0 = time.Now()
		if err := p.SetEndpoints(ctx, target.Name, eps); err != nil {
			return nil, err
		}
		addEP.times = append(addEP.times, time.Since(t0))

		t0 = time.Now()
		if err := p.SetEndpoints(ctx, target.Name, target.Endpoints); err != nil {
			return nil, err
		}
		delEP.times = append(delEP.times, time.Since(t0))

		eps = slices.Clone(target.Endpoints)
		eps[r%len(eps)].Addr = podAddr(2_000_000 + r)
		t0 = time.Now()
		if err := p.SetEndpoints(ctx, target.Name, eps); err != nil {
			return nil, err
		}
		swapEP.times = append(swapEP.times, time.Since(t0))
		if err := p.SetEndpoints(ctx, target.Name, target.Endpoints); err != nil {
			return nil, err
		}

		eps = slices.Clone(target.Endpoints)
		eps[r%len(eps)].Ready = false
		t0 = time.Now()
		if err := p.SetEndpoints(ctx, target.Name, eps); err != nil {
			return nil, err
		}
		if err := p.SetEndpoints(ctx, target.Name, target.Endpoints); err != nil {
			return nil, err
		}
		unready.times = append(unready.times, time.Since(t0))
	}
	return []row{add, addEP, delEP, swapEP, unready}, nil
}

// attachTimes wires containers to a bridge in the benchmark's namespace:
// the per-container cost that adds to container start and stop.
func attachTimes(ctx context.Context, ns, state string, runs, spares int) (row, row, error) {
	att := row{what: "attach container (netns, veth, IP)"}
	det := row{what: "detach container"}
	node, err := network.NewNode(ctx, network.Config{
		Bridge: fmt.Sprintf("berth-bench%d", spares), Subnet: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(spares), 0}), 24),
		StateDir: state, Table: "berth-bench-node", HostNetNS: ns, SpareNetNS: spares,
	})
	if err != nil {
		return att, det, err
	}
	defer node.Close()
	for r := range runs {
		id := fmt.Sprintf("bench-%d", r)
		// Containers rarely start back to back faster than a spare is
		// made; wait for it, as a start some milliseconds later would.
		for deadline := time.Now().Add(time.Second); node.SparesReady() < spares && time.Now().Before(deadline); {
			time.Sleep(time.Millisecond)
		}
		t0 := time.Now()
		if _, err := node.Attach(ctx, id, "bench"); err != nil {
			return att, det, err
		}
		att.times = append(att.times, time.Since(t0))
	}
	for r := range runs {
		t0 := time.Now()
		if err := node.Detach(ctx, fmt.Sprintf("bench-%d", r)); err != nil {
			return att, det, err
		}
		det.times = append(det.times, time.Since(t0))
	}
	return att, det, node.DeleteTable()
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }

func service(i, nEP int) vip.Service {
	s := vip.Service{
		Name:  fmt.Sprintf("bench/svc-%d", i),
		VIP:   netip.AddrFrom4([4]byte{10, 96, byte(i >> 8), byte(i)}),
		Ports: []vip.Port{{Name: "http", Protocol: vip.TCP, Port: 80, TargetPort: 8080}},
	}
	if i >= 1<<16 {
		s.VIP = netip.AddrFrom4([4]byte{10, 97, byte(i >> 8), byte(i)})
	}
	for e := range nEP {
		s.Endpoints = append(s.Endpoints, vip.Endpoint{Addr: podAddr(i*nEP + e), Ready: true})
	}
	return s
}

// podAddr spreads endpoints over 10.128.0.0/9.
func podAddr(n int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(128 + (n>>16)&127), byte(n >> 8), byte(n)})
}
