package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path"
	goruntime "runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/errdefs"
	"github.com/berth-dev/berth/internal/runtime"
)

// The agent's side of the instance subresources. The API server reaches
// these routes over the node's tunnel (see ServeTunnel), after it has
// authorised the caller; they name an instance by its UID, whose latest
// container (or the one before, for previous logs) they serve from the
// runtime (?container= may name the latest, saving a search):
//
//	GET /v1/instances/{uid}/logs         frames (client.ReadFrames); ?follow, tail, since, timestamps, previous
//	GET /v1/instances/{uid}/attach       frames from now until the container exits, then its status
//	GET /v1/instances/{uid}/exec         WebSocket (client.Chan*); ?cmd=..&env=..&tty&stdin&cols&rows
//	GET /v1/instances/{uid}/cp?path=P    a tar of P
//	PUT /v1/instances/{uid}/cp?path=DIR  unpack the tar in the body into DIR
//	GET /v1/instances/{uid}/portforward  WebSocket to ?port= on the container's loopback
//	GET /v1/instances/{uid}/stats        client.InstanceStats
//	GET /metrics                         the agent's Prometheus metrics

// RemoteHandler serves the instance subresources from this node's runtime.
// metrics, when not nil, serves GET /metrics.
func (a *Agent) RemoteHandler(metrics http.Handler) http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /v1/instances/{uid}/logs", a.serveLogs)
	m.HandleFunc("GET /v1/instances/{uid}/attach", a.serveAttach)
	m.HandleFunc("GET /v1/instances/{uid}/exec", a.serveExec)
	m.HandleFunc("GET /v1/instances/{uid}/cp", a.serveCopyFrom)
	m.HandleFunc("PUT /v1/instances/{uid}/cp", a.serveCopyTo)
	m.HandleFunc("GET /v1/instances/{uid}/portforward", a.servePortForward)
	m.HandleFunc("GET /v1/instances/{uid}/stats", a.serveStats)
	if metrics != nil {
		m.Handle("GET /metrics", metrics)
	}
	return m
}

// container finds an instance's latest container, or with previous the
// one before it (the agent keeps both, see reconcile).
func (a *Agent) container(ctx context.Context, uid string, previous bool) (runtime.Status, error) {
	all, err := a.cfg.Runtime.List(ctx)
	if err != nil {
		return runtime.Status{}, err
	}
	var mine []runtime.Status
	for _, c := range all {
		if c.Labels[labelUID] == uid {
			mine = append(mine, c)
		}
	}
	slices.SortFunc(mine, func(x, y runtime.Status) int { return attemptOf(y) - attemptOf(x) })
	switch {
	case len(mine) == 0:
		return runtime.Status{}, fmt.Errorf("instance %s: %w: no container on node %q", uid, errdefs.ErrNotFound, a.cfg.Node.Name)
	case previous && len(mine) < 2:
		return runtime.Status{}, fmt.Errorf("instance %s: %w: no container before the current one on node %q", uid, errdefs.ErrNotFound, a.cfg.Node.Name)
	case previous:
		return mine[1], nil
	}
	return mine[0], nil
}

// running is the instance's latest container, which must be running.
// The API server passes the container the instance's status names
// (?container=): when it is the instance's and runs, it is taken without
// listing every container on the node.
func (a *Agent) running(r *http.Request) (runtime.Status, error) {
	ctx, uid := r.Context(), r.PathValue("uid")
	if hint := r.URL.Query().Get("container"); hint != "" {
		if c, err := a.cfg.Runtime.State(ctx, hint); err == nil && c.Labels[labelUID] == uid && c.State == runtime.Running {
			return c, nil
		}
	}
	c, err := a.container(ctx, uid, false)
	if err != nil {
		return c, err
	}
	if c.State != runtime.Running {
		return c, fmt.Errorf("instance %s: container %s: %w: it is %s", uid, c.ID, errdefs.ErrFailedPrecondition, c.State)
	}
	return c, nil
}

