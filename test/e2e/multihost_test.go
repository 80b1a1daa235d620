package e2e

import (
	"bufio"
	"fmt"
	"maps"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/testing/lan"
)

// Six replicas spread over the nodes (the scheduler packs unless told to
// spread), each serving its own name; healthy while /www/health exists.
// No host port: traffic goes over the VIP, to port 80.
const multiWebYAML = `kind: Service
name: web
replicas: 6
placement: {spread: [node]}
template:
  image: demo/busybox:1
  command: ["sh", "-c", "hostname > /www/index.html; echo ok > /www/health; exec httpd -f -p 80 -h /www"]
  ports: [{name: http, container: 80}]
  health: {http: {port: 80, path: /health}, interval: 300ms, timeout: 500ms, failures: 1}
  resources: {cpu: 0.1, memory: 32Mi}
`

// The client stays on n1, which the tests never take down.
const multiClientYAML = `kind: Service
name: client
replicas: 1
placement: {constraints: [{key: node.name, op: "==", values: [n1]}]}
template:
  image: demo/busybox:1
  command: ["sleep", "1d"]
  resources: {cpu: 0.1, memory: 16Mi}
`

// askFrom makes n requests to url from inside the client container on
// node n1, through n1's runtime, and counts the answers ("FAIL" for a
// request that got none).
func askFrom(t *testing.T, l *lan.LAN, client api.Instance, n int, url string) map[string]int {
	t.Helper()
	out, err := l.Host(client.Spec.Node).Run("container", "exec", client.Status.ContainerID, "sh", "-c",
		fmt.Sprintf("for i in $(seq %d); do timeout 5 wget -qO- %s 2>&1 || echo FAIL; done", n, url))
	check(t, err)
	got := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			got[line]++
		}
	}
	return got
}

// TestMultiHost runs a cluster of three servers and three agents, each
// on a host of its own (a network namespace with its own address on a
// shared LAN), and checks what only several machines show: replicas
// spread over the nodes, traffic between nodes over the service VIP, a
// node's loss and a partitioned node's return.
func TestMultiHost(t *testing.T) {
	start := time.Now()
	l := startLAN(t)
	t.Logf("cluster of 3 servers and 3 agents up in %v", time.Since(start).Round(time.Millisecond))

	// Spread and cross-node traffic.
	check(t, l.Apply(multiWebYAML))
	check(t, l.Apply(multiClientYAML))
	applied := time.Now()
	web := waitHealthy(t, l, "web", 6, 90*time.Second)
	t.Logf("timing: 6 replicas of web running and healthy over 3 agents %v after apply (images pulled from the servers)",
		time.Since(applied).Round(time.Millisecond))
	if got := lan.PerNode(web); got["n1"] != 2 || got["n2"] != 2 || got["n3"] != 2 {
		t.Errorf("replicas per node %v, want 2 on each of n1, n2, n3", got)
	}
	client := waitHealthy(t, l, "client", 1, 60*time.Second)[0]
	if client.Spec.Node != "n1" {
		t.Fatalf("client placed on %s despite node.name == n1", client.Spec.Node)
	}
	checkTraffic(t, l, client, 60, web)
	checkNodeAuthority(t, l, web)
	checkTraffic(t, l, client, 30, web)

	// Node loss: everything of n2 dies at once.
	n2 := l.Host("n2")
	lost := lan.PerNode(web)["n2"]
	check(t, n2.Crash())
	crashed := time.Now()
	eventually(t, 30*time.Second, "node n2 to be marked down", func() bool { return !ready(t, l, "n2") })
	down := time.Since(crashed)
	web = waitHealthy(t, l, "web", 6, 60*time.Second, "n2")
	replaced := time.Since(crashed)
	// The lease lapses at most a TTL after the last heartbeat; the
	// replacements are made in the pass that sees it.
	t.Logf("timing: node n2 killed (%d replicas): NotReady after %v, 6 replicas running and healthy on n1 and n3 after %v",
		lost, down.Round(time.Millisecond), replaced.Round(time.Millisecond))
	if limit := apiserver.DefaultNodeTTL + 2*time.Second; replaced > limit {
		t.Errorf("replacements took %v, want them within the node TTL + 2s (%v)", replaced, limit)
	}
	checkTraffic(t, l, client, 30, web)

	// The machine comes back: the agent starts again on its data dir and
	// clears what the crash left behind.
	check(t, n2.Start())
	eventually(t, 30*time.Second, "node n2 Ready again", func() bool { return ready(t, l, "n2") })
	eventually(t, 30*time.Second, "n2's dead replicas to be removed", func() bool { return runningOf(t, n2, "web") == 0 })

	// Partition: n3's link goes down; its replicas are replaced elsewhere.
	n3 := l.Host("n3")
	check(t, n3.Unplug())
	cut := time.Now()
	web = waitHealthy(t, l, "web", 6, 60*time.Second, "n3")
	t.Logf("timing: node n3 cut off: 6 replicas running and healthy elsewhere after %v (per node %v)",
		time.Since(cut).Round(time.Millisecond), lan.PerNode(web))
	partitioned := runningOf(t, n3, "web")
	t.Logf("n3 still runs %d replicas of web while cut off", partitioned)

	// Back on the LAN: n3 stops what the cluster replaced; exactly 6 run.
	check(t, n3.Plug())
	healed := time.Now()
	eventually(t, 60*time.Second, "node n3 Ready again", func() bool { return ready(t, l, "n3") })
	eventually(t, 60*time.Second, "exactly 6 replicas running cluster-wide", func() bool {
		healthy, all, err := l.Healthy("web")
		check(t, err)
		if len(healthy) != 6 || all != 6 {
			return false
		}
		sum := 0
		for _, a := range l.Agents {
			sum += runningOf(t, a, "web")
		}
		return sum == 6
	})
	t.Logf("timing: n3 back on the LAN: converged to 6 running containers after %v", time.Since(healed).Round(time.Millisecond))
	web, _, err := l.Healthy("web")
	check(t, err)
	checkTraffic(t, l, client, 30, web)

	// Figures at a larger scale: 30 replicas over the three agents, then
	// one of them lost with its 10.
	_, err = l.Admin("scale", "web=30")
	check(t, err)
	scaled := time.Now()
	web = waitHealthy(t, l, "web", 30, 90*time.Second)
	t.Logf("timing: berth scale web=30: 30 replicas running and healthy over 3 agents after %v (per node %v)",
		time.Since(scaled).Round(time.Millisecond), lan.PerNode(web))
	if got := lan.PerNode(web); got["n1"] != 10 || got["n2"] != 10 || got["n3"] != 10 {
		t.Errorf("30 replicas per node %v, want 10 on each of n1, n2, n3", got)
	}
	lost = lan.PerNode(web)["n3"]
	check(t, n3.Crash())
	crashed = time.Now()
	web = waitHealthy(t, l, "web", 30, 90*time.Second, "n3")
	replaced = time.Since(crashed)
	t.Logf("timing: node n3 killed (%d of 30 replicas): 30 running and healthy on n1 and n2 after %v (per node %v)",
		lost, replaced.Round(time.Millisecond), lan.PerNode(web))
	if limit := apiserver.DefaultNodeTTL + 5*time.Second; replaced > limit {
		t.Errorf("replacements took %v, want them within the node TTL + 5s (%v)", replaced, limit)
	}
	checkRevokedEverywhere(t, l, "n1")
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}

