package apiserver

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/berth-dev/berth/api"
)

// A node's heartbeat is a status write saying Ready. One that says
// nothing the store does not hold already, but the time of the beat,
// writes nothing: the beat taken in this server's memory before it is
// what keeps the node alive (store.RenewNode), and that costs etcd nothing.
// Writing the node on each beat, or once a TTL to refresh its recorded
// time, made every node an object write (and a wakeup of every watcher of
// nodes) every few seconds: 1,500 writes a second at 15,000 nodes. The
// stored node is written when its status changes (Ready on the first
// beat, or back from NotReady; a new message); the time of the last beat
// is what this server's store remembers of its renewals, and what node
// reads show (see freshen).
//
// readyNodes lets a beat skip even the read of the stored node: it holds
// the nodes this server has seen stored Ready, with their message. It is
// trusted only while the node's lease is held throughout: the controller
// marks a node NotReady only once its lease has lapsed, and the beat that
// finds it lapsed reads the stored node again. A status written any other
// way through this server forgets the node; one written through another
// server while the lease is held (an admin's status write, the node
// removed and joined again) can leave the node stored not Ready while its
// beats here skip the write, and the controller marks it Ready, since its
// lease is held.
type readyNodes struct{ m sync.Map } // node name -> status message

func (r *readyNodes) has(node, msg string) bool {
	m, ok := r.m.Load(node)
	return ok && m.(string) == msg
}

func (r *readyNodes) note(node, msg string) { r.m.Store(node, msg) }
func (r *readyNodes) forget(node string)    { r.m.Delete(node) }

// Heartbeat is node's heartbeat made in process, as its agent's status
// write (Ready, beating at now) over the API would make it: berth up's
// own agent beats so, without a request over its socket each time (its
// goroutines and JSON both ways were a quarter of an idle berth up's
// goroutine wake-ups).
func (s *Server) Heartbeat(ctx context.Context, node string, now time.Time) error {
	n := &api.Node{Metadata: api.Metadata{Name: node}, Status: api.NodeStatus{Condition: api.NodeReady, LastHeartbeat: now.UTC()}}
	api.Default(n)
	done, err := s.beat(ctx, n, 0)
	if err != nil || done {
		return err
	}
	s.ready.forget(node)
	if err := s.store.UpdateStatus(ctx, n, 0); err != nil {
		return fmt.Errorf("heartbeat of node %q: %w", node, err)
	}
	s.ready.note(node, n.Status.Message)
	return nil
}

// beat takes the heartbeat of node n, whose own status write (at revision
// rev, 0 for any) says it is Ready, first, so that the controller never
// sees a node Ready without its lease. It is done when the write has
// nothing more to say (heartbeatOnly).
func (s *Server) beat(ctx context.Context, n *api.Node, rev int64) (bool, error) {
	held, err := s.store.RenewNode(ctx, n.Metadata.Name, s.nodeTTL)
	if err != nil {
		return false, err
	}
	return rev == 0 && s.heartbeatOnly(ctx, n, held), nil
}

// heartbeatOnly reports whether a node's Ready status write n says
// nothing the store does not hold already, but the time of its heartbeat;
// held says its lease was held before this beat renewed it (see
// store.RenewNode). Such a write needs no etcd write at all.
//
// The stored node is read from the etcd member's own state, with no raft
// round. With several servers it may be one apply old: a node the
// controller has just marked NotReady may look Ready still, and the
// controller marks it Ready again, since its lease is held.
func (s *Server) heartbeatOnly(ctx context.Context, n *api.Node, held bool) bool {
	name := n.Metadata.Name
	if held && s.ready.has(name, n.Status.Message) {
		return true
	}
	cur := &api.Node{}
	if err := s.store.GetIntoLocal(ctx, cur, "", name); err != nil {
		return false
	}
	was := cur.Status
	if was.Condition != api.NodeReady || was.Message != n.Status.Message || was.LastHeartbeat.IsZero() {
		return false
	}
	s.ready.note(name, was.Message)
	return true
}

// preferMinimal says whether r asks for no body in the answer (see
// api.PreferMinimal).
func preferMinimal(r *http.Request) bool {
	for _, v := range r.Header.Values("Prefer") {
		for p := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(p) == api.PreferMinimal {
				return true
			}
		}
	}
	return false
}

// freshen shows a node's latest heartbeat through this server, which the
// stored node does not carry (see heartbeatOnly). With several servers,
// one that takes none of a node's beats shows the time of its last status
// write.
func (s *Server) freshen(obj api.Object) {
	n, ok := obj.(*api.Node)
	if !ok || s.store == nil {
		return
	}
	if at := s.store.LastRenewal(n.Metadata.Name); at.After(n.Status.LastHeartbeat) {
		n.Status.LastHeartbeat = at.UTC().Truncate(time.Millisecond)
	}
}

// freshenWire is freshen for a node as the API gives it (see store.Wire):
// the time spliced into its JSON, the rest left as stored.
func (s *Server) freshenWire(b []byte) []byte {
	at := s.store.LastRenewal(gjson.GetBytes(b, "metadata.name").String())
	if at.IsZero() {
		return b
	}
	if was, err := time.Parse(time.RFC3339Nano, gjson.GetBytes(b, "status.lastHeartbeat").String()); err == nil && !at.After(was) {
		return b
	}
	out, err := sjson.SetBytes(b, "status.lastHeartbeat", at.UTC().Truncate(time.Millisecond).Format(time.RFC3339Nano))
	if err != nil {
		return b
	}
	return out
}