func writeErr(w http.ResponseWriter, err error) {
	code := errdefs.HTTPStatus(err)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(struct {
		Error  string           `json:"error"`
		Code   string           `json:"code"`
		Fields []api.FieldError `json:"fields,omitempty"`
	}{err.Error(), errdefs.Code(err), api.FieldErrors(err)})
}

func flusher(w http.ResponseWriter) func() {
	rc := http.NewResponseController(w)
	return func() { _ = rc.Flush() }
}

func (a *Agent) serveLogs(w http.ResponseWriter, r *http.Request) {
	o, err := client.ParseLogOptions(r.URL.Query())
	if err != nil {
		writeErr(w, err)
		return
	}
	c, err := a.container(r.Context(), r.PathValue("uid"), o.Previous)
	if err != nil {
		writeErr(w, err)
		return
	}
	a.streamLogs(w, r, c, o, nil)
}

// serveAttach streams the container's output from now on until it exits,
// then its exit status.
func (a *Agent) serveAttach(w http.ResponseWriter, r *http.Request) {
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	o := client.LogOptions{Follow: true, Tail: 1, Since: time.Now()}
	a.streamLogs(w, r, c, o, func(fw *client.FrameWriter) {
		st, err := a.cfg.Runtime.State(r.Context(), c.ID)
		es := client.ExitStatus{Code: st.ExitCode}
		if err != nil {
			es.Error = err.Error()
		}
		b, _ := json.Marshal(es)
		_ = fw.WriteFrame(client.StreamStatus, b)
	})
}

func (a *Agent) streamLogs(w http.ResponseWriter, r *http.Request, c runtime.Status, o client.LogOptions, end func(*client.FrameWriter)) {
	w.Header().Set("Content-Type", "application/vnd.berth.frames")
	w.WriteHeader(http.StatusOK)
	fw := client.NewFrameWriter(w, flusher(w))
	defer fw.Close()
	stdout, stderr := fw.Stream(client.StreamStdout), fw.Stream(client.StreamStderr)
	ro := runtime.LogOptions{Follow: o.Follow, Tail: o.Tail, Timestamps: o.Timestamps}
	if !o.Since.IsZero() {
		// The runtime tails first; the lines since a time are a suffix of
		// all lines, so filtering its tail gives the tail of those lines.
		ro.Timestamps = true
		stdout = &sinceWriter{w: stdout, since: o.Since, strip: !o.Timestamps}
		stderr = &sinceWriter{w: stderr, since: o.Since, strip: !o.Timestamps}
	}
	err := a.cfg.Runtime.Logs(r.Context(), c.ID, ro, stdout, stderr)
	if err != nil && r.Context().Err() == nil {
		b, _ := json.Marshal(client.ExitStatus{Code: -1, Error: fmt.Sprintf("logs of container %s: %v", c.ID, err)})
		_ = fw.WriteFrame(client.StreamStatus, b)
		return
	}
	if end != nil && r.Context().Err() == nil {
		end(fw)
	}
}

// sinceWriter passes on the lines ("TIME CONTENT\n", as the runtime
// writes them with timestamps) written at or after since, without their
// time when strip.
type sinceWriter struct {
	w     io.Writer
	since time.Time
	strip bool
	buf   []byte
}

