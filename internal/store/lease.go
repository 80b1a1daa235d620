package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/lease"
)

// A node is alive while its key under <prefix>/leases/ exists: the
// controller judges liveness by that alone. The key is written when a
// server takes the node's first heartbeat, and deleted when that server has
// taken none for the node's TTL: a heartbeat itself touches etcd not at
// all, not even a lease renewal. The servers keep the time of each node's
// last beat in their memory, as Nomad's leader does, and write only the
// changes of state (alive, lapsed). With one lease renewal per node per
// beat, a server too starved to renew them in time let thousands lapse at
// once, and their re-grants (two raft writes each) drove etcd past its
// pending-proposal limit, which failed more renewals.
//
// With several servers a node beats to one of them at a time (its agent
// moves on only when that one stops answering). The server taking its beats
// owns the key: the key's value is the server's owner ID (one per process)
// and it is bound to the server's own lease. A server given a beat for a
// node whose key it does not own writes the key as its own (one write per
// move), so the node is seen alive by every server and by the controller
// wherever it beats. Each server follows the keys in a watch and forgets
// owning those another server took or someone deleted; its sweep deletes
// only a key still at the revision it wrote, so it never removes another
// server's. The revision a server knows it wrote is the latest of its
// writes of the key, as their answers or its watch tell it, whichever
// comes first: beats of one node that reach it together (an agent's
// stale beats, delivered when its cut link came back, and its next one)
// each write the key, and a write whose caller gave up may land all the
// same, later, with no answer. A server that knew only an earlier one
// found the key moved on at its sweep, and left it: the node, stopped for
// good, stayed alive for as long as the server did.
//
// A server that dies takes its lease with it: its keys go a lease TTL (the
// node TTL) later, unless their nodes have moved to another server, which
// rebinds them first. A restarted server owns nothing: each node's next
// beat rebinds its key to the new lease, within the heartbeat interval,
// before the old lease lapses. A sweep that runs late (the process starved
// of CPU, or stopped) moves every deadline on by its delay: a server that
// could not run could not take beats either, and must not blame the nodes.
// A server whose lease lapses (etcd too slow to take its renewals) grants
// another and rebinds the keys of its live nodes in batched transactions.
//
// A key goes for one of two reasons: a sweep saw its node miss a whole
// TTL of beats, or its server's lease ended (the server died, or was too
// starved to renew it), when its nodes may be beating still and only need
// a moment to reach another server. A controller that was leading all
// along acts on either. One that just took over cannot tell them apart by
// the key, and would wait a node TTL for every missing node; so the sweep
// leaves a key of its own under <prefix>/lapsed/ in the same transaction,
// holding the time of the node's last beat, and whichever server writes the
// node's lease key again deletes it in the same transaction too. A node
// with a lapsed key and no lease key stopped beating a TTL ago to the
// server that held its beats, and beats to no other since.

func (s *Store) leaseKey(node string) string { return s.prefix + "/leases/" + node }

func (s *Store) lapsedKey(node string) string { return s.prefix + "/lapsed/" + node }

// liveness is this store's side of the nodes' heartbeats.
type liveness struct {
	owner string   // this process's owner ID, each owned key's value
	nodes sync.Map // node name -> *beat

	mu      sync.Mutex // guards the fields below
	lease   clientv3.LeaseID
	ttl     time.Duration // of the lease, the first node TTL asked
	started bool
	stop    context.CancelFunc
	wg      sync.WaitGroup
}

// beat is what a store remembers of one node's heartbeats.
type beat struct {
	at  atomic.Int64 // Unix nanoseconds of the last beat taken here
	due atomic.Int64 // Unix nanoseconds when the node lapses without another
	// rev is the revision at which this store last wrote the node's key,
	// 0 when it does not own it (never wrote it, lapsed, or taken over).
	// Writes only raise it (see raise); the sweep and the watch of the
	// keys let it go.
	rev atomic.Int64
}

// raise makes rev, a revision at which this store wrote the node's key,
// the one b knows unless it knows a later one: writes that ran together
// answer in any order, and the watch may tell of one before its answer.
func (b *beat) raise(rev int64) {
	for {
		r := b.rev.Load()
		if r >= rev || b.rev.CompareAndSwap(r, rev) {
			return
		}
	}
}

// KeepNodeAlive takes a heartbeat of node, which lapses ttl after its
// last one.
func (s *Store) KeepNodeAlive(ctx context.Context, node string, ttl time.Duration) error {
	_, err := s.RenewNode(ctx, node, ttl)
	return err
}

