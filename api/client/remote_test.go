package client

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"
)

// The connection WithWebSocketConn gives carries the first exec; the
// next one dials its own, over HTTP/1.1 as every WebSocket does.
func TestWebSocketConnCarriesTheFirstExec(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		b, _ := json.Marshal(ExitStatus{Code: len(r.URL.Query()["cmd"])})
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{ChanExit}, b...))
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cfg := &tls.Config{RootCAs: roots, ServerName: "127.0.0.1"}
	ahead, err := tls.Dial("tcp", strings.TrimPrefix(srv.URL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(srv.URL, WithTLSConfig(cfg), WithWebSocketConn(ahead))
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []int32{1, 2} {
		code, err := c.Exec(t.Context(), "default", "web", ExecOptions{Command: []string{"true", "x"}})
		if err != nil || code != 2 {
			t.Fatalf("exec %d: code %d, %v; want 2", i+1, code, err)
		}
		if got := conns.Load(); got != want {
			t.Errorf("after exec %d the server got %d connections, want %d", i+1, got, want)
		}
	}
}
