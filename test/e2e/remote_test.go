package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// Three replicas, one per node. Each container says it booted (with a
// value of its own), then numbers lines; a web server answers with the
// instance's name.
const talkYAML = `kind: Service
name: talk
replicas: 3
placement: {spread: [node]}
template:
  image: demo/busybox:1
  command: ["sh", "-c", "hostname > /www/index.html; httpd -p 8080 -h /www; b=$(cat /proc/sys/kernel/random/uuid); echo \"$(hostname) boot $b\"; i=0; while :; do i=$((i+1)); echo \"$(hostname) $b line $i\"; sleep 0.1; done"]
  resources: {cpu: 0.1, memory: 96Mi}
`

// Fixed output: 50 lines, then (a second later) two more, then quiet.
const quietYAML = `kind: Service
name: quiet
replicas: 1
placement: {constraints: [{key: node.name, op: "==", values: [n2]}]}
template:
  image: demo/busybox:1
  command: ["sh", "-c", "for i in $(seq 50); do echo early $i; done; sleep 1; echo late 1; echo late 2 >&2; exec sleep 1d"]
  resources: {cpu: 0.1, memory: 16Mi}
`

// TestRemoteOperationsOnTheLAN drives logs, exec, cp, port-forward and
// metrics from a client in the first server's namespace, over TLS with
// the admin token, to instances on three agents in namespaces of their
// own (and exec through the second server too).
func TestRemoteOperationsOnTheLAN(t *testing.T) {
	start := time.Now()
	l := startLANOf(t, 2, 3)
	t.Logf("2 servers and 3 agents up in %v", time.Since(start).Round(time.Millisecond))
	s1 := l.Servers[0].Netns
	api1 := adminAPI(t, l)

	runningBefore := metricValue(t, scrape(t, api1, ""), "berth_instances", "phase", "Running")
	startsBefore := metricValue(t, scrape(t, api1, "n1"), "berth_container_start_duration_seconds", "", "")

	check(t, l.Apply(talkYAML))
	check(t, l.Apply(quietYAML))
	talk := waitHealthy(t, l, "talk", 3, 90*time.Second)
	if got := lan.PerNode(talk); got["n1"] != 1 || got["n2"] != 1 || got["n3"] != 1 {
		t.Fatalf("talk per node %v, want one on each", got)
	}
	quiet := waitHealthy(t, l, "quiet", 1, 60*time.Second)[0]
	byNode := map[string]api.Instance{}
	for _, in := range talk {
		byNode[in.Spec.Node] = in
	}

	t.Run("metrics move as instances start", func(t *testing.T) {
		server := scrape(t, api1, "")
		if got := metricValue(t, server, "berth_instances", "phase", "Running"); got < runningBefore+4 {
			t.Errorf("berth_instances{phase=Running} %v, was %v: want 4 more", got, runningBefore)
		}
		if got := metricValue(t, server, "berth_node_heartbeat_age_seconds", "node", "n3"); got <= 0 || got > 10 {
			t.Errorf("heartbeat age of n3 %vs", got)
		}
		n1 := scrape(t, api1, "n1")
		if got := metricValue(t, n1, "berth_container_start_duration_seconds", "", ""); got < startsBefore+1 {
			t.Errorf("container starts on n1: %v, was %v", got, startsBefore)
		}
		name := byNode["n1"].Metadata.Name
		if got := metricValue(t, n1, "container_cpu_usage_seconds_total", "instance", name); got <= 0 {
			t.Errorf("container_cpu_usage_seconds_total of %s: %v", name, got)
		}
		if got := metricValue(t, n1, "container_memory_working_set_bytes", "instance", name); got <= 0 {
			t.Errorf("container_memory_working_set_bytes of %s: %v", name, got)
		}
		for _, m := range n1["container_threads"].GetMetric() {
			if labelOf(m, "instance") == name && labelOf(m, "service") != "talk" {
				t.Errorf("container_threads of %s has service %q, want talk", name, labelOf(m, "service"))
			}
		}
	})

	t.Run("the metrics token scrapes and does nothing else", func(t *testing.T) {
		// Every server holds the one cluster-wide metrics token.
		raw, err := os.ReadFile(filepath.Join(l.Servers[1].DataDir, "tls", "metrics-token"))
		check(t, err)
		scraper := &adminClient{hc: api1.hc, url: api1.url, token: strings.TrimSpace(string(raw))}
		if scraper.token == "" || scraper.token == api1.token {
			t.Fatalf("metrics token %q: want one of its own", scraper.token)
		}
		if got := metricValue(t, scrape(t, scraper, ""), "berth_instances", "phase", "Running"); got < runningBefore+4 {
			t.Errorf("berth_instances{phase=Running} through the metrics token: %v", got)
		}
		if got := metricValue(t, scrape(t, scraper, "n2"), "container_memory_working_set_bytes", "instance", byNode["n2"].Metadata.Name); got <= 0 {
			t.Errorf("n2's container memory through the metrics token: %v", got)
		}
		for _, rq := range [][2]string{{"GET", "/v1/instances"}, {"GET", "/v1/secrets"}, {"POST", "/v1/instances/default/" + quiet.Metadata.Name + "/exec"}, {"DELETE", "/v1/services/default/quiet"}} {
			req, _ := http.NewRequestWithContext(t.Context(), rq[0], scraper.url+rq[1], nil)
			req.Header.Set("Authorization", "Bearer "+scraper.token)
			resp, err := scraper.hc.Do(req)
			check(t, err)
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s %s with the metrics token: %s, want 403", rq[0], rq[1], resp.Status)
			}
		}
		if _, err := l.Admin("get", "service", "quiet"); err != nil {
			t.Errorf("quiet after the refused delete: %v", err)
		}
	})

	t.Run("logs follow every replica and their replacements", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		follow := l.AdminCommand(ctx, "logs", "-f", "talk")
		lines := streamLines(t, follow)
		boots := map[string]string{} // instance → last boot value seen
		seen := func(cond func() bool) func(string) bool {
			return func(line string) bool {
				if m := bootRE.FindStringSubmatch(line); m != nil {
					if m[1] != m[2] {
						t.Errorf("line %q: prefix and hostname differ", line)
					}
					boots[m[1]] = m[3]
				}
				return cond()
			}
		}
		waitLine(t, lines, 30*time.Second, "lines from all three replicas", seen(func() bool { return len(boots) == 3 }))
		// A killed container is replaced by a new one (a new boot);
		// a new replica appears on scaling up.
		victim := byNode["n3"]
		first := boots[victim.Metadata.Name]
		_, err := l.Host("n3").Run("container", "kill", victim.Status.ContainerID)
		check(t, err)
		waitLine(t, lines, 30*time.Second, "the replacement container of "+victim.Metadata.Name, seen(func() bool {
			return boots[victim.Metadata.Name] != first
		}))
		// --previous reads the killed container.
		prev := logsOf(t, l, "--previous", victim.Metadata.Name)
		if !strings.Contains(prev, victim.Metadata.Name+" boot "+first+"\n") || strings.Contains(prev, boots[victim.Metadata.Name]) {
			t.Errorf("--previous of %s does not show the killed container (boot %s) alone: %.200q", victim.Metadata.Name, first, prev)
		}
		_, err = l.Admin("scale", "talk=4")
		check(t, err)
		waitLine(t, lines, 60*time.Second, "a fourth replica's lines", seen(func() bool { return len(boots) == 4 }))
	})

	t.Run("a reader that never reads slows no container", func(t *testing.T) {
		check(t, l.Apply(`kind: Service
name: flood
replicas: 1
placement: {constraints: [{key: node.name, op: "==", values: [n1]}]}
template:
  image: demo/busybox:1
  command: ["sh", "-c", "sleep 2; yes 'a line the reader never takes' | head -n 200000; echo END; exec sleep 1d"]
  resources: {cpu: 0.5, memory: 32Mi}
`))
		in := waitHealthy(t, l, "flood", 1, 60*time.Second)[0]
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// Its stdout is a pipe nobody reads: it fills within the first
		// lines, and the stream backs up to the agent.
		stalled := l.AdminCommand(ctx, "logs", "-f", in.Metadata.Name)
		_, err := stalled.StdoutPipe()
		check(t, err)
		check(t, stalled.Start())
		t.Cleanup(func() { _ = stalled.Process.Kill(); _ = stalled.Wait() })
		eventually(t, 60*time.Second, "the container to write all its lines past the stalled reader", func() bool {
			return logsOf(t, l, "--tail", "1", in.Metadata.Name) == "END\n"
		})
	})

	t.Run("tail and since are exact", func(t *testing.T) {
		name := quiet.Metadata.Name
		eventually(t, 20*time.Second, "quiet's last line", func() bool {
			return strings.Contains(logsOf(t, l, name), "late 2")
		})
		got := logsOf(t, l, "--tail", "3", name)
		if got != "early 50\nlate 1\nlate 2\n" {
			t.Errorf("--tail 3: %q", got)
		}
		stamped := logsOf(t, l, "--timestamps", name)
		var lateAt string
		for _, line := range strings.Split(stamped, "\n") {
			if ts, text, _ := strings.Cut(line, " "); text == "late 1" {
				lateAt = ts
			}
		}
		at, err := time.Parse(time.RFC3339Nano, lateAt)
		if err != nil {
			t.Fatalf("no time on late 1 in %q", stamped)
		}
		for since, want := range map[string]string{
			at.Format(time.RFC3339Nano):                      "late 1\nlate 2\n",
			at.Add(time.Nanosecond).Format(time.RFC3339Nano): "late 2\n",
		} {
			if got := logsOf(t, l, "--since", since, name); got != want {
				t.Errorf("--since %s: %q, want %q", since, got, want)
			}
		}
		if got := logsOf(t, l, "--since", at.Add(-time.Nanosecond).Format(time.RFC3339Nano), "--tail", "1", name); got != "late 2\n" {
			t.Errorf("--since with --tail 1: %q", got)
		}
		if got := strings.Count(logsOf(t, l, "--since", "1h", name), "\n"); got != 52 {
			t.Errorf("--since 1h: %d lines, want all 52", got)
		}
		// A service's instances, --tail lines of each, merged in time order.
		merged := strings.Split(strings.TrimSuffix(logsOf(t, l, "--timestamps", "--tail", "4", "talk"), "\n"), "\n")
		per := map[string]int{}
		var prev time.Time
		for _, line := range merged {
			m := regexp.MustCompile(`^\[([^\]]+)\] (\S+) `).FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("merged line %q: no [instance] prefix and time", line)
			}
			per[m[1]]++
			at, err := time.Parse(time.RFC3339Nano, m[2])
			if err != nil || at.Before(prev) {
				t.Errorf("merged line %q out of time order (after %v)", line, prev)
			}
			prev = at
		}
		if len(per) < 3 {
			t.Errorf("merged logs of talk show instances %v, want every replica", per)
		}
		for in, n := range per {
			if n != 4 {
				t.Errorf("--tail 4 gave %s %d lines", in, n)
			}
		}
	})

	t.Run("stats and top show every replica", func(t *testing.T) {
		out := admin(t, l, "stats", "talk")
		for node, in := range byNode {
			if !regexp.MustCompile(`(?m)^default\s+` + in.Metadata.Name + `\s+` + node + `\s+\d+\.\d\s+[\d.]+ \S+\s+96\.0 MiB\s+\d+\s`).MatchString(out) {
				t.Errorf("stats has no row for %s on %s with a 96 MiB limit:\n%s", in.Metadata.Name, node, out)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		lines := streamLines(t, l.AdminCommand(ctx, "top", "-w", "--interval", "200ms", byNode["n1"].Metadata.Name))
		tables := 0
		waitLine(t, lines, 20*time.Second, "three tables from top -w", func(line string) bool {
			if strings.HasPrefix(line, "NAMESPACE") {
				tables++
			}
			return tables == 3
		})
	})

	t.Run("exec returns the remote exit code", func(t *testing.T) {
		name := byNode["n2"].Metadata.Name
		for cmd, want := range map[string]int{"exit 7": 7, "true": 0, "nosuchcommand": 127} {
			out, code := adminCode(t, l, "exec", name, "--", "sh", "-c", cmd)
			if code != want {
				t.Errorf("exec sh -c %q: exit %d (%s), want %d", cmd, code, out, want)
			}
		}
		if out, code := adminCode(t, l, "exec", name, "nosuchcommand"); code != 127 {
			t.Errorf("exec of a command not found: exit %d (%s), want 127", code, out)
		}
		if got := admin(t, l, "exec", name, "hostname"); strings.TrimSpace(got) != name {
			t.Errorf("exec hostname on n2: %q, want %s", got, name)
		}
		// A plain exec goes out while the CLI starts (internal/cli/preexec):
		// it runs once, and its event says who ran what.
		if out, code := adminCode(t, l, "exec", name, "--", "sh", "-c", "echo once >> /tmp/ran; exit 6"); code != 6 {
			t.Errorf("exec echo once: exit %d (%s), want 6", code, out)
		}
		if got := admin(t, l, "exec", name, "cat", "/tmp/ran"); got != "once\n" {
			t.Errorf("the exec ran %d times: /tmp/ran holds %q", strings.Count(got, "once"), got)
		}
		ranOnce := regexp.MustCompile(`\S+ from [0-9.]+ ran \["sh" "-c" "echo once >> /tmp/ran; exit 6"\] on node n2`)
		eventually(t, 10*time.Second, "the exec's event, saying who ran what", func() bool {
			out, _ := l.AdminCommand(t.Context(), "events").Output()
			return len(ranOnce.FindAll(out, -1)) == 1
		})
		// -i: stdin goes to the command, and its end closes the command's.
		in := l.AdminCommand(t.Context(), "exec", "-i", name, "--", "tr", "a-z", "A-Z")
		in.Stdin = strings.NewReader(strings.Repeat("hello\n", 10000))
		if got, err := in.Output(); err != nil || string(got) != strings.Repeat("HELLO\n", 10000) {
			t.Errorf("exec -i tr: %v, %d bytes back", err, len(got))
		}
		// Every agent keeps a tunnel to every server: the second reaches n2 too.
		got, err := l.AdminCommandVia(t.Context(), l.Servers[1], "exec", name, "--", "sh", "-c", "hostname; exit 4").Output()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 4 || strings.TrimSpace(string(got)) != name {
			t.Errorf("exec through the second server: %v, %q; want exit 4 and %s", err, got, name)
		}
	})

	t.Run("exec -it resizes the terminal", func(t *testing.T) {
		execInPty(t, l, byNode["n3"].Metadata.Name)
	})

	t.Run("cp of 50 MB keeps its sha256 both ways", func(t *testing.T) {
		name := byNode["n1"].Metadata.Name
		dir := t.TempDir()
		src := filepath.Join(dir, "big")
		data := make([]byte, 50<<20)
		_, _ = rand.Read(data)
		check(t, os.WriteFile(src, data, 0o644))
		sum := sha256.Sum256(data)
		want := hex.EncodeToString(sum[:])
		t0 := time.Now()
		admin(t, l, "cp", src, name+":/tmp/")
		in := time.Since(t0)
		if got := strings.Fields(admin(t, l, "exec", name, "sha256sum", "/tmp/big")); len(got) == 0 || got[0] != want {
			t.Fatalf("sha256 in the instance %v, want %s", got, want)
		}
		back := filepath.Join(dir, "back")
		t0 = time.Now()
		admin(t, l, "cp", name+":/tmp/big", back)
		out := time.Since(t0)
		b, err := os.ReadFile(back)
		check(t, err)
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != want {
			t.Fatalf("sha256 of the copy back differs (%d bytes)", len(b))
		}
		t.Logf("timing: cp of 50 MB into an instance on n1 %v, out of it %v", in.Round(time.Millisecond), out.Round(time.Millisecond))
		if _, code := adminCode(t, l, "cp", name+":/no/such/file", back); code == 0 {
			t.Error("cp of a missing file succeeded")
		}
	})

	t.Run("port-forward carries HTTP", func(t *testing.T) {
		name := byNode["n2"].Metadata.Name
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		pf := l.AdminCommand(ctx, "port-forward", name, ":8080")
		lines := streamLines(t, pf)
		var addr string
		waitLine(t, lines, 20*time.Second, "port-forward to listen", func(line string) bool {
			if m := regexp.MustCompile(`^Forwarding from (\S+) -> `).FindStringSubmatch(line); m != nil {
				addr = m[1]
			}
			return addr != ""
		})
		// A connection per request: the forward's session, not each of
		// them, is recorded.
		hc := &http.Client{Transport: &http.Transport{DialContext: dialIn(s1), DisableKeepAlives: true}, Timeout: 10 * time.Second}
		for range 3 {
			resp, err := hc.Get("http://" + addr + "/")
			check(t, err)
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.TrimSpace(string(body)) != name {
				t.Fatalf("through port-forward: %q, want %s's page", body, name)
			}
		}
		forwarded := regexp.MustCompile(`instance/` + regexp.QuoteMeta(name) + `\s+PortForward\s+\S+ from [0-9.]+ began forwarding to port 8080 on node n2`)
		var out []byte
		eventually(t, 10*time.Second, "the port-forward's event", func() bool {
			out, _ = l.AdminCommand(t.Context(), "events").Output()
			return forwarded.Match(out)
		})
		if n := len(forwarded.FindAll(out, -1)); n != 1 {
			t.Errorf("3 connections through port-forward left %d events, want 1 for the session:\n%s", n, out)
		}
	})

	t.Run("a node certificate reaches no other node's instance", func(t *testing.T) {
		url, _, _ := l.AdminCredentials()
		nc, err := client.LoadNodeCredentials(filepath.Join(l.Host("n1").DataDir, "node"))
		check(t, err)
		tc, err := nc.TLSConfig()
		check(t, err)
		n1, err := client.New(url, client.WithHTTPClient(&http.Client{Transport: &http.Transport{TLSClientConfig: tc, DialContext: dialIn(s1)}}))
		check(t, err)
		other := byNode["n2"].Metadata.Name
		ctx := t.Context()
		for what, do := range map[string]func() error{
			"exec": func() error {
				_, err := n1.Exec(ctx, "default", other, client.ExecOptions{Command: []string{"id"}})
				return err
			},
			"logs": func() error {
				return n1.InstanceLogs(ctx, "default", other, client.LogOptions{}, io.Discard, io.Discard)
			},
			"cp from": func() error { _, err := n1.CopyFrom(ctx, "default", other, "/etc/passwd"); return err },
			"cp to":   func() error { return n1.CopyTo(ctx, "default", other, "/tmp", strings.NewReader("")) },
		} {
			var ce *client.Error
			if err := do(); !errors.As(err, &ce) || ce.Status != http.StatusForbidden || !errdefs.IsForbidden(err) {
				t.Errorf("%s of %s on n2 with n1's certificate: %v, want 403", what, other, err)
			}
		}
	})

	// Last: it kills n1's replica.
	t.Run("attach prints output until the container exits, and its code", func(t *testing.T) {
		in := byNode["n1"]
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		cmd := l.AdminCommand(ctx, "attach", in.Metadata.Name)
		lines := streamLines(t, cmd)
		waitLine(t, lines, 20*time.Second, "attached output", func(line string) bool {
			return strings.HasPrefix(line, in.Metadata.Name+" ") && strings.Contains(line, " line ")
		})
		_, err := l.Host("n1").Run("container", "kill", in.Status.ContainerID)
		check(t, err)
		for range lines {
		}
		err = cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 137 {
			t.Fatalf("attach ended with %v, want exit 137 (the container's, killed)", err)
		}
	})
}

// bootRE reads "[prefix] hostname boot value" lines.
var bootRE = regexp.MustCompile(`^\[([^\]]+)\] (\S+) boot (\S+)$`)

// admin runs berth as the LAN's admin and returns its stdout; a failure fails the test.
func admin(t *testing.T, l *lan.LAN, args ...string) string {
	t.Helper()
	out, code := adminCode(t, l, args...)
	if code != 0 {
		t.Fatalf("berth %s: exit %d: %s", strings.Join(args, " "), code, out)
	}
	return out
}

// logsOf runs berth logs with args as the LAN's admin and returns its
// stdout and stderr merged, as a terminal shows them.
func logsOf(t *testing.T, l *lan.LAN, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := l.AdminCommand(ctx, append([]string{"logs"}, args...)...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Fatalf("berth logs %s: %v: %s", strings.Join(args, " "), err, &out)
	}
	return out.String()
}

// adminCode runs berth as the LAN's admin and returns its stdout (and
// stderr after it, on failure) and exit code.
func adminCode(t *testing.T, l *lan.LAN, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := l.AdminCommand(ctx, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &ee):
		return out.String() + errb.String(), ee.ExitCode()
	}
	t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	return "", -1
}

