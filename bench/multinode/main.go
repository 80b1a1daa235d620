// Command multinode measures berth across machines made on one host: a
// switch and six network namespaces, each with its own address on a
// LAN, three running `berth server` and three `berth agent`. It times
// `berth scale` of a service to -replicas Running over the three agents,
// and the loss of a whole node (its agent and containers killed) until
// its replicas run elsewhere. It prints figures and asserts nothing.
// Run it as root.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/berth-dev/berth/bench/internal/harness"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/lan"
)

func main() {
	bin := harness.BerthFlag()
	replicas := flag.Int("replicas", 30, "replicas to scale the service to")
	flag.Parse()
	harness.Exit(bench(*bin, *replicas))
}

func bench(bin string, replicas int) error {
	bin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "berth-bench-multinode-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	rootfs := filepath.Join(work, "rootfs")
	l := lan.New(lan.Config{
		Berth:   bin,
		Dir:     work,
		Name:    fmt.Sprintf("berth-bench-%d", os.Getpid()),
		Servers: 3,
		Agents:  3,
		Before: func(s *lan.Host) error {
			_, err := s.Run("image", "build", rootfs, "--tag", "bench/busybox:1")
			return err
		},
	})
	defer l.Close()

	t0 := time.Now()
	if err := runtimetest.WriteBusyboxRootfs(rootfs); err != nil {
		return err
	}
	if err := l.Start(); err != nil {
		return err
	}
	fmt.Printf("cluster of 3 servers and 3 agents, each in its own namespace on %s: up in %v\n",
		lan.Subnet, time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if err := l.Apply(`kind: Service
name: web
replicas: 3
placement: {spread: [node]}
template:
  image: bench/busybox:1
  command: ["sh", "-c", "hostname > /www/index.html; echo ok > /www/health; exec httpd -f -p 80 -h /www"]
  ports: [{name: http, container: 80}]
  health: {http: {port: 80, path: /health}, interval: 300ms, timeout: 500ms, failures: 1}
  resources: {cpu: 0.05, memory: 16Mi}
`); err != nil {
		return err
	}
	if _, err := l.WaitHealthy("web", 3, time.Minute); err != nil {
		return err
	}
	fmt.Printf("apply web (3 replicas, image pulled from the servers): 3 Running and healthy in %v\n", time.Since(t0).Round(time.Millisecond))

	t0 = time.Now()
	if _, err := l.Admin("scale", fmt.Sprintf("web=%d", replicas)); err != nil {
		return err
	}
	web, err := l.WaitHealthy("web", replicas, 2*time.Minute)
	if err != nil {
		return err
	}
	fmt.Printf("berth scale web=%d: %d Running and healthy over 3 agents in %v (per node %v)\n",
		replicas, replicas, time.Since(t0).Round(time.Millisecond), lan.PerNode(web))

	return loseNode(l, l.Agents[2], lan.PerNode(web), replicas)
}

// loseNode crashes victim (its agent and containers) and times until it
// is NotReady and until the replicas it held are healthy elsewhere.
func loseNode(l *lan.LAN, victim *lan.Host, perNode map[string]int, replicas int) error {
	lost := perNode[victim.Name]
	if err := victim.Crash(); err != nil {
		return err
	}
	t0 := time.Now()
	var down time.Duration
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return errors.New("node " + victim.Name + " never went NotReady")
		}
		ready, err := l.Ready(victim.Name)
		if err != nil {
			return err
		}
		if !ready {
			down = time.Since(t0)
			break
		}
	}
	web, err := l.WaitHealthy("web", replicas, 2*time.Minute, victim.Name)
	if err != nil {
		return err
	}
	fmt.Printf("node %s killed with %d replicas: NotReady after %v; %d Running and healthy on the others after %v (per node %v)\n",
		victim.Name, lost, down.Round(time.Millisecond), replicas, time.Since(t0).Round(time.Millisecond), lan.PerNode(web))
	return nil
}
