package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/leader"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// haServer is one `berth server` process of a test cluster.
type haServer struct {
	name, dataDir   string
	api, etcd, peer string // host:port
	args            []string
	cmd             *exec.Cmd
	killed          bool
}

// haCluster is three `berth server` processes on their own loopback
// addresses, forming one embedded etcd cluster.
type haCluster struct {
	t       *testing.T
	servers []*haServer
	token   string
	caFile  string
}

func freeAddr(t *testing.T, host string) string {
	t.Helper()
	l, err := net.Listen("tcp", host+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startHACluster starts the three servers, each with the extra flags given.
func startHACluster(t *testing.T, extra ...string) *haCluster {
	c := &haCluster{t: t}
	var peers []string
	for i := range 3 {
		host := fmt.Sprintf("127.0.0.%d", 31+i)
		s := &haServer{name: fmt.Sprintf("s%d", i+1), dataDir: t.TempDir(),
			api: freeAddr(t, host), etcd: freeAddr(t, host), peer: freeAddr(t, host)}
		c.servers = append(c.servers, s)
		peers = append(peers, s.name+"="+s.peer)
	}
	// One server makes the cluster's CA and seal key; the others get copies.
	if out, err := exec.Command(berthBin, "--data-dir", c.servers[0].dataDir, "server", "init").CombinedOutput(); err != nil {
		t.Fatalf("berth server init: %v\n%s", err, out)
	}
	for _, s := range c.servers[1:] {
		if err := lan.ShareSecrets(c.servers[0].dataDir, s.dataDir); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range c.servers {
		s.args = []string{"--data-dir", s.dataDir, "server", "-v", "--name", s.name,
			"--listen", s.api, "--peer-listen", s.peer, "--etcd-client-listen", s.etcd,
			"--peers", strings.Join(peers, ",")}
		s.args = append(s.args, extra...)
		c.start(s)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			if !s.killed {
				_ = s.cmd.Process.Kill()
				_ = s.cmd.Wait()
			}
			if t.Failed() {
				b, _ := os.ReadFile(filepath.Join(s.dataDir, "server.log"))
				t.Logf("%s's log:\n%s", s.name, b)
			}
		}
	})
	// Every server writes the cluster's token and CA once it has them.
	tls := filepath.Join(c.servers[0].dataDir, "tls")
	eventually(t, 30*time.Second, "the cluster's token", func() bool {
		b, err := os.ReadFile(filepath.Join(tls, "token"))
		c.token = strings.TrimSpace(string(b))
		return err == nil && c.token != ""
	})
	c.caFile = filepath.Join(tls, "ca.crt")
	for _, s := range c.servers {
		eventually(t, 30*time.Second, "the API of "+s.name, func() bool {
			_, _, code := c.run(s, "get", "nodes")
			return code == 0
		})
	}
	return c
}

// start runs server s's berth process, its output appended to its log.
func (c *haCluster) start(s *haServer) {
	c.t.Helper()
	s.cmd = exec.Command(berthBin, s.args...)
	log, err := os.OpenFile(filepath.Join(s.dataDir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	defer log.Close()
	s.cmd.Stdout, s.cmd.Stderr = log, log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := s.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	s.killed = false
}

// run runs berth against server s's API over TCP.
func (c *haCluster) run(s *haServer, args ...string) (string, string, int) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	full := append([]string{"--server", "https://" + s.api, "--token", c.token, "--ca-file", c.caFile}, args...)
	cmd := exec.CommandContext(ctx, berthBin, full...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return out.String(), errb.String(), ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), 0
}

func (c *haCluster) etcd(endpoints ...string) *clientv3.Client {
	c.t.Helper()
	if len(endpoints) == 0 {
		for _, s := range c.servers {
			endpoints = append(endpoints, "http://"+s.etcd)
		}
	}
	cl, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// etcdLeader is the server whose etcd member leads, with its member ID.
func (c *haCluster) etcdLeader(cl *clientv3.Client) (*haServer, uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, s := range c.servers {
		if s.killed {
			continue
		}
		st, err := cl.Status(ctx, "http://"+s.etcd)
		if err == nil && st.Leader == st.Header.MemberId {
			return s, st.Header.MemberId
		}
	}
	return nil, 0
}

// leadBoth makes the controllers' leader the etcd leader too, so that one
// kill takes both, and returns it with its term.
func (c *haCluster) leadBoth() (*haServer, leader.Term) {
	c.t.Helper()
	cl := c.etcd()
	ctx := context.Background()
	term, err := leader.Leader(ctx, cl, "/berth/leader/controller")
	if err != nil {
		c.t.Fatal(err)
	}
	victim := c.server(term.Identity)
	eventually(c.t, 15*time.Second, "etcd leadership on "+victim.name, func() bool {
		s, _ := c.etcdLeader(cl)
		if s == nil || s == victim {
			return s == victim
		}
		st, err := cl.Status(ctx, "http://"+victim.etcd)
		if err != nil {
			return false
		}
		lc := c.etcd("http://" + s.etcd)
		mctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = lc.MoveLeader(mctx, st.Header.MemberId)
		return err == nil
	})
	return victim, term
}

func (c *haCluster) server(name string) *haServer {
	for _, s := range c.servers {
		if s.name == name {
			return s
		}
	}
	c.t.Fatalf("no server %q", name)
	return nil
}

func (c *haCluster) instancesOf(s *haServer, owner string) int {
	out, _, code := c.run(s, "get", "instances", "-o", "json")
	if code != 0 {
		return -1
	}
	var list []api.Instance
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for _, in := range list {
		if in.Spec.Owner.Name == owner {
			n++
		}
	}
	return n
}

// TestKillTheLeadingServer kills, with SIGKILL, the server that leads both
// etcd and the controllers: the other two take the writes within seconds,
// and the controllers, now on one of them, carry out a scale.
func TestKillTheLeadingServer(t *testing.T) {
	c := startHACluster(t)
	spec := filepath.Join(t.TempDir(), "web.yaml")
	if err := os.WriteFile(spec, []byte("kind: Service\nname: web\nreplicas: 1\ntemplate:\n  image: demo/busybox:1\n  command: [sleep, 1d]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, code := c.run(c.servers[0], "apply", "-f", spec); code != 0 {
		t.Fatalf("apply: exit %d: %s%s", code, out, errOut)
	}
	// The controllers make the instance, whichever server runs them; every
	// server's API shows it.
	for _, s := range c.servers {
		eventually(t, 15*time.Second, "web's instance through "+s.name, func() bool { return c.instancesOf(s, "web") == 1 })
	}

	victim, term := c.leadBoth()
	ctx := context.Background()

	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = victim.cmd.Wait()
	victim.killed = true
	var other *haServer
	for _, s := range c.servers {
		if !s.killed {
			other = s
			break
		}
	}

	// A write through another server's API succeeds within seconds: etcd
	// elects a new leader among the two left.
	eventually(t, 15*time.Second, "berth scale through "+other.name, func() bool {
		_, _, code := c.run(other, "scale", "web=3")
		return code == 0
	})
	wrote := time.Since(killed)
	// The controllers move to a surviving server and carry the scale out.
	eventually(t, 20*time.Second, "3 instances of web", func() bool { return c.instancesOf(other, "web") == 3 })
	scaled := time.Since(killed)
	t.Logf("killed %s (etcd and controller leader): writes again after %v, scale carried out after %v",
		victim.name, wrote.Round(time.Millisecond), scaled.Round(time.Millisecond))
	if wrote > 10*time.Second {
		t.Errorf("writes took %v to come back, want a few seconds", wrote)
	}
	term2, err := leader.Leader(ctx, c.etcd("http://"+other.etcd), "/berth/leader/controller")
	if err != nil || term2.Identity == victim.name || term2.Revision <= term.Revision {
		t.Errorf("controller leader after the kill: %+v, %v", term2, err)
	}
	// Both survivors answer.
	for _, s := range c.servers {
		if !s.killed {
			if _, errOut, code := c.run(s, "get", "services"); code != 0 {
				t.Errorf("%s: get services: exit %d: %s", s.name, code, errOut)
			}
		}
	}
}