// RenewNode is KeepNodeAlive, and reports whether the node was alive
// already: its key known to be this store's and its last beat within the
// TTL. Such a beat costs no etcd request. False means the key was written
// by this call: the node had lapsed (and may have been marked NotReady
// meanwhile), or this store had not taken its beats before.
func (s *Store) RenewNode(ctx context.Context, node string, ttl time.Duration) (bool, error) {
	v, _ := s.live.nodes.LoadOrStore(node, new(beat))
	b := v.(*beat)
	now := time.Now().UnixNano()
	b.at.Store(now)
	was := b.due.Swap(now + int64(ttl))
	if b.rev.Load() != 0 && now <= was {
		return true, nil
	}
	if err := s.startLiveness(ctx, ttl); err != nil {
		return false, fmt.Errorf("node %q: heartbeat: %w", node, err)
	}
	lease := s.live.leaseID()
	// A node's own beat, sent through the API, waits in the lane as the
	// node's other writes do (Bulk).
	p, err := s.commit(ctx, isBulk(ctx), int64(len(s.leaseKey(node))+len(s.live.owner)), s.client.Txn(ctx).Then(
		clientv3.OpPut(s.leaseKey(node), s.live.owner, clientv3.WithLease(lease)),
		clientv3.OpDelete(s.lapsedKey(node))))
	if err != nil {
		return false, fmt.Errorf("node %q: heartbeat: %w", node, err)
	}
	b.raise(p.Header.Revision)
	s.noteWrite(p.Header.Revision)
	return false, nil
}

// LastRenewal is when this store last took a heartbeat of node (zero
// when it has taken none, or the node was expired since): the time of the
// node's latest heartbeat through this server, which the stored node does
// not carry, since a heartbeat writes nothing.
func (s *Store) LastRenewal(node string) time.Time {
	if v, ok := s.live.nodes.Load(node); ok {
		return time.Unix(0, v.(*beat).at.Load())
	}
	return time.Time{}
}

func (l *liveness) leaseID() clientv3.LeaseID {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lease
}

// startLiveness grants this store's lease, with ttl, and starts following
// the keys and sweeping lapsed nodes, once.
func (s *Store) startLiveness(ctx context.Context, ttl time.Duration) error {
	l := &s.live
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.started {
		return nil
	}
	if l.owner == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		l.owner = hex.EncodeToString(b[:])
	}
	g, err := s.client.Grant(ctx, max(int64(ttl/time.Second), 2))
	if err != nil {
		return fmt.Errorf("server lease: %w", wrapEtcd(err))
	}
	// Follow the keys from the grant on: no key is this store's before.
	rev := g.Revision
	l.lease, l.ttl, l.started = g.ID, ttl, true
	bg, stop := context.WithCancel(context.Background())
	l.stop = stop
	l.wg.Go(func() { s.followKeys(bg, rev+1) })
	l.wg.Go(func() { s.sweep(bg) })
	l.wg.Go(func() { s.keepLease(bg) })
	return nil
}

// stopLiveness ends what startLiveness started.
func (l *liveness) stopLiveness() {
	l.mu.Lock()
	stop := l.stop
	l.mu.Unlock()
	if stop != nil {
		stop()
		l.wg.Wait()
	}
}

// followKeys forgets owning the keys another server wrote, or anyone
// deleted, after this store wrote them, and learns of this store's own
// writes that landed after the one it knows: one whose caller gave up
// (its context ended) had no answer to tell it.
func (s *Store) followKeys(ctx context.Context, from int64) {
	prefix := s.prefix + "/leases/"
	for ctx.Err() == nil {
		wc := s.client.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(from))
		for resp := range wc {
			if resp.Err() != nil {
				break
			}
			for _, e := range resp.Events {
				v, ok := s.live.nodes.Load(strings.TrimPrefix(string(e.Kv.Key), prefix))
				if !ok {
					continue
				}
				b := v.(*beat)
				if e.Type == clientv3.EventTypePut && string(e.Kv.Value) == s.live.owner {
					b.raise(e.Kv.ModRevision)
					continue
				}
				if r := b.rev.Load(); r != 0 && r < e.Kv.ModRevision {
					b.rev.CompareAndSwap(r, 0)
				}
			}
			from = resp.Header.Revision + 1
		}
		if ctx.Err() != nil {
			return
		}
		// The watch broke (compaction, a lost leader): what it missed is
		// read whole, and the watch starts again after it.
		r, err := s.client.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			time.Sleep(time.Second)
			continue
		}
		mine := map[string]int64{}
		for _, kv := range r.Kvs {
			if string(kv.Value) == s.live.owner {
				mine[strings.TrimPrefix(string(kv.Key), prefix)] = kv.ModRevision
			}
		}
		s.live.nodes.Range(func(k, v any) bool {
			b := v.(*beat)
			m, ok := mine[k.(string)]
			switch r := b.rev.Load(); {
			case ok && m > r:
				b.raise(m)
			case r != 0 && m != r:
				b.rev.CompareAndSwap(r, 0)
			}
			return true
		})
		from = r.Header.Revision + 1
	}
}

