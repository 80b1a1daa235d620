package apiserver_test

import (
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"github.com/berth-dev/berth/api/client"
	"github.com/berth-dev/berth/internal/apiserver"
)

// A node's tunnel ends once its certificate stops working (revoked, or
// the node removed), as its watches do, not when the node next asks:
// else the server would go on sending an admin's exec, logs and copies
// to a node it has revoked.
func TestRevokedNodeLosesItsTunnel(t *testing.T) {
	var srv *apiserver.Server
	c := startCluster(t, func(s *apiserver.Server) { srv = s })
	ctx := t.Context()
	n1 := c.join(t, "n1")
	conn, err := n1.OpenTunnel(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	sess, err := yamux.Server(conn, client.TunnelConfig(false))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close() })
	eventually(t, 10*time.Second, func() bool { return slices.Contains(srv.Connected(), "n1") })
	if err := c.admin.Nodes().Revoke(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sess.CloseChan():
	case <-time.After(10 * time.Second):
		t.Fatal("n1's tunnel is still open 10 s after its certificate was revoked")
	}
	eventually(t, 10*time.Second, func() bool { return !slices.Contains(srv.Connected(), "n1") })
}
