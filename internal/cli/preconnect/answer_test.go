package preconnect

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/api/client/execwire"
)

// frame is a server's unmasked WebSocket frame: b0 is FIN, the reserved
// bits and the opcode.
func frame(b0 byte, payload []byte) []byte {
	f := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		f = append(f, byte(n))
	case n <= 0xffff:
		f = append(f, 126)
		f = binary.BigEndian.AppendUint16(f, uint16(n))
	default:
		f = append(f, 127)
		f = binary.BigEndian.AppendUint64(f, uint64(n))
	}
	return append(f, payload...)
}

func msg(ch byte, p string) []byte { return frame(0x82, append([]byte{ch}, p...)) }

func exitMsg(es execwire.ExitStatus) []byte {
	b, _ := json.Marshal(es)
	return msg(execwire.ChanExit, string(b))
}

const testKey = "dGhlIHNhbXBsZSBub25jZQ=="

// RFC 6455's own example of a key and its accept value.
func TestAcceptKey(t *testing.T) {
	if got := AcceptKey(testKey); got != "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" {
		t.Errorf("AcceptKey = %s", got)
	}
}

// readEarly takes a whole answer of the agent's forms, says when more is
// to come, and leaves everything else to main.
func TestReadEarly(t *testing.T) {
	head := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + AcceptKey(testKey) + "\r\n\r\n"
	big := strings.Repeat("x", 70000)
	whole := bytes.Join([][]byte{[]byte(head), msg(execwire.ChanStdout, "out 1\n"), frame(0x82, nil), msg(execwire.ChanStderr, "err\n"),
		msg(execwire.ChanStdout, big), msg(execwire.ChanStdout, strings.Repeat("y", 300)), exitMsg(execwire.ExitStatus{Code: 3}), frame(0x88, nil)}, nil)
	st, outs, code := readEarly(whole, testKey)
	if st != earlyDone || code != 3 || len(outs) != 4 || string(outs[0].p) != "out 1\n" || outs[0].stderr ||
		string(outs[1].p) != "err\n" || !outs[1].stderr || string(outs[2].p) != big || len(outs[3].p) != 300 {
		t.Fatalf("readEarly of a whole answer: %v, %d outputs, code %d", st, len(outs), code)
	}
	// Every cut before the exit message's end is partial.
	end := len(whole) - len(frame(0x88, nil))
	for i := range end {
		if st, _, _ := readEarly(whole[:i], testKey); st != earlyPartial {
			t.Fatalf("readEarly of the first %d of %d bytes: %v, want partial", i, end, st)
		}
	}
	body := bytes.Join([][]byte{msg(execwire.ChanStdout, "out\n"), exitMsg(execwire.ExitStatus{Code: 0})}, nil)
	for name, b := range map[string][]byte{
		"an error answer":  []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"),
		"another key":      []byte(strings.Replace(head, AcceptKey(testKey), AcceptKey("b3RoZXIga2V5IGhlcmUhIQ=="), 1) + string(body)),
		"no upgrade":       []byte(strings.Replace(head, "Upgrade: websocket\r\n", "", 1) + string(body)),
		"an extension":     []byte(strings.Replace(head, "\r\n\r\n", "\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n", 1) + string(body)),
		"a subprotocol":    []byte(strings.Replace(head, "\r\n\r\n", "\r\nSec-WebSocket-Protocol: x\r\n\r\n", 1) + string(body)),
		"HTTP/1.0":         []byte(strings.Replace(head, "HTTP/1.1", "HTTP/1.0", 1) + string(body)),
		"a text message":   append([]byte(head), frame(0x81, []byte("\x01hi"))...),
		"a fragment":       append([]byte(head), frame(0x02, []byte("\x01hi"))...),
		"a reserved bit":   append([]byte(head), frame(0xc2, []byte("\x01hi"))...),
		"a ping":           append([]byte(head), frame(0x89, nil)...),
		"a close":          append([]byte(head), frame(0x88, nil)...),
		"a masked frame":   append([]byte(head), 0x82, 0x80|2, 0, 0, 0, 0, 1, 1),
		"another channel":  append([]byte(head), msg(9, "x")...),
		"an exit error":    append([]byte(head), exitMsg(execwire.ExitStatus{Code: -1, Error: "no such container"})...),
		"a broken status":  append([]byte(head), msg(execwire.ChanExit, "{code")...),
		"over the limit":   append([]byte(head), 0x82, 127, 0, 0, 0, 0, 0, 0x20, 0, 0),
		"a header no end":  []byte("HTTP/1.1 101 Switching Protocols\r\n" + strings.Repeat("X-A: b\r\n", 3000)),
		"a malformed line": []byte(strings.Replace(head, "Connection: Upgrade", "Connection Upgrade", 1) + string(body)),
	} {
		if st, _, _ := readEarly(b, testKey); st != earlyNot {
			t.Errorf("readEarly of %s: %v, want it left to main", name, st)
		}
	}
}

