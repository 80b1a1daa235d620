package preexec

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/cli/preconnect"
)

// execServer answers exec WebSockets as the agent does: the command's
// output, then its exit code (3). It counts the requests it got.
func execServer(t *testing.T) (srv *httptest.Server, requests *atomic.Int32, last *atomic.Value) {
	requests, last = &atomic.Int32{}, &atomic.Value{}
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		last.Store(r.URL.RequestURI())
		if r.URL.Query().Get("cmd") == "missing" {
			http.Error(w, `{"error":"instance default/web not found","code":"NotFound"}`, http.StatusNotFound)
			return
		}
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		b, _ := json.Marshal(client.ExitStatus{Code: 3})
		for _, m := range [][]byte{append([]byte{client.ChanStdout}, "out 1\n"...), append([]byte{client.ChanStderr}, "err\n"...),
			append([]byte{client.ChanStdout}, "out 2\n"...), append([]byte{client.ChanExit}, b...)} {
			_ = ws.Write(r.Context(), websocket.MessageBinary, m)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, requests, last
}

// send sends p ahead as preconnect does, on a connection of its own.
func send(t *testing.T, srv *httptest.Server, p *preconnect.Plan) *preconnect.Sent {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	c, err := tls.Dial("tcp", u.Host, &tls.Config{RootCAs: roots, ServerName: u.Hostname()})
	if err != nil {
		t.Fatal(err)
	}
	s := p.Send(c)
	if s.Err != nil {
		t.Fatal(s.Err)
	}
	return s
}

// The request sent ahead is the one api/client's Exec sends for the same
// command, and taking it over relays the command's output in order and
// its exit code, with no second request.
func TestTakeRelaysTheExecSentAhead(t *testing.T) {
	srv, requests, last := execServer(t)
	for _, p := range []*preconnect.Plan{
		{Server: srv.URL, Token: "tok", Namespace: "default", Name: "web", Command: []string{"true"}},
		{Server: srv.URL, Namespace: "prod", Name: "web-1", Command: []string{"sh", "-c", "echo a&b=c; exit 3"}, Env: []string{"A=1", "B= 2"}, Container: "side"},
		{Server: srv.URL, Namespace: "default", Name: "wéb x", Command: []string{"--", "100%", "?"}},
	} {
		before := requests.Load()
		s := send(t, srv, p)
		stream, ok, err := take(t.Context(), s, p)
		if !ok || err != nil {
			t.Fatalf("%s: take: %v, %v", p, ok, err)
		}
		var stdout, stderr bytes.Buffer
		code, err := stream.Wait(t.Context(), client.ExecOptions{Stdout: &stdout, Stderr: &stderr})
		if err != nil || code != 3 || stdout.String() != "out 1\nout 2\n" || stderr.String() != "err\n" {
			t.Errorf("%s: exit %d, %v; stdout %q, stderr %q", p, code, err, stdout.String(), stderr.String())
		}
		if n := requests.Load() - before; n != 1 {
			t.Errorf("%s: the server got %d requests, want 1", p, n)
		}
		sentURI, _ := last.Load().(string)
		// What api/client's own Exec asks for the same command.
		c, err := client.New(srv.URL, client.WithHTTPClient(srv.Client()), client.WithToken(p.Token))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(t.Context(), p.Namespace, p.Name, client.ExecOptions{Command: p.Command, Env: p.Env, Container: p.Container, Resolve: true}); err != nil {
			t.Fatal(err)
		}
		if direct, _ := last.Load().(string); direct != sentURI {
			t.Errorf("sent ahead %s, the client sends %s", sentURI, direct)
		}
	}
}

// A request sent ahead that is not what the command line means is
// dropped, and the command fails rather than run a second time.
func TestTakeRefusesAnotherCommand(t *testing.T) {
	srv, requests, _ := execServer(t)
	p := &preconnect.Plan{Server: srv.URL, Namespace: "default", Name: "web", Command: []string{"true"}}
	wants := []*preconnect.Plan{
		nil, // -i, -t or a kind, read by main
		{Server: srv.URL, Namespace: "default", Name: "web", Command: []string{"false"}},
		{Server: srv.URL, Namespace: "default", Name: "web", Command: []string{"true"}, Env: []string{"A=1"}},
		{Server: srv.URL, Token: "t", Namespace: "default", Name: "web", Command: []string{"true"}},
		{Server: srv.URL, Namespace: "prod", Name: "web", Command: []string{"true"}},
	}
	for _, want := range wants {
		s := send(t, srv, p)
		stream, ok, err := take(t.Context(), s, want)
		if !ok || err == nil || stream != nil || !strings.Contains(err.Error(), "not sent again") {
			t.Errorf("take for %s of %s: %v, %v, %v", want, p, stream, ok, err)
		}
	}
	srv.Close() // waits for the requests under way
	if n := requests.Load(); n > int32(len(wants)) {
		t.Errorf("%d requests sent ahead, the server got %d", len(wants), n)
	}
}

// A refusal comes back as the client's own error would.
func TestTakeGivesTheServersError(t *testing.T) {
	srv, _, _ := execServer(t)
	p := &preconnect.Plan{Server: srv.URL, Namespace: "default", Name: "web", Command: []string{"missing"}}
	_, ok, err := take(t.Context(), send(t, srv, p), p)
	if !ok || err == nil || !strings.Contains(err.Error(), "instance default/web not found") {
		t.Errorf("take: %v, %v", ok, err)
	}
}
