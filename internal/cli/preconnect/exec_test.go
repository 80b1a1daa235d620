package preconnect

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
)

// PlanOf reads plain execs only, and anything it is not sure of is no
// Plan (main then does the exec, as before). internal/cli's
// TestExecAheadIsWhatTheCommandLineSays holds each Plan to what the
// command line means.
func TestPlanOf(t *testing.T) {
	clearEnv(t)
	t.Setenv("BERTH_TOKEN", "")
	t.Setenv("BERTH_NAMESPACE", "")
	const srv = "https://h:1"
	for _, tc := range []struct {
		args []string
		want *Plan // nil for none
	}{
		{[]string{"--server", srv, "exec", "web", "true"}, &Plan{Server: srv, Namespace: "default", Name: "web", Command: []string{"true"}}},
		{[]string{"--server=" + srv, "--token", "tok", "--ca-file", "ca.crt", "-n", "prod", "exec", "web", "--", "sh", "-c", "exit 3"},
			&Plan{Server: srv, Token: "tok", CAFile: "ca.crt", Namespace: "prod", Name: "web", Command: []string{"sh", "-c", "exit 3"}}},
		{[]string{"--server", srv, "exec", "-e", "A=1", "--env=B=2", "-c", "side", "--namespace", "prod", "web", "env", "-i"},
			&Plan{Server: srv, Namespace: "prod", Name: "web", Command: []string{"env", "-i"}, Env: []string{"A=1", "B=2"}, Container: "side"}},
		// A flag's value named exec is no command.
		{[]string{"--server", srv, "--token", "exec", "exec", "web", "true"}, nil},
		// The command after the name keeps its flags and dashes.
		{[]string{"--server", srv, "exec", "web", "ls", "--", "-t"}, &Plan{Server: srv, Namespace: "default", Name: "web", Command: []string{"ls", "--", "-t"}}},
		// stdin or a terminal: main does it.
		{[]string{"--server", srv, "exec", "-i", "web", "cat"}, nil},
		{[]string{"--server", srv, "exec", "-t", "web", "sh"}, nil},
		{[]string{"--server", srv, "exec", "-it", "web", "sh"}, nil},
		{[]string{"--server", srv, "exec", "--interactive=false", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "--tty", "web", "sh"}, nil},
		// Help, unknown flags, odd forms, and too little.
		{[]string{"--server", srv, "exec", "-h", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "--help"}, nil},
		{[]string{"--server", srv, "exec", "--bogus", "web", "true"}, nil},
		{[]string{"--server", srv, "-nprod", "exec", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "-eA=1", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "-e=A=1", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "--", "web", "true"}, nil},
		{[]string{"--server", srv, "exec", "web"}, nil},
		{[]string{"--server", srv, "exec", "web", "--"}, nil},
		{[]string{"--server", srv, "exec"}, nil},
		{[]string{"--server", srv, "get", "exec"}, nil},
		{[]string{"--server", srv, "logs", "exec", "true"}, nil},
		// A kind or namespace in the name is resolved by main.
		{[]string{"--server", srv, "exec", "service/web", "true"}, nil},
		{[]string{"--server", srv, "exec", "prod/web", "true"}, nil},
		// A namespace the command line refuses, and a token net/http would.
		{[]string{"--server", srv, "-n", "Prod", "exec", "web", "true"}, nil},
		{[]string{"--server", srv, "--token", "tok\r\nX-Evil: 1", "exec", "web", "true"}, nil},
		{[]string{"--server", srv, "--token", "tok ", "exec", "web", "true"}, nil},
	} {
		got := PlanOf(tc.args)
		if !got.Equal(tc.want) {
			t.Errorf("PlanOf(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
}

// The namespace rule PlanOf keeps is the API's.
func TestDNSLabelIsValidateName(t *testing.T) {
	for _, s := range []string{"", "a", "default", "prod-1", "-a", "a-", "A", "a_b", "a.b", "ü", strings.Repeat("a", 63), strings.Repeat("a", 64), "9", "a--b"} {
		if got, want := dnsLabel(s), api.ValidateName(s) == nil; got != want {
			t.Errorf("dnsLabel(%q) = %v, api.ValidateName says %v", s, got, want)
		}
	}
}

// A plain exec's request goes out right after the handshake, before
// anything takes it; the connection is not handed over for another
// WebSocket, and TakeSent gives the request once.
func TestExecIsSentAheadOnce(t *testing.T) {
	clearEnv(t)
	got := make(chan *http.Request, 4)
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Clone(context.Background())
		http.NotFound(w, r)
	}))
	defer srv.Close()
	url := srv.URL
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	d := start([]string{"--server", url, "--ca-file", ca, "--token", "tok", "exec", "-e", "A=1", "web", "sh", "-c", "exit 3"})
	var req *http.Request
	select {
	case req = <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("no request came before anything took it")
	}
	if req.URL.RequestURI() != "/v1/namespaces/default/instances/web/exec?cmd=sh&cmd=-c&cmd=exit+3&env=A%3D1&resolve=1" ||
		req.Header.Get("Authorization") != "Bearer tok" || req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Sec-WebSocket-Key") == "" {
		t.Errorf("the server got %s %s %v", req.Method, req.URL.RequestURI(), req.Header)
	}
	if c := d.take(t.Context(), url, ca, time.Second); c != nil {
		t.Error("the connection the exec went on was handed over")
	}
	ahead = d
	defer func() { ahead = nil }()
	s := TakeSent(t.Context())
	if s == nil || s.Err != nil || s.Key != req.Header.Get("Sec-WebSocket-Key") || !slices.Equal(s.Plan.Command, []string{"sh", "-c", "exit 3"}) {
		t.Fatalf("TakeSent = %+v", s)
	}
	s.Conn.Close()
	if TakeSent(t.Context()) != nil {
		t.Error("the request was handed over twice")
	}
	select {
	case r := <-got:
		t.Errorf("a second request came: %s", r.URL)
	default:
	}
}