// execAnswers is a TLS server answering exec WebSockets as the agent
// does (with coder/websocket): its messages, each sent once the one
// before it is and gate (if any) lets it.
func execAnswers(t *testing.T, gate <-chan struct{}, msgs ...[]byte) (url, caFile string) {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		for i, m := range msgs {
			if i == len(msgs)-1 && gate != nil {
				<-gate
			}
			if ws.Write(r.Context(), websocket.MessageBinary, m) != nil {
				return
			}
		}
		_ = ws.Close(websocket.StatusNormalClosure, "")
	}))
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile
}

// ended records where an exec answered in whole before main took it
// over ended: its output and its exit code.
type ended struct {
	stdout, stderr bytes.Buffer
	code           chan int
}

func (e *ended) install(t *testing.T) {
	e.code = make(chan int, 1)
	oldOut, oldErr, oldExit := stdout, stderr, exit
	stdout, stderr, exit = &e.stdout, &e.stderr, func(code int) { e.code <- code }
	t.Cleanup(func() { stdout, stderr, exit = oldOut, oldErr, oldExit })
}

// An answer that is whole before main takes the exec over ends the
// process with the command's output and exit code, as main would have.
func TestWholeAnswerEndsTheProcess(t *testing.T) {
	clearEnv(t)
	var e ended
	e.install(t)
	b, _ := json.Marshal(execwire.ExitStatus{Code: 3})
	url, ca := execAnswers(t, nil, append([]byte{execwire.ChanStdout}, "out 1\n"...), append([]byte{execwire.ChanStderr}, "err\n"...),
		append([]byte{execwire.ChanStdout}, "out 2\n"...), append([]byte{execwire.ChanExit}, b...))
	d := start([]string{"--server", url, "--ca-file", ca, "exec", "web", "true"})
	select {
	case code := <-e.code:
		if code != 3 || e.stdout.String() != "out 1\nout 2\n" || e.stderr.String() != "err\n" {
			t.Errorf("ended with %d, stdout %q, stderr %q", code, e.stdout.String(), e.stderr.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the whole answer did not end the process")
	}
	ahead = d
	defer func() { ahead = nil }()
	if s := TakeSent(t.Context()); s != nil {
		t.Error("an exec that ended was handed to main")
	}
}

// Once main takes the exec over, the answer is main's: what was read of
// it comes with the request, the rest is still on the connection, and
// nothing ends the process.
func TestTakeSentGetsTheAnswerReadSoFar(t *testing.T) {
	clearEnv(t)
	var e ended
	e.install(t)
	gate := make(chan struct{})
	b, _ := json.Marshal(execwire.ExitStatus{Code: 0})
	url, ca := execAnswers(t, gate, append([]byte{execwire.ChanStdout}, "out 1\n"...), append([]byte{execwire.ChanExit}, b...))
	d := start([]string{"--server", url, "--ca-file", ca, "exec", "web", "true"})
	// Until the first message is in.
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Contains(d.answerCopy(), []byte("out 1\n")) {
		if time.Now().After(deadline) {
			t.Fatalf("the first message was not read: %q", d.answerCopy())
		}
		time.Sleep(time.Millisecond)
	}
	ahead = d
	defer func() { ahead = nil }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s := TakeSent(ctx)
	if s == nil || s.Err != nil {
		t.Fatalf("TakeSent = %+v", s)
	}
	defer s.Conn.Close()
	close(gate)
	all := s.Answer
	buf := make([]byte, 4096)
	_ = s.Conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		st, outs, code := readEarly(all, s.Key)
		if st == earlyDone {
			if len(outs) != 1 || string(outs[0].p) != "out 1\n" || code != 0 {
				t.Errorf("the answer read in two parts: %d outputs, code %d", len(outs), code)
			}
			break
		}
		if st != earlyPartial {
			t.Fatalf("the answer read in two parts is %v", st)
		}
		n, err := s.Conn.Read(buf)
		if err != nil {
			t.Fatalf("reading the rest of the answer: %v (read %q)", err, all)
		}
		all = append(all, buf[:n]...)
	}
	select {
	case code := <-e.code:
		t.Errorf("the process ended (%d) after main took the exec over", code)
	default:
	}
}

func (d *dial) answerCopy() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return bytes.Clone(d.answer)
}

