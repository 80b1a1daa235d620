package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/testing/authmatrix"
)

// TestAuthorizationMatrixOnLAN runs the authorisation matrix (package
// authmatrix) on the network-namespace LAN: a server with its controllers
// and scheduler live, and agents n1, n2 and n3 that joined it. Each caller
// speaks from a machine of its own: the admin from the server's, n1 with
// its own certificate from n1's, the deleted node (n3, removed by the
// admin) with its certificate from n3's, the caller without credential
// from n1's. The agents are stopped once joined, their certificates kept:
// the matrix's objects are its own (see authmatrix), and a running agent
// would report its node and run what is bound to it.
func TestAuthorizationMatrixOnLAN(t *testing.T) {
	start := time.Now()
	l := startLANOf(t, 1, 3)
	ctx := t.Context()
	url, token, caFile := l.AdminCredentials()
	caPEM, err := os.ReadFile(caFile)
	check(t, err)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	trust := func() *tls.Config { return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12} }
	server := l.Servers[0]
	admin, err := client.New(url, client.WithHTTPClient(server.HTTPClient(trust())), client.WithToken(token))
	check(t, err)
	nodeHTTP := func(name string) *http.Client {
		t.Helper()
		creds, err := client.LoadNodeCredentials(filepath.Join(l.Host(name).DataDir, "node"))
		check(t, err)
		cfg, err := creds.TLSConfig()
		check(t, err)
		return l.Host(name).HTTPClient(cfg)
	}

	// The matrix's instances belong to a finished job: no controller acts for them.
	check(t, l.Apply("kind: Job\nname: matrix\ncompletions: 1\ntemplate: {image: demo/busybox:1, command: [\"true\"]}\n"))
	var job *api.Job
	eventually(t, 60*time.Second, "job matrix to succeed", func() bool {
		job, err = admin.Jobs().Get(ctx, "default", "matrix")
		return err == nil && job.Status.Phase == api.JobSucceeded
	})
	for _, a := range l.Agents {
		a.Kill()
	}
	check(t, admin.Nodes().Delete(ctx, "", "n3", 0))
	t.Logf("LAN of 1 server and 3 agents ready for the matrix after %v", time.Since(start).Round(time.Millisecond))

	n1 := nodeHTTP("n1")
	authmatrix.Run(t, authmatrix.Env{
		URL: url, AdminToken: token, Admin: admin, Deleted: "n3",
		HTTP:  [authmatrix.Callers]*http.Client{server.HTTPClient(trust()), n1, n1, nodeHTTP("n3"), l.Host("n1").HTTPClient(trust())},
		Owner: api.Owner{Kind: api.KindJob, Name: job.Metadata.Name, UID: job.Metadata.UID},
	})
	t.Logf("whole test %v", time.Since(start).Round(time.Millisecond))
}
