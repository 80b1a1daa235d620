package store

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// A node's certificates work only while the store lists them, under
// <prefix>/nodecerts/<node>: joining writes the record, renewing adds the
// new certificate and keeps the one it replaces until that expires, and
// revoking (or deleting the node) removes it. The API servers read these
// records from a watch-fed cache (NodeCredentialCache), so that a revoked
// certificate is refused at once on every server without an etcd read per
// request.

// NodeCert is one certificate of a node: its serial (hex) and end.
type NodeCert struct {
	Serial   string    `json:"serial"`
	NotAfter time.Time `json:"notAfter"`
}

// NodeCredential is what the store keeps about a node's certificates.
type NodeCredential struct {
	Node string `json:"node"`
	// Certs work, the newest first: at most the newest and the one it
	// replaced.
	Certs []NodeCert `json:"certs"`
	// Token is the id of the join token the node joined with.
	Token  string    `json:"token,omitempty"`
	Joined time.Time `json:"joined"`
	// JoinKey is the fingerprint of the key the node joined with (see
	// NodeJoin) and JoinCert the certificate it was given then (PEM),
	// until its first renewal: a join whose answer was lost is asked
	// again with the same key, and gets that certificate back
	// (RejoinNode). The cache drops JoinCert.
	JoinKey  string `json:"joinKey,omitempty"`
	JoinCert string `json:"joinCert,omitempty"`
}

// NodeJoin is what a join hands the store: the certificate signed for
// the joining machine, as listed and as PEM, and the fingerprint of the
// machine's public key (KeyFingerprint).
type NodeJoin struct {
	Cert NodeCert
	PEM  string
	Key  string
}

// KeyFingerprint is the hex SHA-256 of a public key's DER
// SubjectPublicKeyInfo: what a join's record remembers of the key.
func KeyFingerprint(spki []byte) string {
	sum := sha256.Sum256(spki)
	return hex.EncodeToString(sum[:])
}

// Allows reports whether the certificate with serial works at now.
func (c NodeCredential) Allows(serial string, now time.Time) bool {
	for _, cert := range c.Certs {
		if subtle.ConstantTimeCompare([]byte(cert.Serial), []byte(serial)) == 1 && now.Before(cert.NotAfter) {
			return true
		}
	}
	return false
}

func (s *Store) nodeCredPrefix() string         { return s.prefix + "/nodecerts/" }
func (s *Store) nodeCredKey(node string) string { return s.nodeCredPrefix() + node }

// JoinNode trades a join token for the name node and its first
// certificate, in one transaction: the token must work and have a use
// left (one is used), and the name must be free, with neither a Node
// object nor credentials under it, even those of a node long NotReady.
// Only an admin's removal of the node frees its name. Token errors are
// in the Unauthorized category, a taken name in AlreadyExists.
//
// A token with a bounded number of uses counts them in its record, so
// its joins take turns: each rewrites the record the next one checks. A
// token of any number of uses, the kind a fleet joins with, is left as it
// is and each join adds a key of its own under it (tokenUseKey): joins at
// once do not undo each other, and etcd commits them together. Either
// way the token's record must be as read, so a revocation meanwhile
// stops the join.
func (s *Store) JoinNode(ctx context.Context, token, node string, j NodeJoin, now time.Time) (JoinToken, error) {
	for {
		rec, rev, err := s.verifyJoinToken(ctx, token, now)
		if err != nil {
			return JoinToken{}, err
		}
		cred := NodeCredential{Node: node, Certs: []NodeCert{j.Cert}, Token: rec.ID, Joined: now.UTC(), JoinKey: j.Key, JoinCert: j.PEM}
		cb, _ := json.Marshal(cred)
		tk, ck, nk := s.tokenKey(rec.ID), s.nodeCredKey(node), s.Key(api.KindNode, "", node)
		use := clientv3.OpPut(s.tokenUseKey(rec.ID, node), "")
		if rec.Uses > 0 {
			rec.Used++
			tb, _ := json.Marshal(rec)
			use = clientv3.OpPut(tk, string(tb))
		}
		r, err := s.client.Txn(ctx).
			If(clientv3.Compare(clientv3.ModRevision(tk), "=", rev),
				clientv3.Compare(clientv3.CreateRevision(ck), "=", 0),
				clientv3.Compare(clientv3.CreateRevision(nk), "=", 0)).
			Then(use, clientv3.OpPut(ck, string(cb))).
			Else(clientv3.OpGet(ck, clientv3.WithCountOnly()), clientv3.OpGet(nk, clientv3.WithCountOnly())).
			Commit()
		if err != nil {
			return JoinToken{}, fmt.Errorf("join as node %q: %w", node, wrapEtcd(err))
		}
		if r.Succeeded {
			return rec.JoinToken, nil
		}
		switch {
		case r.Responses[1].GetResponseRange().Count > 0:
			return JoinToken{}, fmt.Errorf("node %q: %w: a node has that name, Ready or not; pick another, or have an admin remove it first (berth node rm %s)", node, errdefs.ErrAlreadyExists, node)
		case r.Responses[0].GetResponseRange().Count > 0:
			return JoinToken{}, fmt.Errorf("node %q: %w: a machine has joined under that name; pick another, or have an admin revoke it first (berth node revoke %s)", node, errdefs.ErrAlreadyExists, node)
		}
		// The token was used or changed meanwhile: check it again.
	}
}

