package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/hashicorp/yamux"

	"github.com/berth-dev/berth/api"
)

// LogOptions select an instance's output (GET .../instances/{name}/logs).
type LogOptions struct {
	// Follow keeps the stream open for new output until the container exits.
	Follow bool
	// Tail, when positive, starts with only the last Tail lines.
	Tail int
	// Since, when set, leaves out lines written before it.
	Since time.Time
	// Timestamps prefixes each line with its RFC 3339 time.
	Timestamps bool
	// Previous reads the container the instance ran before its last restart.
	Previous bool
	// Container names one of the instance's init or sidecar containers;
	// empty (or api.MainContainer) is the main one.
	Container string
}

// Query is the options as the route's query parameters.
func (o LogOptions) Query() url.Values {
	q := url.Values{}
	if o.Follow {
		q.Set("follow", "1")
	}
	if o.Tail > 0 {
		q.Set("tail", strconv.Itoa(o.Tail))
	}
	if !o.Since.IsZero() {
		q.Set("since", o.Since.UTC().Format(time.RFC3339Nano))
	}
	if o.Timestamps {
		q.Set("timestamps", "1")
	}
	if o.Previous {
		q.Set("previous", "1")
	}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	return q
}

// ParseLogOptions reads LogOptions from a query; an unreadable value is
// an error naming the parameter.
func ParseLogOptions(q url.Values) (LogOptions, error) {
	o := LogOptions{Follow: q.Get("follow") == "1", Timestamps: q.Get("timestamps") == "1", Previous: q.Get("previous") == "1",
		Container: q.Get("container")}
	if v := q.Get("tail"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return o, &api.ValidationError{Fields: []api.FieldError{{Field: "tail", Reason: fmt.Sprintf("%q is not a count of lines", v)}}}
		}
		o.Tail = n
	}
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return o, &api.ValidationError{Fields: []api.FieldError{{Field: "since", Reason: fmt.Sprintf("%q is not an RFC 3339 time", v)}}}
		}
		o.Since = t
	}
	return o, nil
}

func instancePath(namespace, name, op string) string {
	return objectPath(api.KindInstance, namespace, name) + "/" + op
}

// InstanceLogs writes an instance's output to stdout and stderr, until
// the output ends (or, following, the container exits or ctx ends).
func (c *Client) InstanceLogs(ctx context.Context, namespace, name string, o LogOptions, stdout, stderr io.Writer) error {
	path := instancePath(namespace, name, "logs") + "?" + o.Query().Encode()
	return c.frames(ctx, path, stdout, stderr, nil)
}

// Attach writes an instance's output from now on to stdout and stderr
// until its container exits, and returns how it exited.
func (c *Client) Attach(ctx context.Context, namespace, name string, stdout, stderr io.Writer) (ExitStatus, error) {
	var st ExitStatus
	got := false
	err := c.frames(ctx, instancePath(namespace, name, "attach"), stdout, stderr, func(b []byte) {
		got = json.Unmarshal(b, &st) == nil
	})
	if err == nil && !got {
		err = fmt.Errorf("attach to instance %s/%s: the stream ended before its container", namespace, name)
	}
	if err == nil && st.Error != "" {
		err = fmt.Errorf("attach to instance %s/%s: %s", namespace, name, st.Error)
	}
	return st, err
}

