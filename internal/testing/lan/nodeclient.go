package lan

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"runtime"
	"time"

	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/api/client"
)

// NodeClient is an API client of server that speaks as agent h does:
// with the node certificate h's agent keeps in its data dir, over
// connections made from h's network namespace, as the machine would.
func (h *Host) NodeClient(server *Host) (*client.Client, error) {
	creds, err := client.LoadNodeCredentials(filepath.Join(h.DataDir, "node"))
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	cfg, err := creds.TLSConfig()
	if err != nil {
		return nil, fmt.Errorf("host %s: %w", h.Name, err)
	}
	tr := &http.Transport{TLSClientConfig: cfg, DialContext: h.dial, TLSHandshakeTimeout: 5 * time.Second}
	return client.New(server.url(), client.WithHTTPClient(&http.Client{Transport: tr}))
}

// HTTPClient is an HTTP client with cfg that connects from the host's
// network namespace: a request made with it leaves from this machine.
func (h *Host) HTTPClient(cfg *tls.Config) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DialContext: h.dial, TLSHandshakeTimeout: 5 * time.Second}}
}

// dial connects from the host's network namespace: the socket is made
// on a thread moved into it, and keeps the namespace once the thread
// moves back.
func (h *Host) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return nil, err
	}
	defer orig.Close()
	target, err := netns.GetFromPath(h.Netns)
	if err != nil {
		return nil, fmt.Errorf("host %s: netns: %w", h.Name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return nil, fmt.Errorf("host %s: enter netns: %w", h.Name, err)
	}
	// The thread must leave the namespace again whatever happens, or the
	// runtime would reuse it elsewhere inside it.
	defer func() {
		if err := netns.Set(orig); err != nil {
			panic(fmt.Sprintf("host %s: leave netns: %v", h.Name, err))
		}
	}()
	return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
}
