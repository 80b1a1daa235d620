package store

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
)

// Node heartbeats are etcd leases: each node has a key under
// <prefix>/leases/ bound to a lease that its heartbeats keep alive. When
// they stop, etcd removes the key after the TTL, whoever's clock says what.
// A renewal is no raft write: etcd's leader keeps every lease's deadline
// in its memory, and only a lapse (the key's removal) or a new lease is
// written. A new etcd leader gives every lease a whole TTL afresh before
// it lets any lapse, so a failover never passes for the loss of nodes.
//
// A node's lease has an ID of its own, made from its name: every server
// renews the same lease for it, with nothing to read first. With several
// servers a node's heartbeats land on any of them; each renews the one
// lease the key is bound to, no server keeps a lease alive on its own,
// and a dead server takes no lease with it. (Leases made at random, and
// found by reading the key, cost a read per heartbeat, and two servers
// making one at once bound the key to one and renewed the other.)
//
// Each store remembers which nodes' keys it has seen bound to their lease;
// a heartbeat of such a node is the renewal alone. The first heartbeat a
// store takes for a node, and any after a lapse, reads the key from the
// member's own applied state (no raft round) and binds it when it is not.

func (s *Store) leaseKey(node string) string { return s.prefix + "/leases/" + node }

// nodeLease is node's heartbeat lease ID: a hash of its key, the same on
// every server. etcd's own IDs for other leases are made of the member's
// ID and a counter; a 63-bit hash meets one of them, or another node's,
// with odds of about n²/2⁶⁴.
func (s *Store) nodeLease(node string) clientv3.LeaseID {
	h := fnv.New64a()
	h.Write([]byte(s.leaseKey(node)))
	if id := clientv3.LeaseID(h.Sum64() >> 1); id != 0 {
		return id
	}
	return 1
}

// KeepNodeAlive renews node's heartbeat lease, making one (with ttl) when
// it has none or it has lapsed.
func (s *Store) KeepNodeAlive(ctx context.Context, node string, ttl time.Duration) error {
	_, err := s.RenewNode(ctx, node, ttl)
	return err
}

// RenewNode is KeepNodeAlive, and reports whether the node was alive
// already: its lease held and its key known to be bound to it. False
// means the node's lease was made or bound anew by this call: it had
// lapsed (and the node may have been marked NotReady meanwhile), or this
// store had not seen the node before.
func (s *Store) RenewNode(ctx context.Context, node string, ttl time.Duration) (bool, error) {
	id := s.nodeLease(node)
	left, err := s.renew(ctx, id)
	if err == nil && left > 0 {
		if at, ok := s.bound.Load(node); ok {
			at.(*atomic.Int64).Store(time.Now().UnixNano())
			return true, nil
		}
		// Held, but this store has not seen its key: read it.
		r, err := s.client.Get(ctx, s.leaseKey(node), clientv3.WithSerializable())
		if err != nil {
			return false, fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
		}
		if len(r.Kvs) > 0 && clientv3.LeaseID(r.Kvs[0].Lease) == id {
			s.noteRenewal(node)
			return false, nil
		}
	} else {
		s.bound.Delete(node)
		if err := s.grant(ctx, id, ttl); err != nil {
			return false, fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
		}
	}
	// Two servers beating for the same node at once both bind the key to
	// the same lease.
	p, err := s.client.Put(ctx, s.leaseKey(node), "", clientv3.WithLease(id))
	if err != nil {
		return false, fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	s.noteWrite(p.Header.Revision)
	s.noteRenewal(node)
	return false, nil
}

// noteRenewal records that node's key is bound to its lease, renewed now.
func (s *Store) noteRenewal(node string) {
	at := new(atomic.Int64)
	at.Store(time.Now().UnixNano())
	s.bound.Store(node, at)
}

// LastRenewal is when this store last renewed node's heartbeat lease
// (zero when it has not since the lease was last made): the time of the
// node's latest heartbeat through this server, which the stored node does
// not carry, since a heartbeat writes nothing.
func (s *Store) LastRenewal(node string) time.Time {
	if at, ok := s.bound.Load(node); ok {
		return time.Unix(0, at.(*atomic.Int64).Load())
	}
	return time.Time{}
}

// grant makes lease id with ttl (at least 2 s); one that exists already
// (another server made it meanwhile) is no error.
func (s *Store) grant(ctx context.Context, id clientv3.LeaseID, ttl time.Duration) error {
	req := &etcdserverpb.LeaseGrantRequest{ID: int64(id), TTL: max(int64(ttl/time.Second), 2)}
	var err error
	if s.etcd != nil {
		_, err = s.etcd.Server.LeaseGrant(ctx, req)
	} else {
		_, err = clientv3.RetryLeaseClient(s.client).LeaseGrant(ctx, req)
	}
	if errors.Is(err, lease.ErrLeaseExists) || rpctypes.Error(err) == rpctypes.ErrLeaseExist {
		return nil
	}
	return err
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
	// Revoking deletes the key too; a lease that lapsed meanwhile is no
	// error. The key may be bound to another lease than the node's own
	// (made by an earlier version): both end.
	if len(r.Kvs) > 0 && r.Kvs[0].Lease != 0 && clientv3.LeaseID(r.Kvs[0].Lease) != s.nodeLease(node) {
		_, _ = s.client.Revoke(ctx, clientv3.LeaseID(r.Kvs[0].Lease))
	}
	_, _ = s.client.Revoke(ctx, s.nodeLease(node))
	s.bound.Delete(node)
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
