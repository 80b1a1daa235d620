package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/network"
	"github.com/berth-dev/berth/internal/network/netns"
)

// containerNet is a data dir's `container run -p` network in a namespace
// of the test's own, removed with its containers at the end.
func containerNet(t *testing.T) (*cluster, network.LocalNames) {
	e := newEnv(t)
	e.demoImage()
	c := &cluster{env: e, netns: makeNetns(t)}
	t.Cleanup(func() {
		if out, errOut, code := c.berthIn("down", "--purge"); code != 0 {
			t.Errorf("down --purge: exit %d: %s %s", code, out, errOut)
		}
	})
	return c, network.LocalNamesOf(filepath.Join(e.dataDir, "container-net"))
}

// serveHost answers every request on port of the namespace's addresses
// with body, as a host process would, until stop or the test's end.
func (c *cluster) serveHost(port int, body string) (stop func(), err error) {
	var l net.Listener
	if err := netns.Do(c.netns, func() (err error) { l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port)); return err }); err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, body) })}
	go func() { _ = srv.Serve(l) }()
	c.t.Cleanup(func() { _ = srv.Close() })
	return func() { _ = srv.Close() }, nil
}

// portRule reports whether the data dir's port table still names port.
func (c *cluster) portRule(names network.LocalNames, port int) bool {
	c.t.Helper()
	out, err := c.inNetns("nft", "list", "table", "ip", names.PortTable).CombinedOutput()
	if err != nil {
		c.t.Fatalf("nft list table %s: %v: %s", names.PortTable, err, out)
	}
	return strings.Contains(string(out), fmt.Sprint(port))
}

