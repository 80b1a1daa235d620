package client

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/berth-dev/berth/api"
)

// Cordon keeps new instances off a node; those on it stay.
func (n NodeClient) Cordon(ctx context.Context, name string) (*api.Node, error) {
	return n.action(ctx, name, "cordon")
}

// Uncordon makes a node schedulable again and ends a drain in progress.
func (n NodeClient) Uncordon(ctx context.Context, name string) (*api.Node, error) {
	return n.action(ctx, name, "uncordon")
}

// Drain cordons a node and has the controller move its instances off
// it. The server lets only so many nodes drain at once; beyond that the
// drain fails with errdefs.ErrConflict, naming the nodes draining. The
// node's spec.draining goes back to false once it is drained.
func (n NodeClient) Drain(ctx context.Context, name string) (*api.Node, error) {
	return n.action(ctx, name, "drain")
}

// DrainMigrate is Drain moving the instances whose template says
// migration: live with their memory (CRIU) rather than restarting them.
func (n NodeClient) DrainMigrate(ctx context.Context, name string) (*api.Node, error) {
	return n.action(ctx, name, "drain?migrate=1")
}

func (n NodeClient) action(ctx context.Context, name, action string) (*api.Node, error) {
	var out api.Node
	if err := n.c.do(ctx, http.MethodPost, objectPath(api.KindNode, "", name)+"/"+action, nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Revoke stops every certificate of a node from working, on every server
// at once (admins only). The node stays, and keeps its name, until it is
// deleted; deleting a node revokes it too.
func (n NodeClient) Revoke(ctx context.Context, name string) error {
	return n.c.do(ctx, http.MethodPost, objectPath(api.KindNode, "", name)+"/revoke", nil, nil, nil)
}

// Heartbeat writes node name's status, Ready as of at, as its agent does
// to stay alive, and returns how long the server asks it to wait before
// the next beat (zero when it does not say).
func (n NodeClient) Heartbeat(ctx context.Context, name string, at time.Time) (time.Duration, error) {
	node := &api.Node{Metadata: api.Metadata{Name: name}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: at}}
	// The node written back is of no use here: a beat that changes
	// nothing is answered with no body (see api.PreferMinimal).
	hdr := http.Header{"Prefer": {api.PreferMinimal}}
	resp, err := n.c.send(ctx, http.MethodPut, objectPath(api.KindNode, "", name)+"/status", hdr, node)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	next, _ := time.ParseDuration(resp.Header.Get(api.HeartbeatIntervalHeader))
	return max(next, 0), nil
}
