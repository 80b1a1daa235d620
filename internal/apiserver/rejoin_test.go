package apiserver_test

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/store"
)

// A join whose answer is lost (a timeout after its transaction committed)
// is asked again with the same key and gets the certificate the first one
// was given, even from a one-use token now used up; anyone else who knows
// the token, but not the node's key, still finds the name taken.
func TestJoinAskedAgainGetsItsCertificateAndNoOneElse(t *testing.T) {
	c := startCluster(t)
	ctx := t.Context()
	once, _, err := c.store.CreateJoinToken(ctx, store.JoinTokenOptions{Uses: 1, Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	fleet, _, err := c.store.CreateJoinToken(ctx, store.JoinTokenOptions{Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := nodecert.NewKey("n1")
	if err != nil {
		t.Fatal(err)
	}
	opts := client.JoinOptions{Token: once, Node: "n1", CA: c.ca.CertPEM, Key: key}
	first, err := client.Join(ctx, c.url, opts)
	if err != nil {
		t.Fatal(err)
	}
	again, err := client.Join(ctx, c.url, opts)
	if err != nil {
		t.Fatalf("the join asked again with the same key: %v", err)
	}
	if !bytes.Equal(again.Certificate, first.Certificate) || !bytes.Equal(again.Key, key) {
		t.Fatal("the join asked again got another certificate, want the first one's")
	}
	if got := status(t, c.url, again, "/v1/nodes/n1"); got != http.StatusNotFound && got != http.StatusOK {
		t.Fatalf("GET /v1/nodes/n1 with the certificate given again: %d, want it to authenticate", got)
	}

	// Hostile: the token (or another that works) with a key of one's own,
	// a wrong secret with the node's key, another name with the node's key.
	_, otherKey, _ := nodecert.NewKey("n1")
	wrongSecret := once[:len(once)-4] + "aaaa"
	if wrongSecret == once {
		wrongSecret = once[:len(once)-4] + "bbbb"
	}
	for _, tc := range []struct {
		name string
		opts client.JoinOptions
		want func(error) bool
	}{
		{"the token, another key", client.JoinOptions{Token: once, Node: "n1", CA: c.ca.CertPEM, Key: otherKey}, errdefs.IsUnauthorized},
		{"a working token, another key", client.JoinOptions{Token: fleet, Node: "n1", CA: c.ca.CertPEM, Key: otherKey}, errdefs.IsAlreadyExists},
		{"a working token, no key given", client.JoinOptions{Token: fleet, Node: "n1", CA: c.ca.CertPEM}, errdefs.IsAlreadyExists},
		{"another working token, the node's key", client.JoinOptions{Token: fleet, Node: "n1", CA: c.ca.CertPEM, Key: key}, errdefs.IsAlreadyExists},
		{"a wrong secret, the node's key", client.JoinOptions{Token: wrongSecret, Node: "n1", CA: c.ca.CertPEM, Key: key}, errdefs.IsUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.Join(ctx, c.url, tc.opts)
			if !tc.want(err) {
				t.Fatalf("join: %v, want it refused", err)
			}
			if got != nil {
				t.Fatal("a refused join came with credentials")
			}
		})
	}

	// Once revoked, the node's own key gets nothing back either.
	if err := c.admin.Nodes().Revoke(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if _, err := client.Join(ctx, c.url, opts); err == nil || !strings.Contains(err.Error(), "n1") {
		t.Fatalf("a join asked again after a revocation: %v, want it refused", err)
	}
}
