package e2e

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/network/netns"
)

// A host port another process holds on the node is refused at start,
// named, with "address already in use"; the process keeps its traffic.
// Once the port is free the instance starts, and berth then holds the
// port itself, so no other process can take it from under the service.
func TestHostPortHeldByAnotherProcess(t *testing.T) {
	c := startCluster(t)
	const addr = "127.0.0.1:18081"
	var l net.Listener
	if err := netns.Do(c.netns, func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "host-listener")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	_, errOut, code := c.run("run", "--name", "taken", "-p", "18081:80", "--timeout", "30s",
		"demo/busybox:1", "sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www")
	if code == 0 || !strings.Contains(errOut, "18081") || !strings.Contains(errOut, "address already in use") {
		t.Fatalf("run -p 18081:80 with the port held: exit %d, %s", code, errOut)
	}
	// A run that failed to start leaves nothing behind; a service applied
	// without waiting stays, and its instance says why it is not running.
	eventually(t, 30*time.Second, "the failed run's instances to go", func() bool {
		return len(c.ownedBy("taken")) == 0
	})
	c.ok("run", "--name", "taken", "-p", "18081:80", "--no-wait",
		"demo/busybox:1", "sh", "-c", "hostname > /www/index.html; exec httpd -f -p 80 -h /www")
	eventually(t, 30*time.Second, "the instance to say why it is not running", func() bool {
		insts := c.ownedBy("taken")
		return len(insts) >= 1 && insts[0].Status.Reason == "StartError" &&
			strings.Contains(insts[0].Status.Message, "port 18081/tcp") && strings.Contains(insts[0].Status.Message, "address already in use")
	})
	if body, err := c.hostGet(addr); err != nil || body != "host-listener" {
		t.Fatalf("the host listener lost its traffic: %q, %v", body, err)
	}

	// Freed, the port goes to the service, and berth holds it.
	_ = srv.Close()
	c.waitRunning("taken", 1)
	eventually(t, 20*time.Second, "the published port to answer", func() bool {
		body, err := c.hostGet(addr)
		return err == nil && strings.HasPrefix(body, "taken-")
	})
	err := netns.Do(c.netns, func() error {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			l.Close()
		}
		return err
	})
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("another process could listen on the published port: %v", err)
	}
}
