// Command migrate measures live migration (berth migrate) between two
// agents on a LAN of network namespaces: a busybox counter and a server
// holding 100 MiB (internal/testing/memserver), each moved back and forth
// -n times. It prints the total migration time, the downtime berth
// reports (final dump to restored) and the bytes of images sent, and for
// the memory server the longest pause between answers seen by a client
// polling it through its service's VIP every 1 ms. It asserts nothing.
// Run it as root.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

func main() {
	bin := flag.String("berth", "bin/berth", "the berth binary to measure")
	runs := flag.Int("n", 3, "moves per workload")
	flag.Parse()
	if err := bench(*bin, *runs); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

const services = `kind: Service
name: counter
replicas: 1
template:
  image: bench/busybox:1
  runtime: runc
  command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; usleep 10000; done"]
  resources: {cpu: 0.1, memory: 32Mi}
---
kind: Service
name: mem
replicas: 1
template:
  image: bench/busybox:1
  runtime: runc
  command: ["/memserver", "-mb", "100"]
  ports: [{name: http, container: 80}]
  resources: {cpu: 0.5, memory: 256Mi}
---
kind: Service
name: client
replicas: 1
template:
  image: bench/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.1, memory: 16Mi}
`

func bench(bin string, runs int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, rootfs, err := runtimetest.BusyboxWorkdir("berth-bench-migrate-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	build := exec.Command("go", "build", "-o", filepath.Join(rootfs, "memserver"), "./internal/testing/memserver")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build memserver: %w: %s", err, out)
	}
	l := lan.New(lan.Config{
		Berth: bin, Dir: work, Name: fmt.Sprintf("berth-bench-mig-%d", os.Getpid()),
		Servers: 1, Agents: 2, Verbose: os.Getenv("BENCH_LOGS") != "",
		Before: func(s *lan.Host) error {
			_, err := s.Run("image", "build", rootfs, "--tag", "bench/busybox:1")
			return err
		},
	})
	defer l.Close()
	if err := l.Start(); err != nil {
		return err
	}
	if err := l.Apply(services); err != nil {
		return err
	}
	var client api.Instance
	for _, owner := range []string{"counter", "mem", "client"} {
		got, err := l.WaitHealthy(owner, 1, 2*time.Minute)
		if err != nil {
			return err
		}
		if owner == "client" {
			client = got[0]
		}
	}
	fmt.Println("1 server and 2 agents, each in its own network namespace; images stream through the server")
	for _, owner := range []string{"counter", "mem"} {
		var total, down, pause []time.Duration
		stages := map[string][]time.Duration{}
		var bytes int64
		for range runs {
			insts, err := l.WaitHealthy(owner, 1, time.Minute)
			if err != nil {
				return err
			}
			in := insts[0]
			to := "n1"
			if in.Spec.Node == "n1" {
				to = "n2"
			}
			stop, lines := poll(l, client, owner == "mem")
			out, err := l.Admin("migrate", in.Metadata.Name, "--to", to, "-o", "json")
			stop()
			if err != nil {
				if os.Getenv("BENCH_LOGS") != "" {
					l.Logs(func(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) })
				}
				return err
			}
			var m api.Migration
			if err := json.Unmarshal([]byte(out), &m); err != nil {
				return fmt.Errorf("migrate -o json: %w: %s", err, out)
			}
			total, down, bytes = append(total, m.Duration), append(down, m.Downtime), m.Bytes
			st := m.Stages
			for k, d := range map[string]time.Duration{"prepare (before the freeze)": st.Prepare, "dump": st.Dump,
				"transfer": st.Transfer, "restore": st.Restore, "switch (store move)": st.Switch} {
				stages[k] = append(stages[k], d)
			}
			if owner == "mem" {
				pause = append(pause, longestPause(lines()))
			}
		}
		what := map[string]string{"counter": "busybox counter", "mem": "100 MiB memserver"}[owner]
		row(what+": migration time", total)
		row(what+": downtime (final dump to restored)", down)
		for _, k := range []string{"prepare (before the freeze)", "dump", "transfer", "restore", "switch (store move)"} {
			row(what+":   "+k, stages[k])
		}
		if len(pause) > 0 {
			row(what+": longest pause seen through the VIP", pause)
		}
		fmt.Printf("%-62s %.1f MiB\n", what+": images sent", float64(bytes)/(1<<20))
	}
	return nil
}

// poll has the client poll the memory server through its VIP every 1 ms
// (when on) until stop; lines then reads what it got.
func poll(l *lan.LAN, client api.Instance, on bool) (stop func(), lines func() []string) {
	if !on {
		return func() {}, func() []string { return nil }
	}
	host := l.Host(client.Spec.Node)
	id := client.Status.ContainerID
	_, _ = host.Run("container", "exec", id, "rm", "-f", "/tmp/stop", "/tmp/poll")
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = host.Run("container", "exec", id, "sh", "-c",
			"while [ ! -e /tmp/stop ]; do timeout 2 wget -qO- http://mem.default.berth/ >>/tmp/poll 2>/dev/null; usleep 1000; done")
	}()
	time.Sleep(500 * time.Millisecond)
	return func() {
			// Answers after the move, then stop.
			time.Sleep(2 * time.Second)
			_, _ = host.Run("container", "exec", id, "touch", "/tmp/stop")
			<-done
		}, func() []string {
			out, _ := host.Run("container", "exec", id, "cat", "/tmp/poll")
			return strings.Split(out, "\n")
		}
}

// longestPause is the longest time between two answers ("COUNT UNIXNANO").
func longestPause(lines []string) time.Duration {
	var prev, gap int64
	for _, ln := range lines {
		f := strings.Fields(ln)
		if len(f) != 2 {
			continue
		}
		at, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		if prev != 0 {
			gap = max(gap, at-prev)
		}
		prev = at
	}
	return time.Duration(gap)
}

func row(what string, ds []time.Duration) {
	slices.Sort(ds)
	fmt.Printf("%-62s median %6.0f ms  min %6.0f ms  max %6.0f ms  (%d runs)\n", what,
		ms(ds[len(ds)/2]), ms(ds[0]), ms(ds[len(ds)-1]), len(ds))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
