package store

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Node heartbeats are etcd leases: each node has a key under
// <prefix>/leases/ bound to a lease that its heartbeats keep alive. When
// they stop, etcd removes the key after the TTL, whoever's clock says what.

type nodeLeases struct {
	mu  sync.Mutex
	ids map[string]clientv3.LeaseID
}

func (s *Store) leaseKey(node string) string { return s.prefix + "/leases/" + node }

// KeepNodeAlive renews node's heartbeat lease, making one (with ttl) when
// it has none or it has lapsed.
func (s *Store) KeepNodeAlive(ctx context.Context, node string, ttl time.Duration) error {
	s.nodes.mu.Lock()
	defer s.nodes.mu.Unlock()
	if s.nodes.ids == nil {
		s.nodes.ids = map[string]clientv3.LeaseID{}
	}
	if id, ok := s.nodes.ids[node]; ok {
		if r, err := s.client.KeepAliveOnce(ctx, id); err == nil && r.TTL > 0 {
			return nil
		}
		// Lapsed or unknown (a restarted etcd): make a new one.
		delete(s.nodes.ids, node)
	}
	secs := int64(ttl / time.Second)
	if secs < 2 {
		secs = 2
	}
	g, err := s.client.Grant(ctx, secs)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	if _, err := s.client.Put(ctx, s.leaseKey(node), "", clientv3.WithLease(g.ID)); err != nil {
		return fmt.Errorf("node %q: heartbeat lease: %w", node, wrapEtcd(err))
	}
	s.nodes.ids[node] = g.ID
	return nil
}

// ExpireNode ends node's heartbeat lease at once, as if it had stopped beating.
func (s *Store) ExpireNode(ctx context.Context, node string) error {
	s.nodes.mu.Lock()
	id, ok := s.nodes.ids[node]
	delete(s.nodes.ids, node)
	s.nodes.mu.Unlock()
	if ok {
		if _, err := s.client.Revoke(ctx, id); err != nil {
			return fmt.Errorf("node %q: revoke heartbeat lease: %w", node, wrapEtcd(err))
		}
	}
	_, err := s.client.Delete(ctx, s.leaseKey(node))
	return wrapEtcd(err)
}

// LiveNodes names the nodes whose heartbeat lease is held.
func (s *Store) LiveNodes(ctx context.Context) (map[string]bool, error) {
	prefix := s.prefix + "/leases/"
	r, err := s.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("node heartbeats: %w", wrapEtcd(err))
	}
	out := make(map[string]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	return out, nil
}
