package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/testing/lan"
)

// member is one `berth server` of the bench's cluster.
type member struct {
	name, dir, url string
	log            string // the server's output
	proc           *proc
	sampler        *sampler
	passes         float64 // its controller passes as the last phase ended
}

// members are the bench's servers, the first the one the probe, the
// appliers and the profiles talk to.
var members []*member

// caFile and adminToken are the cluster's CA certificate and admin token.
var caFile, adminToken string

// startServers starts n servers in work as an operator would (berth
// server --help): one alone makes its own CA; several share the first's,
// made by "berth server init", and name each other with --peers.
func startServers(bin, work string, n int, extra []string) error {
	var peers []string
	for i := range n {
		m := &member{name: fmt.Sprintf("s%d", i+1), dir: filepath.Join(work, "srv")}
		if i > 0 {
			m.dir += strconv.Itoa(i + 1)
		}
		members = append(members, m)
		peers = append(peers, m.name+"="+freeAddr())
	}
	if n > 1 {
		if out, err := exec.Command(bin, "--data-dir", members[0].dir, "server", "init").CombinedOutput(); err != nil {
			return fmt.Errorf("berth server init: %w\n%s", err, out)
		}
		for _, m := range members[1:] {
			if err := lan.ShareSecrets(members[0].dir, m.dir); err != nil {
				return err
			}
		}
	}
	for i, m := range members {
		addr := freeAddr()
		m.url = "https://" + addr
		_, peer, _ := strings.Cut(peers[i], "=")
		args := []string{"--data-dir", m.dir, "server", "--name", m.name, "--listen", addr, "--peer-listen", peer}
		if n > 1 {
			args = append(args, "--peers", strings.Join(peers, ","))
		}
		log := filepath.Join(work, "server.log")
		if i > 0 {
			log = filepath.Join(work, "server-"+m.name+".log")
		}
		p, err := start(log, bin, append(args, extra...)...)
		if err != nil {
			return fmt.Errorf("server %s: %w", m.name, err)
		}
		m.proc, m.log = p, log
		m.sampler = newSampler(p.cmd.Process.Pid, filepath.Join(m.dir, "etcd"))
	}
	// Every server writes the CA and the admin token; the one that made
	// the cluster's first join token writes it.
	if err := waitFile(filepath.Join(members[0].dir, "tls", "token"), time.Minute, members[0].proc, members[0].log); err != nil {
		return err
	}
	caFile = filepath.Join(members[0].dir, "tls", "ca.crt")
	adminToken = readFile(filepath.Join(members[0].dir, "tls", "token"))
	return nil
}

// joinToken is the cluster's first join token, from the data dir of the
// server that made it.
func joinToken(d time.Duration) (string, error) {
	for deadline := time.Now().Add(d); ; time.Sleep(100 * time.Millisecond) {
		for _, m := range members {
			if tok := readFile(filepath.Join(m.dir, "join-token")); tok != "" {
				return tok, nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no server wrote a join token in %v", d)
		}
	}
}

// serverURLs are the servers' URLs for the agents, comma separated.
func serverURLs() string {
	var urls []string
	for _, m := range members {
		urls = append(urls, m.url)
	}
	return strings.Join(urls, ",")
}

// serverMetrics reads the figures of m's /metrics the cluster line
// shows: whether its etcd member leads, the leader changes it saw, its
// open watches and its controller passes (only the controllers' leader
// makes any).
func serverMetrics(m *member) (etcdLeader bool, changes, watches, passes float64, err error) {
	b, err := adminGet(m.url, caFile, adminToken, "/metrics")
	if err != nil {
		return false, 0, 0, 0, err
	}
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 2 || strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		switch {
		case strings.HasPrefix(line, "etcd_server_is_leader "):
			etcdLeader = v == 1
		case strings.HasPrefix(line, "etcd_server_leader_changes_seen_total "):
			changes = v
		case strings.HasPrefix(line, "berth_api_watches{"):
			watches += v
		case strings.HasPrefix(line, "berth_controller_passes_total{"):
			passes += v
		}
	}
	return etcdLeader, changes, watches, passes, nil
}

// clusterLine says, with several servers, what each cost since t0 (RSS,
// CPU, etcd db, open watches), their sum and the busiest, which server's
// etcd member leads and which ran the controllers (made passes) in the
// phase; empty with one server, whose figures the phase's line has.
func clusterLine(t0 time.Time) string {
	if len(members) < 2 {
		return ""
	}
	var parts, ctrl []string
	var rss int64
	var cpu, top float64
	busiest, etcdLeader, changes := "none", "none", 0.0
	for _, m := range members {
		s := m.sampler
		c := s.cpuSince(t0)
		rss += s.rss()
		cpu += c
		if c > top {
			top, busiest = c, m.name
		}
		lead, ch, watches, passes, err := serverMetrics(m)
		if err != nil {
			parts = append(parts, fmt.Sprintf("%s RSS %d MiB, CPU %.2f cores (%.1f s), db %d MiB, metrics unknown: %v",
				m.name, s.rss()>>20, c, s.cpuSecondsSince(t0), s.dbSize()>>20, err))
			continue
		}
		if lead {
			etcdLeader = m.name
		}
		changes = max(changes, ch)
		if passes > m.passes {
			ctrl = append(ctrl, fmt.Sprintf("%s %.0f", m.name, passes-m.passes))
		}
		m.passes = passes
		parts = append(parts, fmt.Sprintf("%s RSS %d MiB, CPU %.2f cores (%.1f s), db %d MiB, %.0f watches",
			m.name, s.rss()>>20, c, s.cpuSecondsSince(t0), s.dbSize()>>20, watches))
	}
	if len(ctrl) == 0 {
		ctrl = []string{"none"}
	}
	return fmt.Sprintf("servers: %s | sum RSS %d MiB, CPU %.2f cores, busiest %s | etcd leader %s (leader changes seen %.0f), controller passes by server: %s",
		strings.Join(parts, "; "), rss>>20, cpu, busiest, etcdLeader, changes, strings.Join(ctrl, ", "))
}

// clusterPeaks says each server's peak RSS and etcd db, with several.
func clusterPeaks() string {
	if len(members) < 2 {
		return ""
	}
	var parts []string
	for _, m := range members {
		parts = append(parts, fmt.Sprintf("%s peak RSS %d MiB, etcd db %d MiB", m.name, m.sampler.peakRSS()>>20, m.sampler.dbSize()>>20))
	}
	return "servers: " + strings.Join(parts, "; ")
}

// passCountsAll sums the controller passes by cause over the servers
// (the controllers run on one, which may change); nil when none answers.
func passCountsAll() map[string]float64 {
	var sum map[string]float64
	for _, m := range members {
		counts := passCounts(m.url, caFile, adminToken)
		if counts != nil && sum == nil {
			sum = map[string]float64{}
		}
		for cause, v := range counts {
			sum[cause] += v
		}
	}
	return sum
}
