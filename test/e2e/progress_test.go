package e2e

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// slowReader lets about rate bytes through per second.
type slowReader struct {
	r    io.ReadCloser
	rate int
}

func (s slowReader) Read(p []byte) (int, error) {
	if len(p) > 64<<10 {
		p = p[:64<<10]
	}
	n, err := s.r.Read(p)
	time.Sleep(time.Duration(n) * time.Second / time.Duration(s.rate))
	return n, err
}

func (s slowReader) Close() error { return s.r.Close() }

// TestPullProgressOnTerminal pulls a 4 MiB layer through a proxy that
// serves blobs at about 3 MiB/s with stdout on a pseudo-terminal: the
// layer's line is redrawn in place (cursor up) with a bar, bytes, speed
// and time left, and ends "done".
func TestPullProgressOnTerminal(t *testing.T) {
	e := newEnv(t)
	ca := registrytest.NewCA(t)
	upstream := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	u, _ := url.Parse("https://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = ca.Client().Transport
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.Request.Method == http.MethodGet {
			resp.Body = slowReader{resp.Body, 3 << 20}
		}
		return nil
	}
	host := ca.ServeTLS(t, rp)
	registryConfig(t, ca, host)
	e.ok("login", host, "-u", "alice", "-p", "s3cret")

	dir := t.TempDir()
	data := make([]byte, 4<<20)
	_, _ = rand.Read(data) // incompressible
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	ref := host + "/team/big:1"
	e.ok("image", "build", dir, "--tag", ref)
	e.ok("image", "push", ref)

	other := newEnv(t)
	cmd := exec.Command(berthBin, "--data-dir", other.dataDir, "image", "pull", ref)
	tty, err := pty.Start(cmd)
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out bytes.Buffer
	_, err = io.Copy(&out, tty)
	var pe *os.PathError
	if err != nil && !(errors.As(err, &pe)) { // EIO when the child closes the terminal
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pull on a terminal: %v\n%s", err, out.String())
	}
	text := out.String()
	bar := regexp.MustCompile(`[0-9a-f]{12}: \[=* *\] \d+(\.\d)? [KM]iB / 4\.0 MiB  \d+(\.\d)? [KM]iB/s  ETA \d+s`)
	if !bar.MatchString(text) {
		t.Fatalf("no progress bar with bytes, speed and ETA in:\n%q", text)
	}
	if !strings.Contains(text, "\x1b[1A") || !strings.Contains(text, "\r\x1b[K") {
		t.Fatalf("the layer line is not redrawn in place:\n%q", text)
	}
	if !regexp.MustCompile(`[0-9a-f]{12}: done 4\.0 MiB in `).MatchString(text) {
		t.Fatalf("no final done line in:\n%q", text)
	}
}
