package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/coder/websocket"

	"github.com/berth-dev/berth/api/client"
)

// TestExecConnectsWhileTheBinaryStarts runs `berth exec` against an
// https:// server and checks that the connection it uses is started by
// internal/cli/preconnect, whose initialiser runs before those of etcd's
// server and the compose-go loader, so that the TCP connect and TLS
// handshake overlap the start instead of following it: the exec gets
// one connection, and its exit code comes back.
func TestExecConnectsWhileTheBinaryStarts(t *testing.T) {
	var conns atomic.Int32
	var query atomic.Value
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" {
			http.Error(w, `{"error":"wrong token","code":"Unauthorized"}`, http.StatusUnauthorized)
			return
		}
		query.Store(r.URL.Path + "?" + r.URL.RawQuery)
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		b, _ := json.Marshal(client.ExitStatus{Code: 3})
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{client.ChanStdout}, "hi\n"...))
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{client.ChanExit}, b...))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	check(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))

	var stderr bytes.Buffer
	// A plain exec is sent while the binary starts (internal/cli/preexec);
	// with stdin or a kind in the name main sends it. Either way it is
	// sent once, as the command line says.
	for _, tc := range []struct {
		args  []string
		query string
	}{
		{[]string{"exec", "web", "true"}, "/v1/namespaces/default/instances/web/exec?cmd=true&resolve=1"},
		{[]string{"-n", "prod", "exec", "-e", "A=1", "-c", "side", "web", "--", "sh", "-c", "exit 3"},
			"/v1/namespaces/prod/instances/web/exec?cmd=sh&cmd=-c&cmd=exit+3&container=side&env=A%3D1&resolve=1"},
		{[]string{"exec", "-i", "web", "cat"}, "/v1/namespaces/default/instances/web/exec?cmd=cat&resolve=1&stdin=1"},
		{[]string{"exec", "instance/web", "true"}, "/v1/namespaces/default/instances/web/exec?cmd=true"},
	} {
		conns.Store(0)
		query.Store("")
		cmd := exec.Command(berthBin, append([]string{"--server", srv.URL, "--token", "tok", "--ca-file", ca}, tc.args...)...)
		cmd.Env = append(os.Environ(), "GODEBUG=inittrace=1", "HTTPS_PROXY=", "https_proxy=", "ALL_PROXY=", "all_proxy=")
		var stdout bytes.Buffer
		stderr.Reset()
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 || stdout.String() != "hi\n" {
			t.Fatalf("berth %s: %v, stdout %q, want exit code 3 and hi\nstderr: %s", tc.args, err, stdout.String(), stderr.String())
		}
		if got, _ := query.Load().(string); got != tc.query {
			t.Errorf("berth %s: the server got %q, want %q", tc.args, got, tc.query)
		}
		if n := conns.Load(); n != 1 {
			t.Errorf("berth %s made %d connections, want 1", tc.args, n)
		}
	}
	var order []string
	sc := bufio.NewScanner(&stderr)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 2 && f[0] == "init" {
			order = append(order, f[1])
		}
	}
	pre := slices.Index(order, "github.com/berth-dev/berth/internal/cli/preconnect")
	for _, later := range []string{"go.etcd.io/etcd/server/v3/embed", "github.com/compose-spec/compose-go/v2/loader"} {
		if i := slices.Index(order, later); pre < 0 || i < 0 || pre > i {
			t.Errorf("preconnect initialises %dth, %s %dth of %d: want preconnect first", pre+1, later, i+1, len(order))
		}
	}
}

// TestPlainExecEndsWithItsAnswer runs a plain `berth exec` against an
// https:// server that answers at once, with the Go runtime's init
// trace, and checks that it can end before the binary has finished
// starting: the answer of the request sent ahead is read while the
// initialisers run, and once it is whole the process relays it and
// exits with the command's code (internal/cli/preconnect), where main
// used to wait for every initialiser first. Its output and code are the
// command's either way; a run whose answer came after the start is
// relayed by main (some 4 in 10 under load), so one early end in 30 runs
// is asked for.
func TestPlainExecEndsWithItsAnswer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer ws.CloseNow()
		b, _ := json.Marshal(client.ExitStatus{Code: 5})
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{client.ChanStdout}, "out\n"...))
		if r.URL.Query().Get("cmd") == "both" {
			_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{client.ChanStderr}, "err\n"...))
		}
		_ = ws.Write(r.Context(), websocket.MessageBinary, append([]byte{client.ChanExit}, b...))
	}))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	check(t, os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600))
	noProxy := append(os.Environ(), "HTTPS_PROXY=", "https_proxy=", "ALL_PROXY=", "all_proxy=")
	run := func(env []string, args ...string) (stdout, stderr string, err error) {
		cmd := exec.Command(berthBin, append([]string{"--server", srv.URL, "--ca-file", ca}, args...)...)
		cmd.Env = env
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err = cmd.Run()
		return out.String(), errOut.String(), err
	}
	exit5 := func(err error) bool {
		var ee *exec.ExitError
		return errors.As(err, &ee) && ee.ExitCode() == 5
	}
	// Both streams, apart (the init trace's lines would mix with stderr's).
	if out, errOut, err := run(noProxy, "exec", "web", "both"); !exit5(err) || out != "out\n" || errOut != "err\n" {
		t.Fatalf("berth exec web both: %v, stdout %q, stderr %q; want exit code 5, out and err", err, out, errOut)
	}
	traced := append(noProxy, "GODEBUG=inittrace=1")
	inits := func(stderr string) (n int) {
		for _, l := range strings.Split(stderr, "\n") {
			if strings.HasPrefix(l, "init ") {
				n++
			}
		}
		return n
	}
	// Every initialiser runs in an exec main relays (-i is never sent ahead).
	_, errOut, err := run(traced, "exec", "-i", "web", "true")
	all := inits(errOut)
	if !exit5(err) || all < 100 {
		t.Fatalf("exec -i: %v, %d init trace lines, want exit code 5 and the trace:\n%s", err, all, errOut)
	}
	const runs = 30
	for i := range runs {
		out, errOut, err := run(traced, "exec", "web", "true")
		if !exit5(err) || out != "out\n" {
			t.Fatalf("berth exec web true: %v, stdout %q; want exit code 5 and out\nstderr: %s", err, out, errOut)
		}
		if n := inits(errOut); n < all {
			t.Logf("run %d ended after %d of the %d initialisers", i+1, n, all)
			return
		}
	}
	t.Errorf("%d plain execs whose answer came at once all waited for the %d initialisers", runs, all)
}