// streamLines starts cmd and sends its stdout line by line; it is killed
// when the test ends.
func streamLines(t *testing.T, cmd *exec.Cmd) <-chan string {
	t.Helper()
	stdout, err := cmd.StdoutPipe()
	check(t, err)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	check(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s stderr: %s", strings.Join(cmd.Args, " "), &errb)
		}
	})
	ch := make(chan string, 1024)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ch <- sc.Text()
		}
	}()
	return ch
}

// waitLine reads lines until done says so, failing after timeout.
func waitLine(t *testing.T, lines <-chan string, timeout time.Duration, what string, done func(string) bool) {
	t.Helper()
	deadline := time.After(timeout)
	var last []string
	for {
		select {
		case line, ok := <-lines:
			if !ok {
				t.Fatalf("waiting for %s: the stream ended; last lines %q", what, last)
			}
			last = append(last, line)
			if len(last) > 5 {
				last = last[1:]
			}
			if done(line) {
				return
			}
		case <-deadline:
			t.Fatalf("no %s within %v; last lines %q", what, timeout, last)
		}
	}
}

// dialIn dials from inside the network namespace at path: the socket
// is made there, on a thread that is let go of with its goroutine.
func dialIn(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			goruntime.LockOSThread() // never unlocked: the thread ends with the goroutine
			f, err := os.Open(path)
			if err != nil {
				ch <- result{err: err}
				return
			}
			defer f.Close()
			if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
				ch <- result{err: fmt.Errorf("setns %s: %w", path, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// adminAPI is an HTTP client of the LAN's first server with the admin
// token, dialling from its namespace.
type adminClient struct {
	hc    *http.Client
	url   string
	token string
}

func adminAPI(t *testing.T, l *lan.LAN) *adminClient {
	t.Helper()
	url, token, caFile := l.AdminCredentials()
	pem, err := os.ReadFile(caFile)
	check(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, DialContext: dialIn(l.Servers[0].Netns)}
	return &adminClient{hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}, url: url, token: token}
}

// scrape reads and parses the server's metrics, or node's agent's
// (through the server) when node is set.
func scrape(t *testing.T, a *adminClient, node string) map[string]*dto.MetricFamily {
	t.Helper()
	path := "/metrics"
	if node != "" {
		path = "/v1/nodes/" + node + "/metrics"
	}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.url+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	check(t, err)
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", path, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: the Prometheus text parser refuses it: %v", path, err)
	}
	return fams
}

