// Command compose measures `berth compose up -d` of a 5-service Compose
// file to every service healthy, beside `podman-compose up -d` of the same
// file and image in the same invocation. It prints figures and asserts
// nothing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/bench/internal/harness"
)

// app is five services, two of them gated on another's health, each with
// a health check: the shape of a small web stack.
const app = `name: %s
services:
  db:
    image: %s
    command: ["httpd", "-f", "-p", "5432", "-h", "/www"]
    expose: ["5432"]
    healthcheck: {test: ["CMD-SHELL", "test -e /www/index.html"], interval: 200ms, timeout: 1s, retries: 3}
  cache:
    image: %[2]s
    command: ["httpd", "-f", "-p", "6379", "-h", "/www"]
    expose: ["6379"]
    healthcheck: {test: ["CMD-SHELL", "test -e /www/index.html"], interval: 200ms, timeout: 1s, retries: 3}
  api:
    image: %[2]s
    command: ["httpd", "-f", "-p", "8080", "-h", "/www"]
    expose: ["8080"]
    depends_on: {db: {condition: service_healthy}, cache: {condition: service_healthy}}
    healthcheck: {test: ["CMD-SHELL", "test -e /www/index.html"], interval: 200ms, timeout: 1s, retries: 3}
  worker:
    image: %[2]s
    command: ["sleep", "3600"]
    depends_on: {db: {condition: service_healthy}}
    healthcheck: {test: ["CMD-SHELL", "test -e /bin/sh"], interval: 200ms, timeout: 1s, retries: 3}
  web:
    image: %[2]s
    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
    expose: ["80"]
    depends_on: {api: {condition: service_healthy}}
    healthcheck: {test: ["CMD-SHELL", "test -e /www/index.html"], interval: 200ms, timeout: 1s, retries: 3}
`

var services = []string{"db", "cache", "api", "worker", "web"}

func main() {
	bin := harness.BerthFlag()
	runs := flag.Int("n", 5, "measurements of each")
	flag.Parse()
	harness.Exit(bench(*bin, *runs))
}

func bench(bin string, runs int) error {
	ws, err := harness.NewWorkspace(bin, "berth-bench-compose-")
	if err != nil {
		return err
	}
	defer ws.Close()
	bin, work, rootfs := ws.Bin, ws.Work, ws.Rootfs
	ours, err := berthRuns(bin, work, rootfs, runs)
	if err != nil {
		return err
	}
	fmt.Printf("%-52s %s\n", fmt.Sprintf("berth compose up -d, 5 services to healthy (%d)", len(ours)), summary(ours))
	peer, peerErr := podmanComposeRuns(work, rootfs, runs)
	if peerErr != nil {
		fmt.Printf("%-52s %s\n", "podman-compose up -d", "not measured: "+peerErr.Error())
		return nil
	}
	fmt.Printf("%-52s %s\n", fmt.Sprintf("podman-compose up -d, 5 services to healthy (%d)", len(peer)), summary(peer))
	fmt.Printf("\nberth / podman-compose: median %.2fx\n", float64(median(ours))/float64(median(peer)))
	fmt.Println("(podman-compose 1.0 starts services in depends_on order without waiting for health; its time to healthy polls `podman healthcheck run`, as there is no systemd to run the checks)")
	return nil
}

func berthRuns(bin, work, rootfs string, runs int) ([]time.Duration, error) {
	data := filepath.Join(work, "data")
	if _, err := harness.Berth(bin, data, "image", "build", rootfs, "--tag", "bench/busybox:1"); err != nil {
		return nil, err
	}
	up, err := harness.Start(bin, data, harness.Options{Netns: fmt.Sprintf("berth-bench-compose-%d", os.Getpid())})
	if err != nil {
		return nil, err
	}
	defer up.Stop()
	ctx, c, berth := context.Background(), up.Client, up.Berth
	var out []time.Duration
	for i := range runs + 1 {
		project := fmt.Sprintf("bench%d", i)
		f := filepath.Join(work, project+".yaml")
		if err := os.WriteFile(f, fmt.Appendf(nil, app, project, "bench/busybox:1"), 0o644); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if _, err := berth("compose", "-f", f, "up", "-d"); err != nil {
			return nil, err
		}
		for {
			healthy := 0
			for _, s := range services {
				svc, err := c.Services().Get(ctx, project, s)
				if err == nil && svc.Status.ReadyReplicas >= 1 {
					healthy++
				}
			}
			if healthy == len(services) {
				break
			}
			if time.Since(t0) > 2*time.Minute {
				return nil, fmt.Errorf("%s: %d of 5 services healthy after 2m", project, healthy)
			}
			time.Sleep(20 * time.Millisecond)
		}
		el := time.Since(t0)
		if i > 0 { // the first run warms caches
			out = append(out, el)
		}
		if _, err := berth("compose", "-f", f, "down"); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func podmanComposeRuns(work, rootfs string, runs int) ([]time.Duration, error) {
	for _, b := range []string{"podman", "podman-compose"} {
		if _, err := exec.LookPath(b); err != nil {
			return nil, fmt.Errorf("%s is not installed", b)
		}
	}
	const img = "localhost/berth-bench-compose:1"
	if err := harness.PodmanImport(rootfs, img); err != nil {
		return nil, err
	}
	defer exec.Command("podman", "rmi", "-f", img).Run()
	// runc and ulimits within this machine's hard limits (see FIELD-NOTES).
	// podman-compose 1.0 names the project by -p, not by the file's name:.
	pc := func(f, project string, args ...string) *exec.Cmd {
		return exec.Command("podman-compose", append([]string{"--podman-args=--runtime runc",
			"--podman-run-args=--ulimit nofile=1024:1024 --ulimit nproc=1024:1024", "-p", project, "-f", f}, args...)...)
	}
	var out []time.Duration
	for i := range runs + 1 {
		project := fmt.Sprintf("berthbench%d%d", os.Getpid(), i)
		f := filepath.Join(work, project+".yaml")
		if err := os.WriteFile(f, fmt.Appendf(nil, app, project, img), 0o644); err != nil {
			return nil, err
		}
		t0 := time.Now()
		if b, err := pc(f, project, "up", "-d").CombinedOutput(); err != nil {
			_ = pc(f, project, "down").Run()
			return nil, fmt.Errorf("podman-compose up -d: %w: %s", err, lastLines(string(b), 5))
		}
		for _, s := range services {
			name := project + "_" + s + "_1"
			for exec.Command("podman", "healthcheck", "run", name).Run() != nil {
				if time.Since(t0) > 2*time.Minute {
					_ = pc(f, project, "down").Run()
					return nil, fmt.Errorf("%s not healthy after 2m", name)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		el := time.Since(t0)
		if i > 0 {
			out = append(out, el)
		}
		if b, err := pc(f, project, "down", "-t", "0").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("podman-compose down: %w: %s", err, lastLines(string(b), 5))
		}
	}
	return out, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func summary(d []time.Duration) string {
	s := slices.Clone(d)
	slices.Sort(s)
	return fmt.Sprintf("median %v, min %v, max %v", median(d).Round(time.Millisecond), s[0].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}
