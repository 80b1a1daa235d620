package preconnect

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// server is a TLS server on loopback counting the connections it gets,
// with its certificate in a CA file.
func server(t *testing.T) (url, caFile string, conns *atomic.Int32) {
	t.Helper()
	conns = &atomic.Int32{}
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL, caFile, conns
}

func clearEnv(t *testing.T) {
	for _, k := range []string{"BERTH_SERVER", "BERTH_CA_FILE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, "")
	}
}

func TestStartOnlyForAWebSocketCommandToAServer(t *testing.T) {
	clearEnv(t)
	t.Setenv("BERTH_DATA_DIR", t.TempDir())
	url, ca, _ := server(t)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		dial bool
	}{
		{"exec", []string{"--server", url, "--ca-file", ca, "exec", "web", "true"}, nil, true},
		{"inline values and other shared flags", []string{"-n", "prod", "--server=" + url, "--token", "t", "port-forward", "web", "8080:80"}, nil, true},
		{"server from the environment", []string{"exec", "web", "true"}, map[string]string{"BERTH_SERVER": url}, true},
		{"not a WebSocket command", []string{"--server", url, "get", "nodes"}, nil, false},
		{"flags after the command are the command's", []string{"exec", "--server", url, "web", "true"}, nil, false},
		{"a flag of the command's in the remote command: a local exec", []string{"exec", "web", "curl", "--server", url}, nil, true},
		{"a plain exec on the local socket", []string{"--data-dir", t.TempDir(), "exec", "web", "true"}, nil, true},
		{"port-forward on the local socket", []string{"--data-dir", t.TempDir(), "port-forward", "web", "8080:80"}, nil, false},
		{"an interactive exec on the local socket", []string{"--data-dir", t.TempDir(), "exec", "-i", "web", "sh"}, nil, false},
		{"the local socket", []string{"--server", "unix:///run/berth.sock", "exec", "web", "true"}, nil, false},
		{"plain http", []string{"--server", "http://127.0.0.1:1", "exec", "web", "true"}, nil, false},
		{"help", []string{"--server", url, "--help", "exec"}, nil, false},
		{"an unknown flag", []string{"--server", url, "--bogus", "exec", "web", "true"}, nil, false},
		{"a proxy", []string{"--server", url, "exec", "web", "true"}, map[string]string{"HTTPS_PROXY": "http://127.0.0.1:3128"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			d := start(tc.args)
			if got := d != nil; got != tc.dial {
				t.Fatalf("start(%q) dials: %v, want %v", tc.args, got, tc.dial)
			}
			if d != nil {
				<-d.done
				d.take(t.Context(), "", "", 0) // close it
			}
		})
	}
}

func TestConnHandsOverTheHandshakeOnce(t *testing.T) {
	clearEnv(t)
	url, ca, conns := server(t)
	// A plain exec is sent ahead on the connection (see exec_test.go);
	// port-forward's is handed over.
	d := start([]string{"--server", url, "--ca-file", ca, "port-forward", "web", "8080:80"})
	c := d.take(t.Context(), url, ca, 10*time.Second)
	if c == nil {
		t.Fatal("no connection made ahead")
	}
	defer c.Close()
	st := c.ConnectionState()
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 {
		t.Errorf("handshake complete %v, verified chains %d: want a verified handshake", st.HandshakeComplete, len(st.VerifiedChains))
	}
	// A WebSocket goes over HTTP/1.1, as the client's transport dials it.
	if st.NegotiatedProtocol != "" {
		t.Errorf("negotiated %q, want no protocol", st.NegotiatedProtocol)
	}
	if again := d.take(t.Context(), url, ca, 0); again != nil {
		t.Error("the connection was handed over twice")
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the server got %d connections, want 1", n)
	}
}

func TestConnOnlyForTheSameServerAndCA(t *testing.T) {
	clearEnv(t)
	url, ca, _ := server(t)
	other := filepath.Join(t.TempDir(), "other.crt")
	for _, tc := range []struct{ server, ca string }{{"https://127.0.0.1:1", ca}, {url, other}, {url, ""}} {
		d := start([]string{"--server", url, "--ca-file", ca, "exec", "web", "true"})
		<-d.done
		if c := d.take(t.Context(), tc.server, tc.ca, time.Second); c != nil {
			t.Errorf("made for %s trusting %s, handed over for %s trusting %q", url, ca, tc.server, tc.ca)
			c.Close()
		}
		if d.conn != nil {
			t.Error("the unused connection was kept open")
		}
	}
}

func TestConnWithoutTrustGivesNothing(t *testing.T) {
	clearEnv(t)
	url, _, _ := server(t)
	// No CA file: the system's roots do not know the test server.
	d := start([]string{"--server", url, "exec", "web", "true"})
	if c := d.take(t.Context(), url, "", 10*time.Second); c != nil {
		c.Close()
		t.Fatal("a connection to a server nothing vouches for was handed over")
	}
}

// A server that takes the connection but never answers the handshake
// costs Conn its patience, no more; the handshake left behind is closed
// when it ends.
func TestConnDoesNotWaitLongForASlowServer(t *testing.T) {
	clearEnv(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	url := "https://" + l.Addr().String()
	d := start([]string{"--server", url, "exec", "web", "true"})
	began := time.Now()
	if c := d.take(context.Background(), url, "", 100*time.Millisecond); c != nil {
		t.Fatal("a connection whose handshake never ended was handed over")
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Conn waited %v for a silent server", took)
	}
	if !d.settled {
		t.Error("the dial was not told that nobody takes it any more")
	}
}
