package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// A fleet given three servers spreads its nodes over them: node i
// starts on the i-th, so that each server holds a node's watch, not the
// first all of them.
func TestHollowFleetSpreadsOverTheServers(t *testing.T) {
	testenv.RequireRoot(t)
	c := startHACluster(t, "--leader-ttl", "10s")
	var join string
	var urls []string
	for _, s := range c.servers {
		urls = append(urls, "https://"+s.api)
		if b, err := os.ReadFile(filepath.Join(s.dataDir, "join-token")); err == nil {
			join = strings.TrimSpace(string(b))
		}
	}
	if join == "" {
		t.Fatal("no server wrote the cluster's first join token")
	}
	dir := t.TempDir()
	fleet := startProcess(t, "berth sim agents", "--data-dir", filepath.Join(dir, "fleet"), "--server", strings.Join(urls, ","),
		"--token", join, "--ca-file", c.caFile, "sim", "agents", "--count", "3", "--prefix", "spread")
	eventually(t, 60*time.Second, "the hollow nodes to register", func() bool {
		return strings.Contains(fleet.out.String(), "hollow nodes registered")
	})
	pem, err := os.ReadFile(c.caFile)
	check(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}, Timeout: 20 * time.Second}
	t.Cleanup(hc.CloseIdleConnections)
	watches := func(s *haServer) float64 {
		fams := scrape(t, &adminClient{hc: hc, url: "https://" + s.api, token: c.token}, "")
		if fams["berth_api_watches"] == nil {
			return 0 // no watch opened on it yet
		}
		return metricValue(t, fams, "berth_api_watches", "kind", "assignments")
	}
	eventually(t, 60*time.Second, "a node's assignment watch on every server", func() bool {
		var each []string
		ok := true
		for _, s := range c.servers {
			n := watches(s)
			each = append(each, fmt.Sprintf("%s %.0f", s.name, n))
			ok = ok && n >= 1
		}
		t.Logf("assignment watches by server: %s", strings.Join(each, ", "))
		return ok
	})
}
