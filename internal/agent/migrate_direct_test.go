package agent

import (
	"context"
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/api/nodecert"
	"github.com/berth-dev/berth/internal/pki"
)

// nodeTLS is the TLS of node's agent, its certificate signed by ca.
func nodeTLS(t *testing.T, ca *pki.CA, node string) *tls.Config {
	t.Helper()
	csr, key, err := nodecert.NewKey(node)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.SignNode(csr, node, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := (&client.NodeCredentials{Certificate: cert, Key: key, CA: ca.CertPEM}).TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	return tc
}

// TestDirectStreamOnlyFromTheSource: a target's direct listener, offered
// for a stream from node n1, takes it from n1's agent with the
// migration's token, and from nobody else: not from another node of the
// cluster (n3), nor from a node of another cluster's CA, nor from n1
// without the token, nor from a client with no certificate. The source
// in turn sends nothing to a listener whose certificate is not the one
// the server named.
func TestDirectStreamOnlyFromTheSource(t *testing.T) {
	ca, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	other, err := pki.NewCA()
	if err != nil {
		t.Fatal(err)
	}
	target := nodeTLS(t, ca, "n2")
	d, err := listenDirect("127.0.0.1", "n1", target)
	if err != nil {
		t.Fatal(err)
	}
	defer d.close()
	ctx := context.Background()

	// Each refused sender writes its own bytes; only the source's may
	// come out of the listener.
	send := func(cfg *tls.Config, offer api.MigrationDirect, what string) {
		t.Helper()
		c, err := dialDirect(ctx, offer, cfg)
		if err != nil {
			return // refused at the handshake already
		}
		defer c.Close()
		_, _ = c.Write([]byte(what))
		// TLS 1.3 ends the client's handshake before the server has
		// checked its certificate: the refusal shows as the stream closed.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Read(make([]byte, 1))
	}
	wrongToken := d.offer
	wrongToken.Token = strings.Repeat("00", directTokenLen)
	send(nodeTLS(t, ca, "n3"), d.offer, "from n3")
	send(nodeTLS(t, other, "n1"), d.offer, "from n1 of another CA")
	send(nodeTLS(t, ca, "n1"), wrongToken, "from n1 without the token")
	send(&tls.Config{}, d.offer, "from no one")
	select {
	case c := <-d.stream:
		b, _ := io.ReadAll(c)
		t.Fatalf("the listener took a stream it must refuse: %q", b)
	default:
	}

	// The source refuses a listener that is not the one named.
	notNamed := d.offer
	notNamed.Cert = strings.Repeat("ab", 32)
	if c, err := dialDirect(ctx, notNamed, nodeTLS(t, ca, "n1")); err == nil {
		c.Close()
		t.Fatal("the source sent to a listener whose certificate the server did not name")
	}

	src, err := dialDirect(ctx, d.offer, nodeTLS(t, ca, "n1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Write([]byte("the images")); err != nil {
		t.Fatal(err)
	}
	src.Close()
	c, err := d.take(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, err := io.ReadAll(c); err != nil || string(b) != "the images" {
		t.Fatalf("the source's stream: %q %v", b, err)
	}
	// One stream: the listener is closed once it has it.
	if c, err := dialDirect(ctx, d.offer, nodeTLS(t, ca, "n1")); err == nil {
		c.Close()
		t.Fatal("a second stream was let in")
	}
}
