package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/network/netns"
)

// Each replica serves its own name, so answers say who answered; it is
// healthy while /www/health exists.
const netWebYAML = `kind: Service
name: web
replicas: 3
template:
  image: demo/busybox:1
  command: ["sh", "-c", "hostname > /www/index.html; echo ok > /www/health; exec httpd -f -p 80 -h /www"]
  ports: [{name: http, container: 80, host: 8080}]
  health: {http: {port: 80, path: /health}, interval: 300ms, timeout: 500ms, failures: 1}
  resources: {cpu: 0.1, memory: 32Mi}
`

// healthy waits for n running, healthy instances of owner with addresses.
func (c *cluster) healthy(owner string, n int) []api.Instance {
	c.t.Helper()
	var got []api.Instance
	eventually(c.t, 60*time.Second, fmt.Sprintf("%d healthy instances of %s", n, owner), func() bool {
		got = got[:0]
		for _, in := range c.ownedBy(owner) {
			if in.Status.Phase == api.PhaseRunning && in.Status.Healthy && in.Status.IP != "" {
				got = append(got, in)
			}
		}
		return len(got) == n && len(c.ownedBy(owner)) == n
	})
	return got
}

// ask makes n requests to url from inside the client container and
// counts the answers ("FAIL" for a request that got none).
func (c *cluster) ask(n int, url string) map[string]int {
	c.t.Helper()
	out := c.ok("exec", "client", "sh", "-c",
		fmt.Sprintf("for i in $(seq %d); do timeout 5 wget -qO- %s 2>&1 || echo FAIL; done", n, url))
	got := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			got[line]++
		}
	}
	return got
}

// backends lists the addresses the node's nftables send the VIP's traffic to.
func (c *cluster) backends() string {
	c.t.Helper()
	out, err := c.inNetns("nft", "list", "map", "ip", "berth-svc", "backends").CombinedOutput()
	if err != nil {
		c.t.Fatalf("nft list map backends: %v: %s", err, out)
	}
	return string(out)
}

func (c *cluster) ruleset() string {
	c.t.Helper()
	out, err := c.inNetns("nft", "list", "ruleset").CombinedOutput()
	if err != nil {
		c.t.Fatalf("nft list ruleset: %v: %s", err, out)
	}
	return string(out)
}

