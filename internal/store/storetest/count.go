// Package storetest counts what a store asks of etcd, for tests that
// bound what a path costs: a read that needs a raft round, or a write.
package storetest

import (
	"context"
	"slices"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/internal/store"
)

// Counts are the requests a store made through its client since Count.
type Counts struct {
	// Linearizable reads each cost a raft round (a read index) on etcd.
	Linearizable int
	// Serializable reads are served from the member's own state.
	Serializable int
	// Writes are puts and deletes.
	Writes int
	// Txns are transactions, whatever they hold: each takes a raft round.
	Txns int
	// TxnLinearizable and TxnSerializable are the reads inside
	// transactions (counted in Txns, not above), by kind.
	TxnLinearizable, TxnSerializable int
}

// Counter counts the key-value requests of one store.
type Counter struct {
	clientv3.KV
	mu sync.Mutex
	c  Counts
	// behind, when set, is the revision serializable reads are served
	// at (see Behind).
	behind int64
}

// Behind makes the store's serializable reads, which the etcd member
// serves from its own state, answer as of revision rev: what a member
// that has applied no more than rev holds. Zero serves them current.
func (c *Counter) Behind(rev int64) {
	c.mu.Lock()
	c.behind = rev
	c.mu.Unlock()
}

// staleRead is op, read at the revision Behind set when it is a
// serializable read.
func (c *Counter) staleRead(op clientv3.Op) clientv3.Op {
	if !op.IsGet() || !op.IsSerializable() || c.behind == 0 {
		return op
	}
	opts := []clientv3.OpOption{clientv3.WithSerializable(), clientv3.WithRev(c.behind)}
	if end := op.RangeBytes(); len(end) > 0 {
		opts = append(opts, clientv3.WithRange(string(end)))
	}
	return clientv3.OpGet(string(op.KeyBytes()), opts...)
}

// Count starts counting s's key-value requests. Call it before the store
// is used concurrently: it replaces the KV of s's client.
func Count(s *store.Store) *Counter {
	c := &Counter{KV: s.Client().KV}
	s.Client().KV = c
	return c
}

// Take returns the counts so far and starts again from zero.
func (c *Counter) Take() Counts {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.c
	c.c = Counts{}
	return out
}

func (c *Counter) note(op clientv3.Op) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case op.IsGet() && op.IsSerializable():
		c.c.Serializable++
	case op.IsGet():
		c.c.Linearizable++
	case op.IsTxn():
		c.c.Txns++
	default:
		c.c.Writes++
	}
}

func (c *Counter) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	op := clientv3.OpGet(key, opts...)
	c.note(op)
	c.mu.Lock()
	op = c.staleRead(op)
	c.mu.Unlock()
	r, err := c.KV.Do(ctx, op)
	return r.Get(), err
}

func (c *Counter) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	c.note(clientv3.OpPut(key, val, opts...))
	return c.KV.Put(ctx, key, val, opts...)
}

func (c *Counter) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	c.note(clientv3.OpDelete(key, opts...))
	return c.KV.Delete(ctx, key, opts...)
}

func (c *Counter) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	c.note(op)
	return c.KV.Do(ctx, op)
}

func (c *Counter) Txn(ctx context.Context) clientv3.Txn {
	c.mu.Lock()
	c.c.Txns++
	c.mu.Unlock()
	return countedTxn{Txn: c.KV.Txn(ctx), c: c}
}

// countedTxn counts the reads a transaction does when it succeeds.
type countedTxn struct {
	clientv3.Txn
	c *Counter
}

func (t countedTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	return countedTxn{Txn: t.Txn.If(cs...), c: t.c}
}

func (t countedTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.c.mu.Lock()
	ops = slices.Clone(ops)
	for i, op := range ops {
		ops[i] = t.c.staleRead(op)
		switch {
		case op.IsGet() && op.IsSerializable():
			t.c.c.TxnSerializable++
		case op.IsGet():
			t.c.c.TxnLinearizable++
		}
	}
	t.c.mu.Unlock()
	return countedTxn{Txn: t.Txn.Then(ops...), c: t.c}
}

func (t countedTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	return countedTxn{Txn: t.Txn.Else(ops...), c: t.c}
}