// sweepTick is how often lapses are looked for with a node TTL of ttl:
// a fortieth of it, within 100 ms and 250 ms. A lapse seen late is a
// node's instances replaced late: a node lost is to be replaced within
// its TTL and 5 s, and at 15,000 nodes and 300,000 instances the rest of
// that (the controller marking the node and its instances, the
// replacements placed and started) takes seconds already. A look costs
// a read of each node's deadline, well under a millisecond at 15,000
// nodes.
func sweepTick(ttl time.Duration) time.Duration {
	return min(max(ttl/40, 100*time.Millisecond), 250*time.Millisecond)
}

// sweepLate is how much later than its tick a sweep may run before the
// process is taken to have been stopped (see sweep): a loaded server's
// sweep is often a few hundred milliseconds late, and that does not keep
// it from taking beats.
const sweepLate = 1250 * time.Millisecond

// sweep deletes the keys of nodes whose beats stopped.
func (s *Store) sweep(ctx context.Context) {
	tick := sweepTick(s.live.ttl)
	t := time.NewTicker(tick)
	defer t.Stop()
	last := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			// The time it runs, not the tick's: a starved process gets
			// the tick late.
			now := time.Now()
			if late := now.Sub(last) - tick; late > sweepLate {
				// This process could not run: neither could it take beats.
				s.live.nodes.Range(func(_, v any) bool {
					v.(*beat).due.Add(int64(late))
					return true
				})
				s.log.Warn("node heartbeat sweep ran late; deadlines moved on", "late", late)
			}
			s.sweepOnce(ctx, now)
			// From the sweep's end: a slow etcd is not a stalled process.
			last = time.Now()
		}
	}
}

// sweepOnce deletes the keys this store owns of nodes lapsed by now, in
// batched transactions, each key only at the revision this store wrote.
func (s *Store) sweepOnce(ctx context.Context, now time.Time) {
	type lapse struct {
		node string
		b    *beat
		rev  int64
	}
	var lapsed []lapse
	s.live.nodes.Range(func(k, v any) bool {
		b := v.(*beat)
		r := b.rev.Load()
		if r == 0 || now.UnixNano() <= b.due.Load() || !b.rev.CompareAndSwap(r, 0) {
			return true
		}
		// A beat that came in meanwhile saw the key still owned.
		if now.UnixNano() <= b.due.Load() {
			b.rev.CompareAndSwap(0, r)
			return true
		}
		lapsed = append(lapsed, lapse{k.(string), b, r})
		return true
	})
	// Said in the log, a few named: a node that stops is marked NotReady
	// only after this, and a log without it shows where that stopped.
	var gone []string
	defer func() {
		if len(gone) > 0 {
			s.log.Info("node heartbeats lapsed: lease keys deleted", "count", len(gone), "nodes", gone[:min(len(gone), 5)])
		}
	}()
	for len(lapsed) > 0 {
		// Two operations a node: its key goes, its lapsed key comes.
		n := min(len(lapsed), max(s.maxOps/2, 1))
		batch := lapsed[:n]
		lapsed = lapsed[n:]
		cmps := make([]clientv3.Cmp, 0, n)
		ops := make([][]clientv3.Op, 0, n)
		for _, l := range batch {
			at := time.Unix(0, l.b.at.Load()).UTC().Format(time.RFC3339Nano)
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(s.leaseKey(l.node)), "=", l.rev))
			ops = append(ops, []clientv3.Op{clientv3.OpDelete(s.leaseKey(l.node)), clientv3.OpPut(s.lapsedKey(l.node), at)})
		}
		r, err := s.client.Txn(ctx).If(cmps...).Then(slices.Concat(ops...)...).Commit()
		if err == nil && r.Succeeded {
			s.noteWrite(r.Header.Revision)
			for _, l := range batch {
				gone = append(gone, l.node)
			}
			continue
		}
		// Some key moved on (another server took it): one at a time.
		for i, l := range batch {
			r, err := s.client.Txn(ctx).If(cmps[i]).Then(ops[i]...).Commit()
			if err != nil {
				// Not deleted: owned again, for the next sweep to try.
				l.b.rev.CompareAndSwap(0, l.rev)
				continue
			}
			if r.Succeeded {
				s.noteWrite(r.Header.Revision)
				gone = append(gone, l.node)
			}
		}
	}
}