// The initialiser holds a plain exec's process until its answer is
// whole, and no longer: the process has ended by the time it returns.
func TestHoldEndsWithAWholeAnswer(t *testing.T) {
	clearEnv(t)
	var e ended
	e.install(t)
	b, _ := json.Marshal(execwire.ExitStatus{Code: 4})
	url, ca := execAnswers(t, nil, append([]byte{execwire.ChanStdout}, "out\n"...), append([]byte{execwire.ChanExit}, b...))
	d := start([]string{"--server", url, "--ca-file", ca, "exec", "web", "true"})
	held := make(chan struct{})
	go func() {
		d.holdFor(time.Hour)
		close(held)
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the hold did not end with the answer")
	}
	select {
	case code := <-e.code:
		if code != 4 || e.stdout.String() != "out\n" {
			t.Errorf("ended with %d, stdout %q", code, e.stdout.String())
		}
	default:
		t.Error("the hold ended before the process did")
	}
}

// A command still running when the hold is up is left to main, which
// takes over the answer read so far; nothing ends the process.
func TestHoldLeavesARunningCommandToMain(t *testing.T) {
	clearEnv(t)
	var e ended
	e.install(t)
	gate := make(chan struct{})
	defer close(gate)
	b, _ := json.Marshal(execwire.ExitStatus{Code: 0})
	url, ca := execAnswers(t, gate, append([]byte{execwire.ChanStdout}, "out 1\n"...), append([]byte{execwire.ChanExit}, b...))
	d := start([]string{"--server", url, "--ca-file", ca, "exec", "web", "true"})
	held := make(chan struct{})
	go func() {
		d.holdFor(10 * time.Millisecond)
		close(held)
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("the hold did not end while the command ran")
	}
	ahead = d
	defer func() { ahead = nil }()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s := TakeSent(ctx)
	if s == nil || s.Err != nil {
		t.Fatalf("TakeSent = %+v", s)
	}
	s.Conn.Close()
	select {
	case code := <-e.code:
		t.Errorf("the process ended (%d) though the command was still running", code)
	default:
	}
}

// Nothing but a plain exec sent ahead is held.
func TestHoldOnlyForAnExecSentAhead(t *testing.T) {
	clearEnv(t)
	url, ca, _ := server(t)
	var none *dial
	none.holdFor(time.Hour)
	d := start([]string{"--server", url, "--ca-file", ca, "port-forward", "web", "8080:80"})
	held := make(chan struct{})
	go func() {
		d.holdFor(time.Hour)
		close(held)
	}()
	select {
	case <-held:
	case <-time.After(30 * time.Second):
		t.Fatal("a port-forward's connection was held for")
	}
	<-d.done
	d.take(t.Context(), "", "", 0)
}

// With no server named, a plain exec goes ahead on the data dir's unix
// socket, as api/client sends it there, and its whole answer ends the
// process.
func TestLocalExecGoesAheadOnTheSocket(t *testing.T) {
	clearEnv(t)
	var e ended
	e.install(t)
	dir, err := os.MkdirTemp("", "berth-preconnect-") // short: a socket path has a limit
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	l, err := net.Listen("unix", filepath.Join(dir, "berth.sock"))
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Host + " " + r.URL.RequestURI()
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		b, _ := json.Marshal(execwire.ExitStatus{Code: 5})
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{execwire.ChanStdout}, "local\n"...))
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{execwire.ChanExit}, b...))
	})}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	args := []string{"--data-dir", dir, "exec", "web", "true"}
	d := start(args)
	if d == nil {
		t.Fatal("a plain local exec did not go ahead")
	}
	d.holdFor(time.Hour)
	select {
	case code := <-e.code:
		if code != 5 || e.stdout.String() != "local\n" {
			t.Errorf("ended with %d, stdout %q", code, e.stdout.String())
		}
	default:
		t.Fatal("the whole answer did not end the process")
	}
	if req := <-got; req != "berth "+PlanOf(args).Target() {
		t.Errorf("the server got %q, want host berth and %s", req, PlanOf(args).Target())
	}
}
