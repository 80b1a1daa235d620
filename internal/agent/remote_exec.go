package agent

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/coder/websocket"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/runtime"
)

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
	pr := runtime.ExecProcess{Args: q["cmd"], Env: q["env"], Tty: q.Get("tty") == "1", State: &c,
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
	// The close handshake waits (5s at most) for the client's close, so
	// the status is not lost to a reset connection; once it is done,
	// nothing is left to wait for (a hijacked connection's request never
	// ends by itself: waiting for it held every exec's stream 2s longer).
	_ = ws.Close(websocket.StatusNormalClosure, "")
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