// addresses lists the pod addresses the node's IPAM holds.
func (c *cluster) addresses() []string {
	c.t.Helper()
	ents, err := os.ReadDir(c.dataDir + "/net/ipam")
	if err != nil {
		c.t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") { // .released orders reuse; it holds no address
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out
}

func names(insts []api.Instance) []string {
	var out []string
	for _, in := range insts {
		out = append(out, in.Metadata.Name)
	}
	sort.Strings(out)
	return out
}

// hostGet fetches url from the cluster's namespace, as a process on the
// node would: the socket is made in that namespace.
func (c *cluster) hostGet(addr string) (string, error) {
	var body string
	err := netns.Do(c.netns, func() error {
		conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
		if err != nil {
			return err
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
		fmt.Fprintf(conn, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", addr)
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var sb strings.Builder
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			sb.WriteString(sc.Text())
		}
		body = strings.TrimSpace(sb.String())
		return nil
	})
	return body, err
}

func TestServiceVIPDNSAndPorts(t *testing.T) {
	c := startCluster(t)
	if _, errOut, code := c.applyYAML(netWebYAML); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	c.ok("run", "--name", "client", "demo/busybox:1", "--", "sleep", "1d") // "--" only separates, as kubectl users write it
	web := c.healthy("web", 3)

	var svc api.Service
	if err := json.Unmarshal([]byte(c.ok("get", "service", "web", "-o", "json")), &svc); err != nil {
		t.Fatal(err)
	}
	if net.ParseIP(svc.Status.VIP) == nil {
		t.Fatalf("service web has no VIP: %+v", svc.Status)
	}
	if wide := c.ok("get", "service", "web", "-o", "wide"); !strings.Contains(wide, svc.Status.VIP) || !strings.Contains(wide, "web.default.berth") {
		t.Errorf("get service -o wide does not show the VIP and DNS name:\n%s", wide)
	}

	// By name, over the VIP: every replica answers, nothing fails.
	got := c.ask(30, "http://web.default.berth/")
	for _, name := range names(web) {
		if got[name] == 0 {
			t.Errorf("replica %s never answered: %v", name, got)
		}
	}
	if got["FAIL"] > 0 || len(got) != 3 {
		t.Errorf("30 requests to web.default.berth: %v", got)
	}
	// A name the cluster does not have fails at once, not after a timeout.
	t0 := time.Now()
	if _, _, code := c.run("exec", "client", "nslookup", "nope.default.berth"); code == 0 {
		t.Error("nope.default.berth resolved")
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("an unknown name took %v to fail", d)
	}

	// Published on the node, loopback included.
	body, err := c.hostGet("127.0.0.1:8080")
	if err != nil || !strings.HasPrefix(body, "web-") {
		t.Errorf("published port 8080 from the node: %q, %v", body, err)
	}
	// A second service cannot take the same host port.
	if _, errOut, code := c.applyYAML(strings.Replace(netWebYAML, "name: web", "name: web2", 1)); code == 0 ||
		!strings.Contains(errOut, "ports[0].host") || !strings.Contains(errOut, "default/web") {
		t.Errorf("a second service on 8080: exit %d, %s", code, errOut)
	}

	// Scaled to 5: all five answer.
	c.ok("scale", "web=5")
	web = c.healthy("web", 5)
	got = c.ask(50, "http://web.default.berth/")
	for _, name := range names(web) {
		if got[name] == 0 {
			t.Errorf("after scale to 5, replica %s never answered: %v", name, got)
		}
	}
	if got["FAIL"] > 0 {
		t.Errorf("after scale to 5: %v", got)
	}

	// Killed: its address leaves the VIP, and no request fails once it has.
	victim := web[0]
	pid := c.containers("web")[victim.Status.ContainerID]
	if pid == 0 {
		t.Fatalf("no running container %s for %s", victim.Status.ContainerID, victim.Metadata.Name)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatalf("kill %s (pid %d): %v", victim.Metadata.Name, pid, err)
	}
	eventually(t, 10*time.Second, "the killed replica's address to leave the VIP", func() bool {
		return !strings.Contains(c.backends(), victim.Status.IP+" . 80")
	})
	if got := c.ask(20, "http://web.default.berth/"); got["FAIL"] > 0 {
		t.Errorf("requests failed after the killed replica left the VIP: %v", got)
	}
	web = c.healthy("web", 5)

	// Unhealthy: out of the VIP until healthy again (here, after its restart).
	sick := web[1]
	c.ok("exec", sick.Metadata.Name, "rm", "/www/health")
	eventually(t, 10*time.Second, "the unhealthy replica's address to leave the VIP", func() bool {
		return !strings.Contains(c.backends(), sick.Status.IP+" . 80")
	})
	eventually(t, 30*time.Second, "the replica to be healthy and back in the VIP", func() bool {
		for _, in := range c.ownedBy("web") {
			if in.Metadata.Name == sick.Metadata.Name {
				return in.Status.Healthy && in.Status.IP != "" && strings.Contains(c.backends(), in.Status.IP+" . 80")
			}
		}
		return false
	})
	c.healthy("web", 5)

	// berth up killed and started again: the same data plane, no address leaked.
	before, addrs := c.ruleset(), c.addresses()
	if len(addrs) != 6 {
		t.Errorf("%d addresses held for 6 containers: %v", len(addrs), addrs)
	}
	c.kill()
	c.start()
	eventually(t, 20*time.Second, "the restarted node's data plane to settle", func() bool {
		return c.ruleset() == before
	})
	if after := c.addresses(); strings.Join(after, ",") != strings.Join(addrs, ",") {
		t.Errorf("addresses after restart %v, before %v", after, addrs)
	}
	// Held steady, not just passing through the same state.
	if got := c.ask(20, "http://web.default.berth/"); got["FAIL"] > 0 {
		t.Errorf("requests failed after the restart: %v", got)
	}
	if r := c.ruleset(); r != before {
		t.Errorf("ruleset changed after the restart:\nbefore:\n%s\nafter:\n%s", before, r)
	}

	// Removed: its VIP, endpoints, name and addresses go.
	c.ok("rm", "web")
	eventually(t, 20*time.Second, "web's containers and addresses to go", func() bool {
		return len(c.ownedBy("web")) == 0 && len(c.addresses()) == 1
	})
	eventually(t, 10*time.Second, "web's VIP to leave the tables", func() bool {
		return !strings.Contains(c.ruleset(), svc.Status.VIP+" ")
	})
	if _, _, code := c.run("exec", "client", "nslookup", "web.default.berth"); code == 0 {
		t.Error("web.default.berth still resolves after rm")
	}
}