func (s *sinceWriter) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	var out []byte
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		line := s.buf[:i+1]
		ts, rest, _ := bytes.Cut(line, []byte{' '})
		t, err := time.Parse(time.RFC3339Nano, string(ts))
		if err != nil || !t.Before(s.since) {
			if s.strip && err == nil {
				line = rest
			}
			out = append(out, line...)
		}
		s.buf = s.buf[i+1:]
	}
	if len(out) > 0 {
		if _, err := s.w.Write(out); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// wsWriter sends writes as WebSocket messages of one channel.
type wsWriter struct {
	ctx context.Context
	ws  *websocket.Conn
	mu  *sync.Mutex
	ch  byte
}

func (w wsWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for rest := p; len(rest) > 0; {
		n := min(len(rest), client.MaxFrame-1)
		if err := w.ws.Write(w.ctx, websocket.MessageBinary, append([]byte{w.ch}, rest[:n]...)); err != nil {
			return 0, err
		}
		rest = rest[n:]
	}
	return len(p), nil
}

// accept upgrades to a WebSocket. Its only caller is the API server over
// the tunnel (which checked the request), so no Origin rule applies.
func accept(w http.ResponseWriter, r *http.Request) (*websocket.Conn, error) {
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(client.MaxFrame + 1)
	return ws, nil
}

func (a *Agent) serveExec(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q["cmd"]) == 0 {
		writeErr(w, &api.ValidationError{Fields: []api.FieldError{{Field: "cmd", Reason: "no command given"}}})
		return
	}
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	ws, err := accept(w, r)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	var wmu sync.Mutex
	pr := runtime.ExecProcess{Args: q["cmd"], Env: q["env"], Tty: q.Get("tty") == "1",
		Stdout: wsWriter{ctx, ws, &wmu, client.ChanStdout}, Stderr: wsWriter{ctx, ws, &wmu, client.ChanStderr}}
	// The command's stdin is a pipe the agent owns: the exec process gets
	// its read end as a file, so nothing waits on a copy once it exits.
	var stdinW *os.File
	if q.Get("stdin") == "1" {
		rd, wr, err := os.Pipe()
		if err != nil {
			a.sendExit(ctx, ws, &wmu, client.ExitStatus{Code: -1, Error: err.Error()})
			return
		}
		defer rd.Close()
		defer wr.Close()
		pr.Stdin, stdinW = rd, wr
	}
	term := &execTerm{}
	if pr.Tty {
		cols, _ := strconv.Atoi(q.Get("cols"))
		rows, _ := strconv.Atoi(q.Get("rows"))
		term.size = client.TermSize{Cols: uint16(cols), Rows: uint16(rows)}
		pr.Resize = term.attach
	}
	go a.execInput(ctx, ws, stdinW, term)
	code, err := a.cfg.Runtime.Exec(ctx, c.ID, pr)
	term.detach()
	es := client.ExitStatus{Code: code}
	if err != nil {
		es.Error = err.Error()
	}
	a.sendExit(ctx, ws, &wmu, es)
}

func (a *Agent) sendExit(ctx context.Context, ws *websocket.Conn, mu *sync.Mutex, es client.ExitStatus) {
	b, _ := json.Marshal(es)
	mu.Lock()
	_ = ws.Write(ctx, websocket.MessageBinary, append([]byte{client.ChanExit}, b...))
	mu.Unlock()
	// Wait (briefly) for the client to close, so the status is not lost
	// to a reset connection.
	cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = ws.Close(websocket.StatusNormalClosure, "")
	<-cctx.Done()
}

// execInput passes the client's stdin and terminal sizes to the command.
func (a *Agent) execInput(ctx context.Context, ws *websocket.Conn, stdin *os.File, term *execTerm) {
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			if stdin != nil {
				stdin.Close()
			}
			return
		}
		if len(msg) == 0 {
			continue
		}
		switch msg[0] {
		case client.ChanStdin:
			if stdin != nil {
				if _, err := stdin.Write(msg[1:]); err != nil {
					stdin = nil
				}
			}
		case client.ChanStdinEOF:
			if stdin != nil {
				stdin.Close()
				stdin = nil
			}
		case client.ChanResize:
			var ts client.TermSize
			if json.Unmarshal(msg[1:], &ts) == nil {
				term.resize(ts)
			}
		}
	}
}

// execTerm is an exec's terminal, once the runtime has made it: sizes
// that come before are kept for it.
type execTerm struct {
	mu   sync.Mutex
	pty  *os.File
	size client.TermSize
	done bool
}

func (t *execTerm) attach(pty *os.File) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.pty = pty
	t.apply()
}

func (t *execTerm) detach() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.done, t.pty = true, nil
}

func (t *execTerm) resize(ts client.TermSize) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.size = ts
	t.apply()
}

func (t *execTerm) apply() {
	if t.pty == nil || t.done || t.size.Cols == 0 || t.size.Rows == 0 {
		return
	}
	_ = unix.IoctlSetWinsize(int(t.pty.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Col: t.size.Cols, Row: t.size.Rows})
}