// keepLease renews this store's lease four times a TTL, and again a
// quarter second after a renewal fails; it grants another when the lease
// has lapsed all the same, binding to it the keys of the nodes still
// beating here. All of this server's nodes lapse with its lease: it gets
// every chance to keep it.
func (s *Store) keepLease(ctx context.Context) {
	every := max(s.live.ttl/4, 500*time.Millisecond)
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(every)
		rctx, cancel := context.WithTimeout(ctx, every)
		left, err := s.RenewLease(rctx, s.live.leaseID())
		cancel()
		if err == nil && left > 0 {
			continue
		}
		if err != nil && !errors.Is(err, lease.ErrLeaseNotFound) && rpctypes.Error(err) != rpctypes.ErrLeaseNotFound {
			t.Reset(250 * time.Millisecond)
			continue
		}
		if err := s.regrant(ctx); err != nil {
			s.log.Warn("node heartbeats: server lease lapsed and could not be granted again", "err", err)
			t.Reset(250 * time.Millisecond)
		}
	}
}

// regrant replaces this store's lapsed lease and binds to it the keys of
// the nodes whose beats it takes, maxOps to a transaction.
func (s *Store) regrant(ctx context.Context) error {
	g, err := s.client.Grant(ctx, max(int64(s.live.ttl/time.Second), 2))
	if err != nil {
		return wrapEtcd(err)
	}
	s.live.mu.Lock()
	s.live.lease = g.ID
	s.live.mu.Unlock()
	s.log.Warn("node heartbeats: server lease lapsed; keys bound to a new one")
	now := time.Now().UnixNano()
	var nodes []string
	var beats []*beat
	s.live.nodes.Range(func(k, v any) bool {
		if b := v.(*beat); now <= b.due.Load() {
			nodes, beats = append(nodes, k.(string)), append(beats, b)
		}
		return true
	})
	for len(nodes) > 0 {
		n := min(len(nodes), s.maxOps)
		ops := make([]clientv3.Op, 0, n)
		for _, node := range nodes[:n] {
			ops = append(ops, clientv3.OpPut(s.leaseKey(node), s.live.owner, clientv3.WithLease(g.ID)))
		}
		r, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return wrapEtcd(err)
		}
		s.noteWrite(r.Header.Revision)
		for _, b := range beats[:n] {
			b.raise(r.Header.Revision)
		}
		nodes, beats = nodes[n:], beats[n:]
	}
	return nil
}

// RenewLease keeps lease id alive once and returns its TTL in seconds (0
// or an error when it has lapsed). The embedded server renews it with a
// call: through the client, each renewal opened a keep-alive stream, and
// its goroutines, for one message, and took up to a second while etcd
// committed large transactions (120 µs by the call). The server forwards
// the renewal to the leader when it is not the leader itself, as it would
// the stream's.
func (s *Store) RenewLease(ctx context.Context, id clientv3.LeaseID) (int64, error) {
	if s.etcd != nil {
		return s.etcd.Server.LeaseRenew(ctx, lease.LeaseID(id))
	}
	ka, err := s.client.KeepAliveOnce(ctx, id)
	if err != nil {
		return 0, err
	}
	return ka.TTL, nil
}

// ExpireNode ends node's liveness at once, as if it had stopped beating:
// its next heartbeat, through any server, makes it alive again. It leaves
// no lapsed key: no server saw the node miss its beats, as when a server's
// lease ends, and a controller that just took over waits for it as long.
func (s *Store) ExpireNode(ctx context.Context, node string) error {
	key := s.leaseKey(node)
	r, err := s.client.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat: %w", node, wrapEtcd(err))
	}
	// A key with no owner was bound by an earlier version to a lease of
	// the node's own: it ends too. A server's lease holds other nodes'
	// keys and stays.
	if len(r.Kvs) > 0 && len(r.Kvs[0].Value) == 0 && r.Kvs[0].Lease != 0 {
		_, _ = s.client.Revoke(ctx, clientv3.LeaseID(r.Kvs[0].Lease))
	}
	s.live.nodes.Delete(node)
	d, err := s.client.Delete(ctx, key)
	if err != nil {
		return fmt.Errorf("node %q: heartbeat: %w", node, wrapEtcd(err))
	}
	s.noteWrite(d.Header.Revision)
	return nil
}

// LiveNodes names the nodes alive: their key exists.
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

// LapsedNodesAt names the nodes a server saw miss a whole TTL of beats,
// and that have beaten to no server since (see the top of this file), as
// of revision rev (the current one when 0).
func (s *Store) LapsedNodesAt(ctx context.Context, rev int64) (map[string]bool, error) {
	prefix := s.prefix + "/lapsed/"
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithKeysOnly()}
	if rev != 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	r, err := s.client.Get(ctx, prefix, opts...)
	if err != nil {
		return nil, fmt.Errorf("lapsed nodes: %w", wrapEtcd(err))
	}
	out := make(map[string]bool, len(r.Kvs))
	for _, kv := range r.Kvs {
		out[strings.TrimPrefix(string(kv.Key), prefix)] = true
	}
	return out, nil
}
