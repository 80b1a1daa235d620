package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/hostinfo"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestServerMemoryLimit: `berth server --memory-limit` becomes the Go
// runtime's soft memory limit, as the server's own metrics report it
// (go_gc_gomemlimit_bytes reads the runtime's setting) and its log says;
// the default, auto, sets one within its bounds and says it follows the
// live heap; GOMEMLIMIT in the environment wins over the flag's default;
// a bad value is refused by server and up alike, naming the flag.
func TestServerMemoryLimit(t *testing.T) {
	testenv.RequireRoot(t)
	e := newEnv(t)
	for _, cmd := range [][]string{
		{"server", "--listen", "127.0.0.1:1", "--peer-listen", "127.0.0.1:1"},
		{"up"},
	} {
		for _, bad := range []string{"lots", "0%", "1Mi"} {
			_, errOut, code := e.run(append(cmd, "--memory-limit", bad)...)
			if code == 0 || !strings.Contains(errOut, "--memory-limit") {
				t.Errorf("berth %s --memory-limit %s: exit %d, stderr %q; want non-zero naming --memory-limit", cmd[0], bad, code, errOut)
			}
		}
	}

	dir := t.TempDir()
	// start starts a server with extra flags and returns its metrics
	// scraper and its process.
	start := func(name string, extra ...string) (func() float64, *process) {
		srvDir := filepath.Join(dir, name)
		apiAddr := freeAddr(t, "127.0.0.1")
		p := startProcess(t, "berth server "+name, append([]string{"--data-dir", srvDir, "server", "-v", "--name", name,
			"--listen", apiAddr, "--peer-listen", freeAddr(t, "127.0.0.1")}, extra...)...)
		return func() float64 {
			tokenFile, caFile := filepath.Join(srvDir, "tls", "token"), filepath.Join(srvDir, "tls", "ca.crt")
			eventually(t, 30*time.Second, "server "+name+" up", func() bool {
				return strings.Contains(p.out.String(), "berth server "+name+" is up")
			})
			pem, err := os.ReadFile(caFile)
			check(t, err)
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(pem)
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
			defer tr.CloseIdleConnections()
			a := &adminClient{hc: &http.Client{Transport: tr, Timeout: 20 * time.Second}, url: "https://" + apiAddr, token: readToken(t, tokenFile)}
			return metricValue(t, scrape(t, a, ""), "go_gc_gomemlimit_bytes", "", "")
		}, p
	}
	flagged, flaggedProc := start("flag", "--memory-limit", "1536Mi")
	auto, autoProc := start("auto")
	// The second server inherits GOMEMLIMIT; the flag keeps its default.
	t.Setenv("GOMEMLIMIT", "1GiB")
	fromEnv, envProc := start("env")

	if got, want := flagged(), float64(1536<<20); got != want {
		t.Errorf("server with --memory-limit 1536Mi: go_gc_gomemlimit_bytes %v, want %v", got, want)
	}
	if out := flaggedProc.out.String(); !strings.Contains(out, "memory limit") || !strings.Contains(out, "source=\"--memory-limit 1536Mi\"") {
		t.Errorf("server with --memory-limit 1536Mi: its log does not say the limit and where it came from:\n%s", out)
	}
	total, err := hostinfo.ProcessMemory()
	check(t, err)
	if got, most := auto(), float64(total/2); got < 64<<20 || got > most {
		t.Errorf("server with the default --memory-limit auto: go_gc_gomemlimit_bytes %v, want between 64 MiB and half of %d", got, total)
	}
	if out := autoProc.out.String(); !strings.Contains(out, "memory limit follows the live heap") || !strings.Contains(out, "source=\"--memory-limit auto") {
		t.Errorf("server with the default --memory-limit auto: its log does not say the limit follows the live heap:\n%s", out)
	}
	if got, want := fromEnv(), float64(1<<30); got != want {
		t.Errorf("server with GOMEMLIMIT=1GiB: go_gc_gomemlimit_bytes %v, want %v", got, want)
	}
	if out := envProc.out.String(); !strings.Contains(out, "GOMEMLIMIT=1GiB") {
		t.Errorf("server with GOMEMLIMIT=1GiB: its log does not name GOMEMLIMIT as the limit's source:\n%s", out)
	}
}