// runTar runs tar in the container with the given stdin and stdout, and
// returns its exit code and what it said on stderr. The image must have a
// tar (as kubectl cp needs).
func (a *Agent) runTar(ctx context.Context, id string, args []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	var errBuf bytes.Buffer
	pr := runtime.ExecProcess{Args: append([]string{"tar"}, args...), Stdout: stdout, Stderr: &limitedBuffer{b: &errBuf, max: 4 << 10}}
	if stdin != nil {
		// A pipe the agent owns, fed from the request body.
		rd, wr, err := os.Pipe()
		if err != nil {
			return -1, "", err
		}
		defer rd.Close()
		go func() {
			_, _ = io.Copy(wr, stdin)
			wr.Close()
		}()
		pr.Stdin = rd
	}
	code, err := a.cfg.Runtime.Exec(ctx, id, pr)
	return code, strings.TrimSpace(errBuf.String()), err
}

type limitedBuffer struct {
	b   *bytes.Buffer
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - l.b.Len(); room > 0 {
		l.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// startedWriter sends the response's header before the first byte of
// the body, so an error found before any output can still be an error.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (s *startedWriter) Write(p []byte) (int, error) {
	if !s.started {
		s.w.Header().Set("Content-Type", "application/x-tar")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	return s.w.Write(p)
}

func cpPath(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" || !path.IsAbs(p) {
		return "", &api.ValidationError{Fields: []api.FieldError{{Field: "path", Reason: fmt.Sprintf("%q is not an absolute path in the container", p)}}}
	}
	return path.Clean(p), nil
}

func (a *Agent) serveCopyFrom(w http.ResponseWriter, r *http.Request) {
	p, err := cpPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	// tar writes its end-of-archive blocks even when it finds nothing, so
	// a missing path is asked about first, while an error can still be sent.
	if code, err := a.cfg.Runtime.Exec(r.Context(), c.ID, runtime.ExecProcess{Args: []string{"test", "-e", p}}); err == nil && code != 0 {
		writeErr(w, fmt.Errorf("copy %s from container %s: %w: no such file or directory", p, c.ID, errdefs.ErrNotFound))
		return
	}
	sw := &startedWriter{w: w}
	code, msg, err := a.runTar(r.Context(), c.ID, []string{"cf", "-", "-C", path.Dir(p), path.Base(p)}, nil, sw)
	switch {
	case err == nil && code == 0:
		if !sw.started {
			sw.Write(nil)
		}
	case sw.started:
		// Half a tar has gone out: cut the stream so the client sees it fail.
		panic(http.ErrAbortHandler)
	case err != nil:
		writeErr(w, fmt.Errorf("copy %s from container %s: %w", p, c.ID, err))
	case strings.Contains(msg, "No such file") || strings.Contains(msg, "not found"):
		writeErr(w, fmt.Errorf("copy %s from container %s: %w: %s", p, c.ID, errdefs.ErrNotFound, msg))
	default:
		writeErr(w, fmt.Errorf("copy %s from container %s: tar exited %d: %s", p, c.ID, code, msg))
	}
}

func (a *Agent) serveCopyTo(w http.ResponseWriter, r *http.Request) {
	p, err := cpPath(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	c, err := a.running(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	code, msg, err := a.runTar(r.Context(), c.ID, []string{"xf", "-", "-C", p}, r.Body, io.Discard)
	switch {
	case err != nil:
		writeErr(w, fmt.Errorf("copy into %s of container %s: %w", p, c.ID, err))
	case code != 0 && (strings.Contains(msg, "No such file") || strings.Contains(msg, "can't change directory")):
		writeErr(w, fmt.Errorf("copy into %s of container %s: %w: %s", p, c.ID, errdefs.ErrNotFound, msg))
	case code != 0:
		writeErr(w, fmt.Errorf("copy into %s of container %s: tar exited %d: %s", p, c.ID, code, msg))
	default:
		w.WriteHeader(http.StatusNoContent)
	}
}

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