func (c *Client) frames(ctx context.Context, path string, stdout, stderr io.Writer, status func([]byte)) error {
	resp, err := c.send(ctx, http.MethodGet, path, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var failed error
	err = ReadFrames(resp.Body, stdout, stderr, func(b []byte) {
		var st ExitStatus
		if status != nil {
			status(b)
		} else if json.Unmarshal(b, &st) == nil && st.Error != "" {
			failed = errors.New(st.Error)
		}
	})
	if err != nil && ctx.Err() != nil {
		return nil // the caller stopped following
	}
	if err == nil {
		err = failed
	}
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}

// ExecOptions describe a command to run in an instance's container.
type ExecOptions struct {
	Command []string
	// Env adds KEY=VALUE variables to the container's.
	Env []string
	// TTY runs the command on a terminal; its output all comes on Stdout.
	TTY bool
	// Stdin, when set, is passed to the command; when it ends the
	// command's stdin is closed.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Resize, with TTY, sets the terminal's size: the first value before
	// the command starts, later ones as they come.
	Resize <-chan TermSize
	// Container names one of the instance's init or sidecar containers;
	// empty (or api.MainContainer) is the main one.
	Container string
	// Resolve lets the name be a service's or job's as well as an
	// instance's: the server runs the command in the first running
	// instance of what it names (api.FirstRunning), and refuses a name
	// that is two of them.
	Resolve bool
}

// Exec runs a command in a running instance and returns its exit code.
func (c *Client) Exec(ctx context.Context, namespace, name string, o ExecOptions) (int, error) {
	s, err := c.StartExec(ctx, namespace, name, o)
	if err != nil {
		return -1, err
	}
	return s.Wait(ctx, o)
}

// ExecStream is a command StartExec has sent: it runs (or is refused)
// whether or not Wait is called, and its output waits on the connection
// until Wait reads it.
type ExecStream struct {
	ws              *websocket.Conn
	namespace, name string
	first           *TermSize // the size that went with the request
}

// StartExec sends the request to run o's command in a running instance,
// and returns once the server has taken it. Wait, with the same o,
// relays its stdio and returns its exit code; Close drops it.
func (c *Client) StartExec(ctx context.Context, namespace, name string, o ExecOptions) (*ExecStream, error) {
	if len(o.Command) == 0 {
		return nil, &api.ValidationError{Fields: []api.FieldError{{Field: "command", Reason: "no command given"}}}
	}
	q, first := execQuery(o)
	ws, err := c.dialWS(ctx, instancePath(namespace, name, "exec")+"?"+q.Encode())
	if err != nil {
		return nil, err
	}
	return &ExecStream{ws: ws, namespace: namespace, name: name, first: first}, nil
}

// Close drops the stream; the server ends the command.
func (s *ExecStream) Close() { s.ws.CloseNow() }

// Wait passes o's stdin and terminal sizes to the command and its output
// to o's writers, in the order it came, until it exits, and returns its
// exit code.
func (s *ExecStream) Wait(ctx context.Context, o ExecOptions) (int, error) {
	ws := s.ws
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wmu sync.Mutex
	send := func(ch byte, p []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return ws.Write(ctx, websocket.MessageBinary, append([]byte{ch}, p...))
	}
	if o.Stdin != nil {
		go sendStdin(o.Stdin, send)
	}
	if o.TTY && o.Resize != nil {
		go sendResizes(ctx, o.Resize, s.first, send)
	}
	code, err := readExec(ctx, ws, o)
	if err != nil {
		return -1, fmt.Errorf("exec in instance %s/%s: %w", s.namespace, s.name, err)
	}
	return code, nil
}

// execQuery is the exec route's query for o. With a TTY, the first size
// waiting on o.Resize travels with it, so the command starts on a
// terminal of the right size; it is returned, to be sent only once.
func execQuery(o ExecOptions) (url.Values, *TermSize) {
	q := url.Values{"cmd": o.Command}
	for _, e := range o.Env {
		q.Add("env", e)
	}
	if o.TTY {
		q.Set("tty", "1")
	}
	if o.Stdin != nil {
		q.Set("stdin", "1")
	}
	if o.Container != "" {
		q.Set("container", o.Container)
	}
	if o.Resolve {
		q.Set("resolve", "1")
	}
	var first *TermSize
	if o.TTY && o.Resize != nil {
		select {
		case ts := <-o.Resize:
			first = &ts
			q.Set("cols", strconv.Itoa(int(ts.Cols)))
			q.Set("rows", strconv.Itoa(int(ts.Rows)))
		default:
		}
	}
	return q, first
}

// sendStdin copies stdin to the exec stream, then says it has ended.
func sendStdin(stdin io.Reader, send func(byte, []byte) error) {
	buf := make([]byte, 32<<10)
	for {
		n, err := stdin.Read(buf)
		if n > 0 && send(ChanStdin, buf[:n]) != nil {
			return
		}
		if err != nil {
			_ = send(ChanStdinEOF, nil)
			return
		}
	}
}

// sendResizes sends the terminal's sizes until ctx ends; first went with
// the request.
func sendResizes(ctx context.Context, sizes <-chan TermSize, first *TermSize, send func(byte, []byte) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case ts := <-sizes:
			if first != nil && ts == *first {
				continue
			}
			b, _ := json.Marshal(ts)
			if send(ChanResize, b) != nil {
				return
			}
		}
	}
}

// readExec copies the command's output to o's writers until its exit
// status comes, and returns its code.
func readExec(ctx context.Context, ws *websocket.Conn, o ExecOptions) (int, error) {
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return -1, fmt.Errorf("the stream ended before the command: %w", err)
		}
		if len(msg) == 0 {
			continue
		}
		p := msg[1:]
		switch msg[0] {
		case ChanStdout:
			if o.Stdout != nil {
				_, _ = o.Stdout.Write(p)
			}
		case ChanStderr:
			if o.Stderr != nil {
				_, _ = o.Stderr.Write(p)
			}
		case ChanExit:
			var st ExitStatus
			if err := json.Unmarshal(p, &st); err != nil {
				return -1, fmt.Errorf("exit status: %w", err)
			}
			// The status is all there is to read: the close handshake
			// would only wait for the agent's close frame, sent after it,
			// and the agent takes the connection's end for one.
			ws.CloseNow()
			if st.Error != "" {
				return -1, errors.New(st.Error)
			}
			return st.Code, nil
		}
	}
}

