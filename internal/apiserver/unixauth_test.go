package apiserver_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestMain turns the test binary into the non-root client when asked: it
// is re-run in a child process as another user, prints the status it got
// from the socket (or the dial error) and exits.
func TestMain(m *testing.M) {
	if sock := os.Getenv("BERTH_TEST_SOCKET"); sock != "" {
		nonRootClient(sock)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func nonRootClient(sock string) {
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	resp, err := hc.Get("http://berth/v1/services")
	if err != nil {
		fmt.Println("RESULT dial-error", err)
		return
	}
	resp.Body.Close()
	fmt.Println("RESULT", resp.StatusCode)
}

func TestUnixSocketRefusesOtherUsers(t *testing.T) {
	testenv.RequireRoot(t) // to run a client as another user
	e := start(t)
	// Let another user reach the socket's directory, so only the socket's
	// own mode, then the peer-credential check, stand in the way.
	for dir := filepath.Dir(e.sock); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary sits in a build directory only root can enter: give
	// the other user a copy.
	bin := filepath.Join(filepath.Dir(e.sock), "client.test")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func() string {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(), "BERTH_TEST_SOCKET="+e.sock)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper: %v\n%s", err, out)
		}
		for line := range strings.Lines(string(out)) {
			if r, ok := strings.CutPrefix(line, "RESULT "); ok {
				return strings.TrimSpace(r)
			}
		}
		t.Fatalf("helper printed no result:\n%s", out)
		return ""
	}
	if got := run(); !strings.Contains(got, "permission denied") {
		t.Fatalf("another user on the 0600 socket: %s, want permission denied", got)
	}
	// Even with the socket exposed, the server checks who is calling.
	if err := os.Chmod(e.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	if got := run(); got != "403" {
		t.Fatalf("another user on an exposed socket: %s, want 403", got)
	}
}
