package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	goruntime "runtime"
	"strconv"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/vishvananda/netns"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
)

func (a *Agent) servePortForward(w http.ResponseWriter, r *http.Request) {
	port, err := strconv.Atoi(r.URL.Query().Get("port"))
	if err != nil || port < 1 || port > 65535 {
		writeErr(w, &api.ValidationError{Fields: []api.FieldError{{Field: "port", Reason: fmt.Sprintf("%q is not a port (1-65535)", r.URL.Query().Get("port"))}}})
		return
	}
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	conn, err := dialInNetns(r.Context(), c.Pid, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		writeErr(w, fmt.Errorf("port-forward to port %d of container %s: %w: %w", port, c.ID, errdefs.ErrUnavailable, err))
		return
	}
	defer conn.Close()
	ws, err := accept(w, r)
	if err != nil {
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	wc := websocket.NetConn(ctx, ws, websocket.MessageBinary)
	defer wc.Close()
	// The container's side ending ends the stream; the caller's side
	// ending is passed on as a half-close, and the answer may still come.
	sent, answered := make(chan struct{}), make(chan struct{})
	go func() {
		_, _ = io.Copy(conn, wc)
		if tc, ok := conn.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
		close(sent)
	}()
	go func() {
		_, _ = io.Copy(wc, conn)
		close(answered)
	}()
	select {
	case <-answered:
	case <-sent:
		select {
		case <-answered:
		case <-time.After(30 * time.Second):
		}
	}
}

// dialInNetns connects to addr from inside the network namespace of pid:
// the socket is made in that namespace, and stays there.
func dialInNetns(ctx context.Context, pid int, addr string) (net.Conn, error) {
	target, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("network namespace of pid %d: %w", pid, err)
	}
	defer target.Close()
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		// The thread switches namespace; it is never given back to other goroutines.
		goruntime.LockOSThread()
		if err := netns.Set(target); err != nil {
			ch <- result{err: err}
			return
		}
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		c, err := d.DialContext(dctx, "tcp", addr)
		ch <- result{c, err}
	}()
	res := <-ch
	return res.c, res.err
}

func (a *Agent) serveStats(w http.ResponseWriter, r *http.Request) {
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	st, err := a.cfg.Runtime.Stats(r.Context(), c.ID)
	if err != nil {
		writeErr(w, err)
		return
	}
	ns, name, _ := strings.Cut(c.Labels[labelInstance], "/")
	out := client.InstanceStats{Namespace: ns, Name: name, Node: a.cfg.Node.Name, Container: c.ID, Time: st.Time,
		CPUNanos: st.CPUNanos, MemoryBytes: st.MemoryBytes, MemoryLimit: st.MemoryLimit, Pids: st.Pids,
		RxBytes: st.RxBytes, TxBytes: st.TxBytes, RxPackets: st.RxPackets, TxPackets: st.TxPackets}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