// A -p container whose process ends by itself gives back its port and its
// rule at once, with no berth command run after it: a host process then
// gets the port's loopback traffic, and a new container the port.
func TestContainerPublishEndsWithItsContainer(t *testing.T) {
	c, names := containerNet(t)
	ctl := t.TempDir()
	p := c.freePort()
	// It serves until the test makes ctl/stop, then exits on its own.
	script := "echo hello-$HOSTNAME > /www/index.html; httpd -p 80 -h /www; while [ ! -e /ctl/stop ]; do usleep 20000; done"
	c.berthInOK("container", "run", "-d", "--name", "once", "-v", ctl+":/ctl", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1", "sh", "-c", script)
	t.Cleanup(func() { c.berthIn("container", "rm", "-f", "once", "next") })
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	eventually(t, 10*time.Second, "the published port to answer", func() bool {
		body, err := c.hostGet(addr)
		return err == nil && body == "hello-once"
	})

	if err := os.WriteFile(filepath.Join(ctl, "stop"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// No berth command from here until the port has gone to a host process;
	// the rule goes first, so the port is never free while traffic to it
	// would still go to the ended container.
	eventually(t, 5*time.Second, "the port to be free for a host process", func() bool {
		_, err := c.serveHost(p, "host-process")
		return err == nil
	})
	if c.portRule(names, p) {
		t.Fatalf("port %d is free while its rule to the ended container stays", p)
	}
	if body, err := c.hostGet(addr); err != nil || body != "host-process" {
		t.Fatalf("loopback traffic to port %d after its container ended: %q, %v (want the host process's)", p, body, err)
	}
	if out := c.berthInOK("container", "ps", "-a"); !strings.Contains(out, "exited") {
		t.Errorf("the container did not end by itself:\n%s", out)
	}
}

// A -p container whose port was given back (it ended) hands it to the
// next container at once, and one OOM-killed gives it back as well.
func TestContainerPublishFreedForNextContainer(t *testing.T) {
	c, names := containerNet(t)
	p := c.freePort()
	// More memory than its limit: the OOM killer ends it.
	c.berthInOK("container", "run", "-d", "--name", "hog", "--memory", "8Mi", "-p", fmt.Sprintf("%d:80", p),
		"demo/busybox:1", "sh", "-c", "httpd -p 80 -h /www; usleep 300000; head -c 64m /dev/zero | tail > /dev/null")
	t.Cleanup(func() { c.berthIn("container", "rm", "-f", "hog", "next") })
	eventually(t, 10*time.Second, "the OOM-killed container's port to be free", func() bool { return c.listenErr(p) == nil })
	if c.portRule(names, p) {
		t.Fatalf("port %d is free while its rule to the OOM-killed container stays", p)
	}

	c.berthInOK("container", "run", "-d", "--name", "next", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1",
		"sh", "-c", "echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www")
	eventually(t, 10*time.Second, "the next container to answer on the port", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", p))
		return err == nil && body == "hello-next"
	})
	var st struct{ OOMKilled bool }
	if err := json.Unmarshal([]byte(c.berthInOK("container", "inspect", "hog")), &st); err != nil || !st.OOMKilled {
		t.Errorf("hog was not OOM-killed: %+v, %v", st, err)
	}
}

// A -p container checkpointed and restored holds its port again and
// answers on it; while it is checkpointed the port is free.
func TestContainerPublishRestored(t *testing.T) {
	c, names := containerNet(t)
	p := c.freePort()
	// Its page is the host's: a checkpoint's export does not carry the writable layer.
	www := t.TempDir()
	if err := os.WriteFile(filepath.Join(www, "index.html"), []byte("hello-ck\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c.berthInOK("container", "run", "-d", "--runtime", "runc", "--name", "ck", "-v", www+":/www:ro", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1",
		"httpd", "-f", "-p", "80", "-h", "/www")
	t.Cleanup(func() { c.berthIn("container", "rm", "-f", "ck", "thief") })
	addr := fmt.Sprintf("127.0.0.1:%d", p)
	eventually(t, 10*time.Second, "the published port to answer", func() bool {
		body, err := c.hostGet(addr)
		return err == nil && body == "hello-ck"
	})

	c.berthInOK("container", "checkpoint", "ck")
	eventually(t, 5*time.Second, "the checkpointed container's port to be free", func() bool { return c.listenErr(p) == nil })
	if c.portRule(names, p) {
		t.Fatalf("port %d is free while its rule to the checkpointed container stays", p)
	}

	out := c.berthInOK("container", "restore", "ck")
	if !strings.Contains(out, "restored") {
		t.Fatalf("restore printed %q", out)
	}
	eventually(t, 10*time.Second, "the restored container to answer on its port", func() bool {
		body, err := c.hostGet(addr)
		return err == nil && body == "hello-ck"
	})
	if err := c.listenErr(p); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a host process could listen on the restored container's port %d: %v", p, err)
	}
	_, errOut, code := c.berthIn("container", "run", "-d", "--name", "thief", "-p", fmt.Sprintf("%d:80", p), "demo/busybox:1", "sleep", "9")
	if code == 0 || !strings.Contains(errOut, "address already in use") {
		t.Errorf("another container on the restored container's port %d: exit %d: %s", p, code, errOut)
	}

	// A checkpoint of it restored while another process holds its port is refused, naming the port.
	archive := filepath.Join(t.TempDir(), "ck.tar.gz")
	c.berthInOK("container", "checkpoint", "--export", archive, "ck")
	eventually(t, 5*time.Second, "the port to be free", func() bool { return c.listenErr(p) == nil })
	stop, err := c.serveHost(p, "host-process")
	if err != nil {
		t.Fatal(err)
	}
	_, errOut, code = c.berthIn("container", "restore", "ck")
	if code == 0 || !strings.Contains(errOut, fmt.Sprint(p)) || !strings.Contains(errOut, "address already in use") {
		t.Errorf("restore onto a port a host process holds: exit %d: %s", code, errOut)
	}
	if body, err := c.hostGet(addr); err != nil || body != "host-process" {
		t.Errorf("the host process lost its traffic to the refused restore: %q, %v", body, err)
	}
	stop()

	// Removed (its address too) and restored from the export: a new address, the same port.
	c.berthInOK("container", "rm", "ck")
	c.berthInOK("container", "restore", "--import", archive, "ck")
	eventually(t, 10*time.Second, "the imported container to answer on its port", func() bool {
		body, err := c.hostGet(addr)
		return err == nil && body == "hello-ck"
	})
	if err := c.listenErr(p); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a host process could listen on the imported container's port %d: %v", p, err)
	}
}

// berth run and berth container run read -p alike (one parser: the same
// forms, the same errors naming the flag and value); what `-p 80` means is
// each command's: a host port of the kernel's pick for a container, the
// service's address only for a service. A service instance that ends by
// itself leaves its port's backends, and a removed service gives the port
// back at once.
func TestPortFlagAcrossCommands(t *testing.T) {
	c := startCluster(t)
	const web = "echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www"

	// Bad forms: refused by both, alike, naming the flag and value; nothing is made.
	for _, bad := range []string{"8000-8001:80", "80:abc", "8080:80/sctp"} {
		_, svcErr, code := c.run("run", "--name", "bad", "-p", bad, "demo/busybox:1", "true")
		if code == 0 || !strings.Contains(svcErr, fmt.Sprintf("-p %q", bad)) {
			t.Errorf("run -p %s: exit %d: %s", bad, code, svcErr)
		}
		_, ctrErr, code := c.berthIn("container", "run", "-p", bad, "demo/busybox:1", "true")
		if code == 0 || strings.TrimSpace(ctrErr) != strings.TrimSpace(svcErr) {
			t.Errorf("container run -p %s: exit %d: %q; run said %q", bad, code, ctrErr, svcErr)
		}
	}
	// A service has no single host address nor a picked host port.
	for spec, why := range map[string]string{"127.0.0.1:8080:80": "every address", "127.0.0.1::80": "every address", ":80": "not picked"} {
		_, errOut, code := c.run("run", "--name", "bad", "-p", spec, "demo/busybox:1", "true")
		if code == 0 || !strings.Contains(errOut, fmt.Sprintf("-p %q", spec)) || !strings.Contains(errOut, why) {
			t.Errorf("run -p %s: exit %d: %s", spec, code, errOut)
		}
	}
	if _, _, code := c.run("get", "service", "bad"); code == 0 {
		t.Error("a refused run left a service")
	}
	if help := c.ok("run", "--help"); !strings.Contains(help, "not a random host port") {
		t.Errorf("run --help does not say what -p CONTAINERPORT means for a service:\n%s", help)
	}

	// -p 80: the service's address only; a container's port of the kernel's pick.
	c.ok("run", "--name", "exp", "-p", "80", "demo/busybox:1", "sh", "-c", web)
	svc := c.service("exp")
	if len(svc.Spec.Template.Ports) != 1 || svc.Spec.Template.Ports[0].Container != 80 || svc.Spec.Template.Ports[0].Host != 0 {
		t.Errorf("run -p 80 stored ports %+v, want container 80 with no host port", svc.Spec.Template.Ports)
	}
	eventually(t, 20*time.Second, "the service's address to answer on 80", func() bool {
		body, err := c.hostGet(svc.Status.VIP + ":80")
		return err == nil && strings.HasPrefix(body, "hello-exp")
	})
	c.berthInOK("container", "run", "-d", "--name", "pick", "-p", "80", "demo/busybox:1", "sh", "-c", web)
	t.Cleanup(func() { c.berthIn("container", "rm", "-f", "pick") })
	var st struct {
		Ports []struct{ HostPort, ContainerPort int }
	}
	if err := json.Unmarshal([]byte(c.berthInOK("container", "inspect", "pick")), &st); err != nil || len(st.Ports) != 1 || st.Ports[0].HostPort == 0 {
		t.Fatalf("container run -p 80: ports %+v, %v; want a host port picked", st.Ports, err)
	}
	eventually(t, 10*time.Second, "the picked host port to answer", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", st.Ports[0].HostPort))
		return err == nil && body == "hello-pick"
	})

	// A published service instance that ends by itself leaves the backends.
	q := c.freePort()
	c.ok("run", "--name", "brief", "--restart", "never", "-p", fmt.Sprintf("%d:80", q), "demo/busybox:1", "sh", "-c",
		"echo hello-$HOSTNAME > /www/index.html; httpd -p 80 -h /www; while [ ! -e /tmp/stop ]; do usleep 20000; done")
	in := c.waitRunning("brief", 1)[0]
	eventually(t, 20*time.Second, "the published service port to answer", func() bool {
		body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", q))
		return err == nil && strings.HasPrefix(body, "hello-brief")
	})
	if !strings.Contains(c.backends(), in.Status.IP) {
		t.Fatalf("the instance's address %s is not a backend:\n%s", in.Status.IP, c.backends())
	}
	c.ok("exec", in.Metadata.Name, "touch", "/tmp/stop")
	eventually(t, 20*time.Second, "the ended instance to leave the backends", func() bool {
		return !strings.Contains(c.backends(), in.Status.IP)
	})
	// Removed, the service gives its port back at once: a host process has its loopback traffic.
	c.ok("rm", "brief")
	eventually(t, 10*time.Second, "the removed service's port to be free", func() bool {
		_, err := c.serveHost(q, "host-process")
		return err == nil
	})
	if body, err := c.hostGet(fmt.Sprintf("127.0.0.1:%d", q)); err != nil || body != "host-process" {
		t.Errorf("loopback traffic to port %d after its service went: %q, %v (want the host process's)", q, body, err)
	}
}