// RejoinNode answers a join asked again, its first answer lost (a
// timeout after the transaction committed): when node's record says it
// joined with the key of fingerprint key, with the token given (its
// secret right, not revoked), and still holds the certificate it was
// given, it returns that certificate (PEM); ok is false otherwise. The
// token need not have a use left nor be unexpired: the join it repeats
// used it while it could. Someone who knows the token but not the
// node's key gets nothing; with its key's public half alone, only a
// certificate useless without the private half.
func (s *Store) RejoinNode(ctx context.Context, token, node, key string) (certPEM string, ok bool, err error) {
	id, secret, err := ParseJoinToken(token)
	if err != nil || key == "" {
		return "", false, nil
	}
	c, _, err := s.GetNodeCredential(ctx, node)
	if errdefs.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if c.JoinCert == "" || len(c.Certs) == 0 || c.Token != id ||
		subtle.ConstantTimeCompare([]byte(c.JoinKey), []byte(key)) != 1 || !c.Allows(c.Certs[0].Serial, time.Now()) {
		return "", false, nil
	}
	rec, _, err := s.getToken(ctx, id)
	if errdefs.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	if subtle.ConstantTimeCompare([]byte(hashSecret(secret)), []byte(rec.Hash)) != 1 || rec.Revoked {
		return "", false, nil
	}
	return c.JoinCert, true, nil
}

// GetNodeCredential reads a node's credentials record; ErrNotFound when it
// has none (never joined, revoked or removed).
func (s *Store) GetNodeCredential(ctx context.Context, node string) (NodeCredential, int64, error) {
	r, err := s.client.Get(ctx, s.nodeCredKey(node))
	if err != nil {
		return NodeCredential{}, 0, fmt.Errorf("credentials of node %q: %w", node, wrapEtcd(err))
	}
	if len(r.Kvs) == 0 {
		return NodeCredential{}, 0, fmt.Errorf("credentials of node %q: %w: revoked or never issued", node, errdefs.ErrNotFound)
	}
	var c NodeCredential
	if err := json.Unmarshal(r.Kvs[0].Value, &c); err != nil {
		return NodeCredential{}, 0, fmt.Errorf("stored credentials of node %q: %w", node, err)
	}
	return c, r.Kvs[0].ModRevision, nil
}

// RenewNodeCert adds cert to node's working certificates in place of the
// one with serial old, which must still work: it keeps working until it
// expires, for the requests under way with it, and any older one stops.
func (s *Store) RenewNodeCert(ctx context.Context, node, old string, cert NodeCert, now time.Time) error {
	for {
		c, rev, err := s.GetNodeCredential(ctx, node)
		if err != nil {
			return err
		}
		i := slices.IndexFunc(c.Certs, func(nc NodeCert) bool { return nc.Serial == old })
		if i < 0 || !c.Allows(old, now) {
			return fmt.Errorf("certificate %s of node %q: %w: revoked or replaced", old, node, errdefs.ErrUnauthorized)
		}
		c.Certs = []NodeCert{cert, c.Certs[i]}
		// A node that renews has its first certificate: no join of its
		// is left to answer again.
		c.JoinKey, c.JoinCert = "", ""
		b, _ := json.Marshal(c)
		key := s.nodeCredKey(node)
		r, err := s.client.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(clientv3.OpPut(key, string(b))).Commit()
		if err != nil {
			return fmt.Errorf("renew the certificate of node %q: %w", node, wrapEtcd(err))
		}
		if r.Succeeded {
			return nil
		}
	}
}

// RevokeNode stops every certificate of node from working. It returns the
// revision of the revocation, for callers that wait for caches to see it,
// or 0 when the node had no certificates to revoke.
func (s *Store) RevokeNode(ctx context.Context, node string) (int64, error) {
	r, err := s.client.Delete(ctx, s.nodeCredKey(node))
	if err != nil {
		return 0, fmt.Errorf("revoke node %q: %w", node, wrapEtcd(err))
	}
	if r.Deleted == 0 {
		return 0, nil
	}
	return r.Header.Revision, nil
}

