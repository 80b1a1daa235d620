package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
)

// Node heartbeats are etcd leases: each node has a key under
// <prefix>/leases/ bound to a lease that its heartbeats keep alive. When
// they stop, etcd removes the key after the TTL, whoever's clock says what.
//
// The lease to renew is read from the key itself, never remembered by the
// server that made it: with several servers a node's heartbeats land on
// any of them, and each renews the lease the key is bound to now. No
// server keeps a lease alive on its own, so a node whose heartbeats stop
// lapses even while the server that made its lease runs on, and a dead
// server takes no lease with it.
//
// A heartbeat reads the key serializably: from the member's own applied
// state, with no raft round (a linearizable read was half of an idle
// node's etcd wakeups). On a lone member that state holds every
// acknowledged write. On a member of several it may trail the leader by
// an apply: a key rebound meanwhile gets its new lease renewed by the
// next beat, well within a TTL, and a key not seen yet is bound again by
// a write, which is linearizable.

func (s *Store) leaseKey(node string) string { return s.prefix + "/leases/" + node }

// KeepNodeAlive renews node's heartbeat lease, making one (with ttl) when
// it has none or it has lapsed.
func (s *Store) KeepNodeAlive(ctx context.Context, node string, ttl time.Duration) error {
	key := s.leaseKey(node)
	r, err := s.client.Get(ctx, key, clientv3.WithSerializable())
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	if len(r.Kvs) > 0 && r.Kvs[0].Lease != 0 {
		if left, err := s.renew(ctx, clientv3.LeaseID(r.Kvs[0].Lease)); err == nil && left > 0 {
			return nil
		}
		// Lapsed between the read and the renewal: make a new one.
	}
	secs := int64(ttl / time.Second)
	if secs < 2 {
		secs = 2
	}
	g, err := s.client.Grant(ctx, secs)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	// Two servers beating for the same node at once each bind the key to
	// their own lease; the last write wins and the other lease, bound to
	// nothing, lapses harmlessly.
	p, err := s.client.Put(ctx, key, "", clientv3.WithLease(g.ID))
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	s.noteWrite(p.Header.Revision)
	return nil
}

// renew keeps lease id alive once and returns its TTL in seconds (0 or
// an error when it has lapsed). The embedded server renews it with a
// call: through the client, each renewal opened a keep-alive stream, and
// its goroutines, for one message. The server forwards the renewal to
// the leader when it is not the leader itself, as it would the stream's.
func (s *Store) renew(ctx context.Context, id clientv3.LeaseID) (int64, error) {
	if s.etcd != nil {
		return s.etcd.Server.LeaseRenew(ctx, lease.LeaseID(id))
	}
	ka, err := s.client.KeepAliveOnce(ctx, id)
	if err != nil {
		return 0, err
	}
	return ka.TTL, nil
}

// ExpireNode ends node's heartbeat lease at once, as if it had stopped beating.
func (s *Store) ExpireNode(ctx context.Context, node string) error {
	key := s.leaseKey(node)
	r, err := s.client.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	if len(r.Kvs) > 0 && r.Kvs[0].Lease != 0 {
		// Revoking deletes the key too; a lease that lapsed meanwhile is
		// no error.
		_, _ = s.client.Revoke(ctx, clientv3.LeaseID(r.Kvs[0].Lease))
	}
	d, err := s.client.Delete(ctx, key)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	s.noteWrite(d.Header.Revision)
	return nil
}

// LiveNodes names the nodes whose heartbeat lease is held.
func (s *Store) LiveNodes(ctx context.Context) (map[string]bool, error) {
	live, _, err := s.LiveNodesAt(ctx, 0)
	return live, err
}

// LiveNodesAt is LiveNodes as of revision rev (the current one when 0),
// and the revision it was read at.
func (s *Store) LiveNodesAt(ctx context.Context, rev int64) (map[string]bool, int64, error) {
	prefix := s.prefix + "/leases/"
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	r, err := s.client.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, 0, fmt.Errorf("node heartbeats: %w", wrapEtcd(err))
	}
	out := make(map[string]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	if rev == 0 {
		rev = r.Header.Revision
	}
	return out, rev, nil
}