// PortForward connects to port on an instance's loopback, inside its
// network namespace, as if from a process in the container.
func (c *Client) PortForward(ctx context.Context, namespace, name string, port int) (net.Conn, error) {
	path := instancePath(namespace, name, "portforward") + "?port=" + strconv.Itoa(port)
	ws, err := c.dialWS(ctx, path)
	if err != nil {
		return nil, err
	}
	// The connection outlives ctx, which only bounds the dial.
	return websocket.NetConn(context.WithoutCancel(ctx), ws, websocket.MessageBinary), nil
}

// CopyFrom reads path (a file or directory) out of an instance's
// container as a tar stream, which the caller closes.
func (c *Client) CopyFrom(ctx context.Context, namespace, name, path string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodGet, instancePath(namespace, name, "cp")+"?path="+url.QueryEscape(path), nil, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Checkpoint dumps an instance's running container with CRIU, leaving it
// running, and returns the images as a gzipped tar.
func (c *Client) Checkpoint(ctx context.Context, namespace, name string) (io.ReadCloser, error) {
	resp, err := c.send(ctx, http.MethodPost, instancePath(namespace, name, "checkpoint"), nil, nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// Restore puts an instance's running container back to a checkpoint of
// it (what Checkpoint returned, read from r) on its node.
func (c *Client) Restore(ctx context.Context, namespace, name string, r io.Reader) (*api.MigrationRestored, error) {
	p := instancePath(namespace, name, "restore")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+p, r)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/gzip")
	resp, err := c.doRaw(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out api.MigrationRestored
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("POST %s: %w", p, err)
	}
	return &out, nil
}

// Migrate moves a running instance to node to (any other Ready,
// schedulable node when empty) with CRIU, keeping its processes' memory.
func (c *Client) Migrate(ctx context.Context, namespace, name, to string) (*api.Migration, error) {
	return c.MigrateWith(ctx, namespace, name, api.MigrateOptions{To: to})
}

// MigrateWith is Migrate with the choices of opts (post-copy).
func (c *Client) MigrateWith(ctx context.Context, namespace, name string, opts api.MigrateOptions) (*api.Migration, error) {
	q := url.Values{}
	if opts.To != "" {
		q.Set("to", opts.To)
	}
	if opts.PostCopy {
		q.Set("postCopy", "true")
	}
	p := instancePath(namespace, name, "migrate")
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out api.Migration
	if err := c.do(ctx, http.MethodPost, p, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CopyTo unpacks the tar stream tr into directory dir of an instance's container.
func (c *Client) CopyTo(ctx context.Context, namespace, name, dir string, tr io.Reader) error {
	path := instancePath(namespace, name, "cp") + "?path=" + url.QueryEscape(dir)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.base+path, tr)
	if err != nil {
		return fmt.Errorf("PUT %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/x-tar")
	resp, err := c.doRaw(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// InstanceStats are an instance's resource figures at one moment, from
// its container's cgroups and network namespace. Counters (CPU, network)
// grow from the container's start; a rate takes two readings.
type InstanceStats struct {
	Namespace string    `json:"namespace"`
	Name      string    `json:"name"`
	Node      string    `json:"node"`
	Container string    `json:"container"`
	Time      time.Time `json:"time"`
	// CPUNanos is the CPU time used, in nanoseconds.
	CPUNanos uint64 `json:"cpuNanos"`
	// MemoryBytes is the memory in use, without the page cache the
	// kernel would drop first (as docker stats counts it).
	MemoryBytes uint64 `json:"memoryBytes"`
	// MemoryLimit is the container's memory limit; 0 for none.
	MemoryLimit uint64 `json:"memoryLimit,omitempty"`
	Pids        uint64 `json:"pids"`
	RxBytes     uint64 `json:"rxBytes"`
	TxBytes     uint64 `json:"txBytes"`
	RxPackets   uint64 `json:"rxPackets"`
	TxPackets   uint64 `json:"txPackets"`
}

// Stats reads an instance's resource figures.
func (c *Client) Stats(ctx context.Context, namespace, name string) (InstanceStats, error) {
	return c.ContainerStats(ctx, namespace, name, "")
}

// ContainerStats reads the resource figures of one of an instance's
// init or sidecar containers (container; empty for the main one).
func (c *Client) ContainerStats(ctx context.Context, namespace, name, container string) (InstanceStats, error) {
	path := instancePath(namespace, name, "stats")
	if container != "" {
		path += "?" + url.Values{"container": {container}}.Encode()
	}
	var st InstanceStats
	err := c.do(ctx, http.MethodGet, path, nil, nil, &st)
	return st, err
}

// NodeMetrics reads a node agent's Prometheus metrics, in the text
// format, through the API server it keeps its tunnel to.
func (c *Client) NodeMetrics(ctx context.Context, node string) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, objectPath(api.KindNode, "", node)+"/metrics", nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// Metrics reads the API server's own Prometheus metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	resp, err := c.send(ctx, http.MethodGet, "/metrics", nil, nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(resp.Body)
}

// doRaw sends a prepared request with the client's credentials and
// returns a 2xx answer, or the error the server answered.
func (c *Client) doRaw(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if req.Context().Err() != nil {
			return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, req.Context().Err())
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, errorFrom(req.Method, req.URL.Path, resp)
}

// dialWS opens a WebSocket to path on the server, with the client's
// credentials; a refusal is the server's error.
func (c *Client) dialWS(ctx context.Context, path string) (*websocket.Conn, error) {
	h := http.Header{}
	if c.token != "" {
		h.Set("Authorization", "Bearer "+c.token)
	}
	ws, resp, err := websocket.Dial(ctx, c.base+path, &websocket.DialOptions{HTTPClient: c.wsClient(), HTTPHeader: h})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			p, _, _ := strings.Cut(path, "?")
			if resp.Body != nil {
				defer resp.Body.Close()
			}
			return nil, errorFrom(http.MethodGet, p, resp)
		}
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	ws.SetReadLimit(MaxFrame + 1)
	return ws, nil
}

// wsClient is the client a WebSocket dials with: the one of every
// request, or, for the first WebSocket of a client given one, one whose
// only connection is the one WithWebSocketConn gave.
func (c *Client) wsClient() *http.Client {
	c.wsMu.Lock()
	conn := c.wsFirst
	c.wsFirst = nil
	c.wsMu.Unlock()
	if conn == nil {
		return c.hc
	}
	tr, ok := c.hc.Transport.(*http.Transport)
	if !ok || c.local {
		conn.Close()
		return c.hc
	}
	tr = tr.Clone()
	var once sync.Once
	tr.DialTLSContext = func(context.Context, string, string) (net.Conn, error) {
		var got net.Conn
		once.Do(func() { got = conn })
		if got == nil {
			// One WebSocket is one connection: a transport that dials
			// again has lost it, and the request fails as it would have.
			return nil, errors.New("the connection made ahead is gone")
		}
		return got, nil
	}
	hc := *c.hc
	hc.Transport = tr
	return &hc
}

// OpenTunnel opens node's tunnel to this server (see the apiserver's
// /v1/tunnel/{node}): a connection the server sends requests for the
// node's agent over. The agent serves them; the server closes it when
// another tunnel of the node replaces it.
func (c *Client) OpenTunnel(ctx context.Context, node string) (io.ReadWriteCloser, error) {
	path := "/v1/tunnel/" + url.PathEscape(node)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", path, err)
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", TunnelProtocol)
	resp, err := c.doRaw101(req)
	if err != nil {
		return nil, err
	}
	rwc, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: the answer is not a connection", path)
	}
	return rwc, nil
}

// TunnelProtocol is the Upgrade protocol of a node's tunnel.
const TunnelProtocol = "berth-tunnel"

func (c *Client) doRaw101(req *http.Request) (*http.Response, error) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.upgradeClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp, nil
	}
	defer resp.Body.Close()
	return nil, errorFrom(req.Method, req.URL.Path, resp)
}

// TunnelConfig is the yamux configuration of both ends of a tunnel: a
// keepalive finds a dead peer within seconds. Over a unix socket (local)
// there is none: a peer that goes away closes the socket at once, and
// the pings only woke both ends every few seconds. A stream's window
// bounds its throughput to window/round trip: a migration's images cross
// two tunnels while the instance runs nowhere, and on a busy node a round
// trip takes tens of milliseconds. The window is only filled (memory
// held) for a reader slower than its writer.
func TunnelConfig(local bool) *yamux.Config {
	c := yamux.DefaultConfig()
	c.EnableKeepAlive = !local
	c.KeepAliveInterval = 5 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 16 << 20
	c.LogOutput = io.Discard
	return c
}