// checkRevokedEverywhere revokes node's certificate through the first
// server and wants every server to refuse it, asked from the node's own
// machine, within a second.
func checkRevokedEverywhere(t *testing.T, l *lan.LAN, node string) {
	t.Helper()
	ctx := t.Context()
	h := l.Host(node)
	var clients []*client.Client
	for _, s := range l.Servers {
		c, err := h.NodeClient(s)
		check(t, err)
		if _, _, err := c.Nodes().List(ctx, ""); err != nil {
			t.Fatalf("%s's certificate on %s before its revocation: %v", node, s.Name, err)
		}
		clients = append(clients, c)
	}
	_, err := l.Admin("node", "revoke", node)
	check(t, err)
	revoked := time.Now()
	for i, c := range clients {
		eventually(t, time.Second, node+"'s revoked certificate refused by "+l.Servers[i].Name, func() bool {
			_, _, err := c.Nodes().List(ctx, "")
			return errdefs.IsUnauthorized(err)
		})
	}
	t.Logf("timing: %s revoked through %s: refused by all %d servers %v later", node, l.Servers[0].Name, len(l.Servers), time.Since(revoked).Round(time.Millisecond))
}

// backendRE finds the addresses in a listing of the backends map.
var backendRE = regexp.MustCompile(`:\s*(\d+\.\d+\.\d+\.\d+) \. 80\b`)

// checkTraffic waits for the client's node to send web's VIP to exactly
// the replicas in web, then makes n requests to web.default.berth from
// the client and wants every one answered, only by those replicas, and
// some answer from every node that runs one.
func checkTraffic(t *testing.T, l *lan.LAN, client api.Instance, n int, web []api.Instance) {
	t.Helper()
	node := map[string]string{}
	for _, in := range web {
		node[in.Metadata.Name] = in.Spec.Node
	}
	// First the client's node must send the VIP to exactly these replicas.
	want := map[string]bool{}
	for _, in := range web {
		want[in.Status.IP] = true
	}
	src := l.Host(client.Spec.Node)
	eventually(t, 20*time.Second, "node "+src.Name+"'s VIP backends to be web's replicas", func() bool {
		out, err := exec.Command("nsenter", "--net="+src.Netns, "nft", "list", "map", "ip", "berth-svc", "backends").CombinedOutput()
		if err != nil {
			t.Fatalf("nft list map backends on %s: %v: %s", src.Name, err, out)
		}
		seen := map[string]bool{}
		for _, m := range backendRE.FindAllStringSubmatch(string(out), -1) {
			seen[m[1]] = true
		}
		return maps.Equal(seen, want)
	})
	got := askFrom(t, l, client, n, "http://web.default.berth/")
	answered := map[string]int{}
	for name, c := range got {
		if nd, ok := node[name]; ok {
			answered[nd] += c
		} else {
			t.Errorf("%d of %d requests from %s answered %q, not a replica of web", c, n, client.Spec.Node, name)
		}
	}
	for nd := range lan.PerNode(web) {
		if answered[nd] == 0 {
			t.Errorf("no answer from node %s's replicas: %v", nd, got)
		}
	}
	t.Logf("%d requests from %s to web.default.berth: answers per node %v", n, client.Spec.Node, answered)
}

