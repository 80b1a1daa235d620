package apiserver_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/pki"
)

// another starts a second API server on the same store and CA, as a
// second server of the cluster: its own listener and its own cache of
// node credentials.
func (c *cluster) another(t *testing.T, certTTL time.Duration) string {
	t.Helper()
	dir := t.TempDir()
	cert, err := pki.LoadOrIssueServer(dir, c.ca, []string{"127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	srv := apiserver.New(apiserver.Config{Store: c.store, CA: c.ca, NodeCertTTL: certTTL})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ctx, l, c.ca.ServerTLSConfig(cert), adminToken) }()
	t.Cleanup(func() { cancel(); <-done })
	return "https://" + l.Addr().String()
}

// joinCreds joins as node with a fresh token and returns its credentials.
func (c *cluster) joinCreds(t testing.TB, url, node string) *client.NodeCredentials {
	t.Helper()
	tok, err := c.admin.Tokens().Create(t.Context(), "for "+node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := client.Join(t.Context(), url, client.JoinOptions{Token: tok.Token, Node: node, CA: c.ca.CertPEM})
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// status is the code a GET of path with creds answers on url; -1 when the
// TLS handshake fails.
func status(t *testing.T, url string, creds *client.NodeCredentials, path string) int {
	t.Helper()
	cfg, err := creds.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get(url + path)
	if err != nil {
		return -1 // no handshake
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestNodeCertificateRenewedThenRevokedOnEveryServer(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	s2 := c.another(t, 0)
	creds := c.joinCreds(t, s2, "n1")
	// A server told to sign short certificates does.
	s3 := c.another(t, 2*time.Second)
	short := c.joinCreds(t, s3, "short")
	leaf, _ := nodecert.ParseCertificate(short.Certificate)
	if life := time.Until(leaf.NotAfter); life > 2*time.Second || life < time.Second {
		t.Fatalf("certificate signed by a server with a 2s lifetime lasts %v", life)
	}
	// The default lifetime is a week.
	week := c.joinCreds(t, c.url, "w1")
	wl, _ := nodecert.ParseCertificate(week.Certificate)
	if d := time.Until(wl.NotAfter); d > apiserver.DefaultNodeCertTTL || d < apiserver.DefaultNodeCertTTL-time.Minute {
		t.Fatalf("default node certificate lasts %v, want %v", d, apiserver.DefaultNodeCertTTL)
	}

	// Renewed on the first server, which signs for the default week.
	n1, err := client.New(c.url, client.WithNodeCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := n1.Renew(ctx, "n1", creds)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if string(renewed.Key) != string(creds.Key) || string(renewed.Certificate) == string(creds.Certificate) {
		t.Fatal("renewal did not give a new certificate of the same key")
	}
	// The replaced certificate works until it ends (a crash before the
	// new one was saved leaves the agent with it), and may renew again:
	// the store then keeps that one and the newest, and the certificate
	// of the first renewal stops working.
	again, err := n1.Renew(ctx, "n1", creds)
	if err != nil {
		t.Fatalf("second renewal with the replaced certificate, still in its life: %v", err)
	}
	for _, u := range []string{c.url, s2} {
		if got := status(t, u, again, "/v1/nodes"); got != http.StatusOK {
			t.Fatalf("newest certificate on %s: %d", u, got)
		}
	}
	eventuallyCode(t, s2, renewed, http.StatusUnauthorized, "the certificate of the first renewal, replaced")
	if got := status(t, s2, creds, "/v1/nodes"); got != http.StatusOK {
		t.Fatalf("the certificate the newest replaced: %d, want 200 until it ends", got)
	}
	nr, _ := client.New(c.url, client.WithNodeCredentials(again))
	if _, err := nr.Renew(ctx, "w1", again); !errdefs.IsForbidden(err) {
		t.Fatalf("n1 renews w1's certificate: %v, want 403", err)
	}
	// Past its end, the short certificate gets no handshake at all.
	time.Sleep(time.Until(leaf.NotAfter) + 100*time.Millisecond)
	if got := status(t, c.url, short, "/v1/nodes"); got != -1 {
		t.Fatalf("expired certificate: %d, want the handshake refused", got)
	}

	// Revoked on the first server: both refuse it at once, and a watch
	// the node has open on the other ends.
	n2c, _ := client.New(s2, client.WithNodeCredentials(again))
	watch, err := n2c.Nodes().Watch(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.admin.Nodes().Revoke(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-watch:
		if !errdefs.IsUnauthorized(ev.Err) {
			t.Fatalf("the revoked node's watch got %+v, want it ended as unauthorized", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the revoked node's watch still runs after 5s")
	}
	if got := status(t, c.url, again, "/v1/nodes"); got != http.StatusUnauthorized {
		t.Fatalf("revoked certificate on the server that revoked it: %d, want 401 at once", got)
	}
	eventuallyCode(t, s2, again, http.StatusUnauthorized, "the revoked certificate on the other server")
	if _, err := nr.Renew(ctx, "n1", again); !errdefs.IsUnauthorized(err) {
		t.Fatalf("revoked certificate renews: %v", err)
	}

	// Deleting a node revokes it too, and frees its name for a new join.
	w1, _ := client.New(c.url, client.WithNodeCredentials(week))
	if _, err := w1.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "w1"}}); err != nil {
		t.Fatal(err)
	}
	tok, _ := c.admin.Tokens().Create(ctx, "", time.Hour)
	if _, err := client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "w1", CA: c.ca.CertPEM}); !errdefs.IsAlreadyExists(err) {
		t.Fatalf("join as w1 while it is registered: %v, want 409 AlreadyExists", err)
	}
	if err := c.admin.Nodes().Delete(ctx, "", "w1", 0); err != nil {
		t.Fatal(err)
	}
	if got := status(t, c.url, week, "/v1/nodes"); got != http.StatusUnauthorized {
		t.Fatalf("a deleted node's certificate: %d, want 401 at once", got)
	}
	if _, err := w1.Nodes().Apply(ctx, &api.Node{Metadata: api.Metadata{Name: "w1"}}); !errdefs.IsUnauthorized(err) {
		t.Fatalf("a deleted node re-creates itself: %v", err)
	}
	if _, err := client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "w1", CA: c.ca.CertPEM}); err != nil {
		t.Fatalf("join as w1 once removed: %v", err)
	}
	// Only admins revoke.
	if err := nr.Nodes().Revoke(ctx, "w1"); !errdefs.IsUnauthorized(err) && !errdefs.IsForbidden(err) {
		t.Fatalf("a node revokes another: %v", err)
	}
}

func TestJoinTokenUsesAndDefaults(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	tok, err := c.admin.Tokens().CreateWith(ctx, client.TokenOptions{Uses: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(tok.Expires); d > 24*time.Hour || d < 23*time.Hour {
		t.Fatalf("a token made without a TTL expires in %v, want 24h", d)
	}
	if _, err := client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "u1", CA: c.ca.CertPEM}); err != nil {
		t.Fatal(err)
	}
	_, err = client.Join(ctx, c.url, client.JoinOptions{Token: tok.Token, Node: "u2", CA: c.ca.CertPEM})
	if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "used up") {
		t.Fatalf("second join with a one-use token: %v, want 401 used up", err)
	}
	list, _ := c.admin.Tokens().List(ctx)
	for _, l := range list {
		if l.ID == tok.ID && (l.Used != 1 || l.Uses != 1 || !l.UsedUp()) {
			t.Fatalf("listed token %+v, want 1 of 1 used", l)
		}
	}
	never, err := c.admin.Tokens().Create(ctx, "", 0)
	if err != nil || !never.Expires.IsZero() {
		t.Fatalf("a token with TTL 0: %+v %v, want no expiry", never, err)
	}
	short, err := c.admin.Tokens().Create(ctx, "", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	_, err = client.Join(ctx, c.url, client.JoinOptions{Token: short.Token, Node: "u3", CA: c.ca.CertPEM})
	if !errdefs.IsUnauthorized(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("join with an expired token: %v, want 401 expired", err)
	}
	status, eb, _ := c.raw(t, c.trustOnly(), "POST", "/v1/tokens", `{"uses": -1}`, "Authorization", "Bearer "+adminToken)
	if status != http.StatusUnprocessableEntity || eb.Field != "uses" {
		t.Fatalf("uses -1: %d %+v", status, eb)
	}
}

// eventuallyCode waits for a GET with creds on url to answer want.
func eventuallyCode(t *testing.T, url string, creds *client.NodeCredentials, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := status(t, url, creds, "/v1/nodes")
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d, want %d within 5s", what, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
