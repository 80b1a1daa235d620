// Command scheduler measures the placement engine on synthetic clusters:
// placements per second, latency of a batch, and memory, for 10,000 nodes
// with 100,000 instances and 15,000 nodes with 300,000 instances, plus an
// overloaded 10,000 nodes with 300,000 instances where failures and
// preemption take their share.
//
//	go run ./bench/scheduler [-batch 1000] [-seed 1] [-scenarios 10000x100000,15000x300000,10000x300000]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/berth-dev/berth/internal/scheduler"
	"github.com/berth-dev/berth/internal/scheduler/schedtest"
)

type result struct {
	nodes, instances      int
	placed, failed, evict int
	setup, total          time.Duration
	first, p50, p99, max  time.Duration
	heapMiB               float64
	cpuUse, memUse        float64
	empty                 int
}

func main() {
	batch := flag.Int("batch", 1000, "instances per Place call")
	seed := flag.Uint64("seed", 1, "seed for the cluster, the workload and placement")
	scenarios := flag.String("scenarios", "10000x100000,15000x300000,10000x300000", "comma-separated NODESxINSTANCES")
	candidates := flag.Int("candidates", 0, "feasible nodes scored per instance (0: engine default)")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "cpuprofile %s: %v\n", *cpuprofile, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}

	fmt.Printf("berth scheduler benchmark: %s, GOMAXPROCS=%d, %d CPUs, batch %d, seed %d\n\n",
		runtime.Version(), runtime.GOMAXPROCS(0), runtime.NumCPU(), *batch, *seed)
	var results []result
	for sc := range strings.SplitSeq(*scenarios, ",") {
		n, i, ok := strings.Cut(sc, "x")
		nodes, err1 := strconv.Atoi(n)
		insts, err2 := strconv.Atoi(i)
		if !ok || err1 != nil || err2 != nil {
			fmt.Fprintf(os.Stderr, "scenario %q: want NODESxINSTANCES\n", sc)
			os.Exit(2)
		}
		results = append(results, run(nodes, insts, *batch, *seed, *candidates))
	}

	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "nodes\tinstances\tplaced\tfailed\tevicted\tplacements/s\tbatch p50\tbatch p99\tbatch max\tfirst batch\theap MiB\tcpu used\tmem used\tempty nodes\tsetup\t")
	for _, r := range results {
		rate := float64(r.placed+r.failed) / r.total.Seconds()
		fmt.Fprintf(w, "%d\t%d\t%d\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%.0f\t%.0f%%\t%.0f%%\t%d\t%s\t\n",
			r.nodes, r.instances, r.placed, r.failed, r.evict, rate,
			ms(r.p50), ms(r.p99), ms(r.max), ms(r.first), r.heapMiB, 100*r.cpuUse, 100*r.memUse, r.empty, ms(r.setup))
	}
	w.Flush()
	fmt.Printf("\npeak RSS %s MiB (all scenarios). placements/s counts every instance decided (placed or failed)\n", rss())
	fmt.Println("over the time spent in Place, one goroutine; heap is live heap after the run; setup builds nodes and workload.")
	fmt.Println("goal: >= 20,000 placements/s at 10,000 nodes; kube-scheduler ~300/s, Godel ~1,000/s, Nomad ~1,500/s as reported.")
}

func run(nodes, instances, batch int, seed uint64, candidates int) result {
	r := result{nodes: nodes, instances: instances}
	t0 := time.Now()
	s, err := scheduler.NewState(schedtest.Nodes(nodes, seed), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	work := schedtest.Workload(instances, seed, "")
	r.setup = time.Since(t0)
	runtime.GC()

	var lat []time.Duration
	for b := 0; b*batch < len(work); b++ {
		chunk := work[b*batch : min((b+1)*batch, len(work))]
		start := time.Now()
		p := s.Place(chunk, scheduler.Options{Seed: seed + uint64(b), Candidates: candidates})
		d := time.Since(start)
		if b == 0 {
			r.first = d // builds the per-constraint and spread caches
		}
		lat = append(lat, d)
		r.total += d
		r.placed += len(p.Placements)
		r.failed += len(p.Failures)
		r.evict += len(p.Preemptions)
	}
	slices.Sort(lat)
	r.p50 = lat[len(lat)/2]
	r.p99 = lat[min(len(lat)-1, len(lat)*99/100)]
	r.max = lat[len(lat)-1]

	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	r.heapMiB = float64(ms.HeapAlloc) / (1 << 20)
	var used, capacity scheduler.Resources
	for _, n := range s.Nodes() {
		used.MilliCPU += n.Used.MilliCPU
		used.MemoryBytes += n.Used.MemoryBytes
		capacity.MilliCPU += n.Capacity.MilliCPU
		capacity.MemoryBytes += n.Capacity.MemoryBytes
		if len(n.Instances) == 0 {
			r.empty++ // bin-packing keeps whole nodes free for big requests
		}
	}
	r.cpuUse = float64(used.MilliCPU) / float64(capacity.MilliCPU)
	r.memUse = float64(used.MemoryBytes) / float64(capacity.MemoryBytes)
	runtime.KeepAlive(s)
	debug.FreeOSMemory()
	return r
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000)
}

// rss reads the peak resident set size from /proc (Linux only).
func rss() string {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return "?"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			if err != nil {
				return "?"
			}
			return strconv.Itoa(kb / 1024)
		}
	}
	return "?"
}