// checkNodeAuthority makes the attacks of a node on the LAN, with n1's
// own certificate from n1's machine, against a server: its pod subnet set
// to n2's, its cordon lifted, 64,000 CPUs, a label placement trusts, its
// instance's IP pointed at a rogue host, n2's instance's status and an
// event forged about n2 as the controller. Each is refused by name, or
// recorded no further than the node may claim.
func checkNodeAuthority(t *testing.T, l *lan.LAN, web []api.Instance) {
	t.Helper()
	ctx := t.Context()
	n1, err := l.Host("n1").NodeClient(l.Servers[1])
	check(t, err)
	get := func(name string) *api.Node {
		t.Helper()
		n, err := n1.Nodes().Get(ctx, "", name)
		check(t, err)
		n.Metadata.Revision = 0
		return n
	}
	refused := func(what string, err error, field string) {
		t.Helper()
		if !errdefs.IsForbidden(err) || !strings.Contains(err.Error(), field) {
			t.Errorf("n1's %s: %v; want 403 naming %s", what, err, field)
		}
	}
	other := get("n2")
	n := get("n1")
	n.Spec.PodSubnet = other.Spec.PodSubnet
	_, err = n1.Nodes().Apply(ctx, n)
	refused("pod subnet set to n2's", err, "spec.podSubnet")
	n = get("n1")
	n.Metadata.Labels = map[string]string{"gpu": "yes"}
	_, err = n1.Nodes().Apply(ctx, n)
	refused("label gpu=yes", err, `metadata.labels["gpu"]`)

	_, err = l.Admin("node", "cordon", "n1")
	check(t, err)
	n = get("n1")
	n.Spec.Unschedulable = false
	_, err = n1.Nodes().Apply(ctx, n)
	refused("cordon lifted", err, "spec.unschedulable")
	if !get("n1").Spec.Unschedulable {
		t.Error("n1's cordon was lifted by n1")
	}
	_, err = l.Admin("node", "uncordon", "n1")
	check(t, err)

	n = get("n1")
	limit := n.Spec.CapacityLimit.MilliCPU
	n.Spec.Capacity.MilliCPU = 64_000_000
	if _, err := n1.Nodes().Apply(ctx, n); err != nil {
		t.Errorf("n1 reporting 64000 CPUs: %v; want it recorded, capped", err)
	}
	if got := get("n1").Spec.Capacity.MilliCPU; limit == 0 || got > limit {
		t.Errorf("n1 reported 64000 CPUs and %dm were stored; its limit is %dm", got, limit)
	}

	var mine, theirs *api.Instance
	for i := range web {
		switch web[i].Spec.Node {
		case "n1":
			mine = &web[i]
		case "n2":
			theirs = &web[i]
		}
	}
	if mine == nil || theirs == nil {
		t.Fatalf("no web replica on n1 or n2 to attack with")
	}
	rogue := *mine
	rogue.Status.IP = l.Servers[2].Addr // a host on the LAN, outside every pod subnet
	_, err = n1.Instances().UpdateStatus(ctx, &rogue)
	refused("instance IP pointed at a LAN host", err, "status.ip")
	st := *theirs
	st.Status.Phase = api.PhaseFailed
	_, err = n1.Instances().UpdateStatus(ctx, &st)
	refused("status of n2's instance", err, `bound to node "n2"`)

	forged := func(obj api.ObjectRef) (*api.Event, error) {
		return n1.Events().Record(ctx, &api.Event{Metadata: api.Metadata{Namespace: "default"}, Object: obj,
			Type: api.EventWarning, Reason: "NodeLost", Source: "controller", Time: time.Now()})
	}
	_, err = forged(api.ObjectRef{Kind: api.KindNode, Name: "n2"})
	refused("event about n2", err, `node "n2"`)
	if ev, err := forged(api.ObjectRef{Kind: api.KindNode, Name: "n1"}); err != nil || ev.Source != "agent/n1" {
		t.Errorf("n1's event about itself: %+v, %v; want it recorded with source agent/n1", ev, err)
	}
}