// A published service instance migrated to another node is reached
// there through the port, which that node holds: the port's traffic on
// the target's loopback reaches the moved instance, and no host process
// there can take the port.
func TestMigratePublishedPort(t *testing.T) {
	l := startLANOf(t, 1, 2)
	const port = 18093
	check(t, l.Apply(fmt.Sprintf(`kind: Service
name: pub
replicas: 1
template:
  image: demo/busybox:1
  runtime: runc
  command: ["sh", "-c", "echo hello-$HOSTNAME > /www/index.html; exec httpd -f -p 80 -h /www"]
  ports: [{container: 80, host: %d}]
`, port)))
	inst := waitHealthy(t, l, "pub", 1, 60*time.Second)[0]
	from := inst.Spec.Node
	to := otherNode(l, from)
	source, target := &cluster{env: &env{t: t}, netns: l.Host(from).Netns}, &cluster{env: &env{t: t}, netns: l.Host(to).Netns}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 20*time.Second, "the port to answer on the source before the move", func() bool {
		body, err := source.hostGet(addr)
		return err == nil && body == "hello-"+inst.Metadata.Name
	})

	_, err := l.Admin("migrate", inst.Metadata.Name, "--to", to)
	check(t, err)
	moved := instanceNamed(t, l, inst.Metadata.Name)
	if moved.Spec.Node != to || moved.Status.Phase != api.PhaseRunning {
		t.Fatalf("after migrate: on %s, %s; want running on %s", moved.Spec.Node, moved.Status.Phase, to)
	}
	// The moved instance's address on the target is the port's backend, and answers.
	eventually(t, 20*time.Second, "the target's port to lead to the moved instance", func() bool {
		out, err := target.inNetns("nft", "list", "map", "ip", "berth-svc", "backends").CombinedOutput()
		return err == nil && strings.Contains(string(out), moved.Status.IP+" ")
	})
	eventually(t, 10*time.Second, "the port to answer on the target after the move", func() bool {
		body, err := target.hostGet(addr)
		return err == nil && body == "hello-"+inst.Metadata.Name
	})
	if err := target.listenErr(port); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("a host process on the target could listen on the moved instance's port %d: %v", port, err)
	}
}
