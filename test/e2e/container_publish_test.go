package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/netsync"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/netns"
)

// berthIn runs berth in the test's network namespace (only that: the
// mount namespace stays the host's, so the data dir's paths mean the same).
func (c *cluster) berthIn(args ...string) (string, string, int) {
	c.t.Helper()
	cmd := c.inNetns(berthBin, append([]string{"--data-dir", c.dataDir}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		c.t.Fatalf("berth %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

func (c *cluster) berthInOK(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.berthIn(args...)
	if code != 0 {
		c.t.Fatalf("berth %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// nextPort is where freePort looks next. The ports it hands out lie
// below the kernel's ephemeral range (32768 and up by default), so that
// no outgoing connection of a berth process can take one between
// freePort and the test's use of it, and a test process never hands the
// same port out twice.
var nextPort atomic.Int32

func init() { nextPort.Store(int32(20000 + os.Getpid()%1000*10)) }

// freePort is a TCP port nothing listens on in the namespace right now.
func (c *cluster) freePort() int {
	c.t.Helper()
	for range 1000 {
		port := int(nextPort.Add(1))
		if port >= 32768 {
			nextPort.Store(20000)
			continue
		}
		err := netns.Do(c.netns, func() error {
			l, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
			if err != nil {
				return err
			}
			return l.Close()
		})
		if err == nil {
			return port
		}
	}
	c.t.Fatal("no free TCP port below 32768")
	return 0
}

// listenErr is what a host process gets when it listens on port.
func (c *cluster) listenErr(port int) error {
	return netns.Do(c.netns, func() error {
		l, err := net.Listen("tcp4", fmt.Sprintf(":%d", port))
		if err == nil {
			l.Close()
		}
		return err
	})
}

// `container run -p` publishes a container's port on the host: over
// loopback, over the host's own address, and from another namespace. The
// port is held while the container runs (another container or a host
// process cannot take it, and a port a host process holds is refused),
// and rm gives back the port, the rule and the veth.
func TestContainerPublish(t *testing.T) {
	e := newEnv(t)
	e.demoImage()
	c := &cluster{env: e, netns: makeNetns(t)}
	t.Cleanup(func() {
		out, errOut, code := c.berthIn("down", "--purge")
		if code != 0 {
			t.Errorf("down --purge: exit %d: %s %s", code, out, errOut)
		}
	})
	names := network.LocalNamesOf(filepath.Join(e.dataDir, "container-net"))

	// A client namespace linked to this one: its address here is the
	// host's address, as another machine's traffic would reach it.
	client := makeNetns(t)
	veth := fmt.Sprintf("bp%d", netnsSeq.Add(1))
	for _, args := range [][]string{
		{"ip", "-n", filepath.Base(c.netns), "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", filepath.Base(client)},
		{"ip", "-n", filepath.Base(c.netns), "addr", "add", "192.168.77.1/30", "dev", veth},
		{"ip", "-n", filepath.Base(c.netns), "link", "set", veth, "up"},
		{"ip", "-n", filepath.Base(client), "addr", "add", "192.168.77.2/30", "dev", "eth0"},
		{"ip", "-n", filepath.Base(client), "link", "set", "eth0", "up"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	other := &cluster{env: e, netns: client}

	const web = "echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www"
	p := c.freePort()
	c.berthInOK("container", "run", "-d", "--name", "web", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1", "sh", "-c", web)
	for _, from := range []struct {
		who  *cluster
		addr string
	}{{c, fmt.Sprintf("127.0.0.1:%d", p)}, {c, fmt.Sprintf("192.168.77.1:%d", p)}, {other, fmt.Sprintf("192.168.77.1:%d", p)}} {
		eventually(t, 10*time.Second, "the published port to answer at "+from.addr, func() bool {
			body, err := from.who.hostGet(from.addr)
			return err == nil && body == "hello-web"
		})
	}

	// ps and inspect say what is published.
	if out := c.berthInOK("container", "ps"); !strings.Contains(out, fmt.Sprintf("0.0.0.0:%d->80/tcp", p)) {
		t.Errorf("container ps does not show the port:\n%s", out)
	}
	var st struct {
		Ports []struct {
			HostPort, ContainerPort int
			Protocol                string
		}
	}
	if err := json.Unmarshal([]byte(c.berthInOK("container", "inspect", "web")), &st); err != nil ||
		len(st.Ports) != 1 || st.Ports[0].HostPort != p || st.Ports[0].ContainerPort != 80 || st.Ports[0].Protocol != "tcp" {
		t.Errorf("inspect ports: %+v, %v", st.Ports, err)
	}

	// A name in use is refused before anything is published for it; the
	// container of that name keeps its address and port.
	_, errOut, code := c.berthIn("container", "run", "-d", "--name", "web", "-p", fmt.Sprintf("%d:80", c.freePort()), "demo/busybox:1", "true")
	if code == 0 || !strings.Contains(errOut, "already exists") {
		t.Errorf("a second container named web: exit %d: %s", code, errOut)
	}
	if body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", p)); err != nil || body != "hello-web" {
		t.Errorf("web after a run under its name: %q, %v", body, err)
	}

	// The port is held: another container cannot have it, nor can a host process.
	_, errOut, code = c.berthIn("container", "run", "-d", "--name", "web2", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1", "sh", "-c", web)
	if code == 0 || !strings.Contains(errOut, "address already in use") || !strings.Contains(errOut, fmt.Sprint(p)) {
		t.Errorf("a second container on port %d: exit %d: %s", p, code, errOut)
	}
	if out := c.berthInOK("container", "ps", "-a", "-q"); strings.Contains(out, "web2") {
		t.Errorf("the refused container was left behind: %s", out)
	}
	if err := c.listenErr(p); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a host process could listen on the published port %d: %v", p, err)
	}

	// A port a host process holds is refused, named.
	q := c.freePort()
	var held net.Listener
	if err := netns.Do(c.netns, func() (err error) { held, err = net.Listen("tcp4", fmt.Sprintf(":%d", q)); return err }); err != nil {
		t.Fatal(err)
	}
	_, errOut, code = c.berthIn("container", "run", "-d", "--name", "web3", "-p", fmt.Sprintf("%d:80", q), "demo/busybox:1", "sh", "-c", web)
	held.Close()
	if code == 0 || !strings.Contains(errOut, "address already in use") || !strings.Contains(errOut, fmt.Sprint(q)) {
		t.Errorf("a port a host process holds (%d): exit %d: %s", q, code, errOut)
	}

	// On one address only: loopback answers, the host's other address does not.
	r := c.freePort()
	c.berthInOK("container", "run", "-d", "--name", "local", "-p", fmt.Sprintf("127.0.0.1:%d:80", r), "demo/busybox:1", "sh", "-c", web)
	eventually(t, 10*time.Second, "the loopback-only port to answer", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", r))
		return err == nil && body == "hello-local"
	})
	if body, err := c.hostGet(fmt.Sprintf("192.168.77.1:%d", r)); err == nil {
		t.Errorf("a port published on 127.0.0.1 answered on another address: %q", body)
	}

	// UDP: a datagram to the published port reaches the container and its answer comes back.
	u := c.freePort()
	echo := udpEcho(t)
	c.berthInOK("container", "run", "-d", "--name", "udp", "-v", echo+":/bin/udpecho:ro", "-p", fmt.Sprintf("%d:53/udp", u), "demo/busybox:1", "/bin/udpecho", "53")
	eventually(t, 10*time.Second, "the published udp port to answer", func() bool {
		var got string
		_ = netns.Do(c.netns, func() error {
			conn, err := net.Dial("udp4", fmt.Sprintf("127.0.0.1:%d", u))
			if err != nil {
				return err
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(300 * time.Millisecond))
			if _, err := conn.Write([]byte("ping")); err != nil {
				return err
			}
			buf := make([]byte, 64)
			n, err := conn.Read(buf)
			got = string(buf[:n])
			return err
		})
		return got == "echo:ping"
	})

	// Bad specs name the flag.
	for _, bad := range []string{"80:abc", "70000:80", "8000-8001:80", "8080:80/sctp", "::1:80:80"} {
		_, errOut, code := c.berthIn("container", "run", "-p", bad, "demo/busybox:1", "true")
		if code == 0 || !strings.Contains(errOut, fmt.Sprintf("-p %q", bad)) {
			t.Errorf("-p %s: exit %d: %s", bad, code, errOut)
		}
	}

	// A stopped container publishes nothing: its port is free again, its rule gone.
	c.berthInOK("container", "stop", "-t", "2", "local")
	if err := c.listenErr(r); err != nil {
		t.Errorf("port %d after stop: %v", r, err)
	}
	if out, err := c.inNetns("nft", "list", "table", "ip", names.PortTable).CombinedOutput(); err != nil || strings.Contains(string(out), fmt.Sprint(r)) {
		t.Errorf("the stopped container's rule is left (%v):\n%s", err, out)
	}

	// So does a killed one.
	c.berthInOK("container", "kill", "udp")
	if out, err := c.inNetns("nft", "list", "table", "ip", names.PortTable).CombinedOutput(); err != nil || strings.Contains(string(out), fmt.Sprint(u)) {
		t.Errorf("the killed container's rule is left (%v):\n%s", err, out)
	}

	// rm gives everything back: the port, its rule, the veth.
	c.berthInOK("container", "rm", "-f", "web", "local", "udp")
	for _, port := range []int{p, r} {
		if err := c.listenErr(port); err != nil {
			t.Errorf("port %d after rm: %v", port, err)
		}
	}
	if out, err := c.inNetns("nft", "list", "table", "ip", names.PortTable).CombinedOutput(); err != nil ||
		strings.Contains(string(out), fmt.Sprint(p)) || strings.Contains(string(out), fmt.Sprint(r)) {
		t.Errorf("rules left after rm (%v):\n%s", err, out)
	}
	eventually(t, 10*time.Second, "the veths to go", func() bool {
		out, err := c.inNetns("ip", "-o", "link", "show", "master", names.Bridge).CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == ""
	})

	// --rm in the foreground: published while it runs, all gone after.
	// The sockets holding its port stay the shim's: not even berth's init
	// (PID 1 with --init) has them.
	s := c.freePort()
	out := c.berthInOK("container", "run", "--rm", "--init", "-p", fmt.Sprintf("%d:80", s), "demo/busybox:1",
		"sh", "-c", "grep -q eth0: /proc/net/dev && echo wired; ls -l /proc/1/fd /proc/self/fd")
	if !strings.Contains(out, "wired") {
		t.Errorf("a container with -p has no eth0: %q", out)
	}
	if !strings.Contains(out, "/proc/1/fd:") || strings.Contains(out, "socket:") {
		t.Errorf("the container holds a socket, or its PID 1's descriptors cannot be listed:\n%s", out)
	}
	if err := c.listenErr(s); err != nil {
		t.Errorf("port %d after run --rm: %v", s, err)
	}
	eventually(t, 10*time.Second, "the veth of the --rm container to go", func() bool {
		out, err := c.inNetns("ip", "-o", "link", "show", "master", names.Bridge).CombinedOutput()
		return err == nil && strings.TrimSpace(string(out)) == ""
	})

	// down --purge takes the bridge and the tables.
	c.berthInOK("down", "--purge")
	if out, err := c.inNetns("ip", "link", "show", names.Bridge).CombinedOutput(); err == nil {
		t.Errorf("bridge %s left after down --purge: %s", names.Bridge, out)
	}
	if out, err := c.inNetns("nft", "list", "tables").CombinedOutput(); err != nil || strings.Contains(string(out), names.Table) {
		t.Errorf("tables left after down --purge (%v): %s", err, out)
	}
}

// udpEcho builds a static program that answers each datagram on the port
// it is given with "echo:" and the datagram (busybox has no UDP server).
func udpEcho(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "udpecho.c")
	const prog = `#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
	if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) < 0) return 1;
	for (;;) {
		char buf[512] = "echo:";
		struct sockaddr_in from;
		socklen_t fl = sizeof(from);
		ssize_t n = recvfrom(s, buf + 5, sizeof(buf) - 5, 0, (struct sockaddr *)&from, &fl);
		if (n >= 0) sendto(s, buf, n + 5, 0, (struct sockaddr *)&from, fl);
	}
}
`
	if err := os.WriteFile(src, []byte(prog), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "udpecho")
	if out, err := exec.Command("gcc", "-static", "-O1", "-o", bin, src).CombinedOutput(); err != nil {
		t.Fatalf("build the udp echo program: %v: %s", err, out)
	}
	return bin
}

// A container's published port and berth up's services share the host
// fairly: each is refused the port the other holds, by name, and their
// bridges and tables are apart, so removing the container leaves the
// node's network alone.
func TestContainerPublishBesideBerthUp(t *testing.T) {
	c := startCluster(t)
	const web = "echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www"
	p, q := c.freePort(), c.freePort()
	c.berthInOK("container", "run", "-d", "--name", "solo", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1", "sh", "-c", web)
	t.Cleanup(func() { c.berthIn("container", "rm", "-f", "solo") })
	eventually(t, 10*time.Second, "the container's port to answer", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", p))
		return err == nil && body == "hello-solo"
	})
	_, errOut, code := c.run("run", "--name", "svc", "-p", fmt.Sprintf("%d:80", p), "--timeout", "30s", "demo/busybox:1", "sh", "-c", web)
	if code == 0 || !strings.Contains(errOut, "address already in use") || !strings.Contains(errOut, fmt.Sprint(p)) {
		t.Errorf("a service on the container's port %d: exit %d: %s", p, code, errOut)
	}
	c.ok("run", "--name", "svc2", "-p", fmt.Sprintf("%d:80", q), "demo/busybox:1", "sh", "-c", web)
	eventually(t, 20*time.Second, "the service's port to answer", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", q))
		return err == nil && strings.HasPrefix(body, "hello-svc2")
	})
	_, errOut, code = c.berthIn("container", "run", "-d", "--name", "solo2", "-p", fmt.Sprintf("%d:80", q), "demo/busybox:1", "sh", "-c", web)
	if code == 0 || !strings.Contains(errOut, "address already in use") || !strings.Contains(errOut, fmt.Sprint(q)) {
		t.Errorf("a container on the service's port %d: exit %d: %s", q, code, errOut)
	}
	names := network.LocalNamesOf(filepath.Join(c.dataDir, "container-net"))
	if names.Bridge == netsync.DefaultBridge || names.Table == netsync.DefaultNodeTable || names.PortTable == netsync.DefaultServiceTable {
		t.Fatalf("the container network's names meet berth up's: %+v", names)
	}
	c.berthInOK("container", "rm", "-f", "solo")
	if body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", q)); err != nil || !strings.HasPrefix(body, "hello-svc2") {
		t.Errorf("the service's port after the container went: %q, %v", body, err)
	}
	if out, err := c.inNetns("ip", "link", "show", netsync.DefaultBridge).CombinedOutput(); err != nil {
		t.Errorf("berth up's bridge after the container went: %v: %s", err, out)
	}
}