// metricValue sums a family's samples whose label has value (all with
// an empty label); a histogram counts its observations.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name, label, value string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	var sum float64
	for _, m := range f.GetMetric() {
		if label != "" && labelOf(m, label) != value {
			continue
		}
		switch {
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

func labelOf(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// execInPty runs berth exec -it in a terminal of the test's making,
// resizes it, and wants stty inside to see each size, then the shell's
// exit code as berth's.
func execInPty(t *testing.T, l *lan.LAN, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := l.AdminCommand(ctx, "exec", "-it", name, "sh")
	term := startTerminal(t, cmd, 30, 100)
	waitScreen := func(what string, re *regexp.Regexp) {
		t.Helper()
		eventually(t, 20*time.Second, what, func() bool { return term.shows(re) })
	}
	type_ := term.type_
	type_("echo T=$TERM; stty size | sed 's/^/SIZE=/'\r")
	waitScreen("the first size", regexp.MustCompile(`SIZE=30 100`))
	waitScreen("TERM passed", regexp.MustCompile(`T=xterm-test`))
	term.resize(40, 120) // the kernel sends berth SIGWINCH
	// The resize travels while the shell waits; ask until it shows.
	eventually(t, 20*time.Second, "the new size", func() bool {
		type_("stty size | sed 's/^/SIZE=/'\r")
		time.Sleep(200 * time.Millisecond)
		return term.shows(regexp.MustCompile(`SIZE=40 120`))
	})
	type_("exit 5\r")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 5 {
		t.Fatalf("exec -it exited %v, want 5; screen %q", err, term)
	}
}

// TestRemoteOperationsInBerthUp checks that in berth up, where the agent
// and the server are one process, logs and exec still go through the API
// and the agent's tunnel.
func TestRemoteOperationsInBerthUp(t *testing.T) {
	c := startCluster(t, "--no-network")
	c.ok("run", "--name", "echoer", "--memory", "16Mi", "demo/busybox:1", "sh", "-c", "echo ready; exec sleep 1d")
	in := c.waitRunning("echoer", 1)[0]
	eventually(t, 20*time.Second, "the instance's first line", func() bool {
		out, _, code := c.run("logs", "echoer")
		return code == 0 && out == "["+in.Metadata.Name+"] ready\n"
	})
	// A bare name is resolved by the server; one with its kind, by the CLI.
	for _, target := range []string{"echoer", "service/echoer", "instance/" + in.Metadata.Name} {
		if out := c.ok("exec", target, "--", "hostname"); strings.TrimSpace(out) != in.Metadata.Name {
			t.Fatalf("exec %s hostname: %q, want %s", target, out, in.Metadata.Name)
		}
	}
	if _, errOut, code := c.run("exec", "nosuch", "true"); code == 0 || !strings.Contains(errOut, `no instance, service or job named "nosuch"`) {
		t.Fatalf("exec in nosuch: exit %d, %q; want an error naming what was looked for", code, errOut)
	}
	if _, _, code := c.run("exec", in.Metadata.Name, "sh", "-c", "exit 9"); code != 9 {
		t.Fatalf("exec exit 9: exit %d", code)
	}
	// The event is written beside the exec: it lands by the time the exec's stream ends.
	var out string
	eventually(t, 10*time.Second, "the exec's event", func() bool {
		out, _, _ = c.run("events")
		return strings.Contains(out, "Exec") && strings.Contains(out, `["sh" "-c" "exit 9"]`)
	})
	// A copy out of the instance is recorded as one into it is.
	c.ok("exec", in.Metadata.Name, "--", "sh", "-c", "echo secret > /tmp/key")
	dst := filepath.Join(t.TempDir(), "key")
	c.ok("cp", in.Metadata.Name+":/tmp/key", dst)
	if b, err := os.ReadFile(dst); err != nil || string(b) != "secret\n" {
		t.Fatalf("cp of /tmp/key out: %q, %v; want secret", b, err)
	}
	eventually(t, 10*time.Second, "the copy's event", func() bool {
		out, _, _ = c.run("events")
		return strings.Contains(out, "CopyOut") && strings.Contains(out, "copied /tmp/key out of the instance")
	})
}