// NodeCredentialCache follows the nodes' credential records through a
// watch, so that each request's certificate is checked in memory.
type NodeCredentialCache struct {
	s *Store

	mu     sync.RWMutex
	creds  map[string]NodeCredential
	rev    int64 // the store revision the cache reflects
	synced bool
	cond   *sync.Cond
	// changed holds, by node, a channel closed at the next change to that
	// node's record (or a list of them all): a long request of the node
	// waits on its own. One channel for every change woke each node's
	// watch at each other node's join, N² wake-ups for a fleet of N.
	changed map[string]chan struct{}
}

// NewNodeCredentialCache returns a cache of s's node credentials; it
// follows them once Run runs.
func (s *Store) NewNodeCredentialCache() *NodeCredentialCache {
	c := &NodeCredentialCache{s: s, creds: map[string]NodeCredential{}, changed: map[string]chan struct{}{}}
	c.cond = sync.NewCond(c.mu.RLocker())
	return c
}

// Run lists the records and follows their changes until ctx ends,
// listing again whenever the watch breaks.
func (c *NodeCredentialCache) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := c.follow(ctx); err != nil && ctx.Err() == nil {
			c.s.log.Warn("node credentials watch broke; listing again", "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	c.cond.Broadcast()
}

func (c *NodeCredentialCache) follow(ctx context.Context) error {
	prefix := c.s.nodeCredPrefix()
	r, err := c.s.client.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return wrapEtcd(err)
	}
	m := make(map[string]NodeCredential, len(r.Kvs))
	for _, kv := range r.Kvs {
		var nc NodeCredential
		if json.Unmarshal(kv.Value, &nc) == nil {
			nc.JoinCert = ""
			m[string(kv.Key[len(prefix):])] = nc
		}
	}
	c.set(nil, func() { c.creds, c.rev, c.synced = m, r.Header.Revision, true })
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for wr := range c.s.client.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(r.Header.Revision+1), clientv3.WithProgressNotify()) {
		if err := wr.Err(); err != nil {
			return wrapEtcd(err)
		}
		nodes := make([]string, 0, len(wr.Events))
		for _, e := range wr.Events {
			nodes = append(nodes, string(e.Kv.Key[len(prefix):]))
		}
		c.set(nodes, func() {
			for _, e := range wr.Events {
				node := string(e.Kv.Key[len(prefix):])
				var nc NodeCredential
				if e.Type == clientv3.EventTypeDelete || json.Unmarshal(e.Kv.Value, &nc) != nil {
					delete(c.creds, node)
				} else {
					nc.JoinCert = ""
					c.creds[node] = nc
				}
			}
			c.rev = max(c.rev, wr.Header.Revision)
		})
	}
	return ctx.Err()
}

// set applies f under the lock and wakes those waiting on the records of
// nodes, or on any record when nodes is nil (a fresh list).
func (c *NodeCredentialCache) set(nodes []string, f func()) {
	c.mu.Lock()
	f()
	if nodes == nil {
		for node, ch := range c.changed {
			close(ch)
			delete(c.changed, node)
		}
	}
	for _, node := range nodes {
		if ch, ok := c.changed[node]; ok {
			close(ch)
			delete(c.changed, node)
		}
	}
	c.mu.Unlock()
	c.cond.Broadcast()
}

// Changed is closed at the next change to node's record that the cache
// sees: a long request of the node (a watch) waits on it to check its
// certificate again.
func (c *NodeCredentialCache) Changed(node string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.changed[node]
	if !ok {
		ch = make(chan struct{})
		c.changed[node] = ch
	}
	return ch
}

// Allows reports whether node's certificate with serial works at now. Until
// the cache has listed the records once, and when the cache refuses, it
// asks the store: a node that has just joined (or renewed) uses its new
// certificate at once, maybe before the cache's watch brings the record
// (a fleet joining together saw such refusals). Only refusals cost a read.
func (c *NodeCredentialCache) Allows(ctx context.Context, node, serial string, now time.Time) (bool, error) {
	c.mu.RLock()
	nc, ok := c.creds[node]
	synced := c.synced
	c.mu.RUnlock()
	if synced && ok && nc.Allows(serial, now) {
		return true, nil
	}
	nc, _, err := c.s.GetNodeCredential(ctx, node)
	if errdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil && nc.Allows(serial, now), err
}

// WaitFor waits until the cache reflects revision rev or ctx ends.
func (c *NodeCredentialCache) WaitFor(ctx context.Context, rev int64) error {
	stop := context.AfterFunc(ctx, c.cond.Broadcast)
	defer stop()
	c.mu.RLock()
	defer c.mu.RUnlock()
	for c.rev < rev {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("node credentials cache at revision %d, waiting for %d: %w", c.rev, rev, errdefs.ErrUnavailable)
		}
		c.cond.Wait()
	}
	return nil
}
