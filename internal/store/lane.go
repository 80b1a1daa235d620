package store

import (
	"context"
	"sync/atomic"

	"golang.org/x/sync/semaphore"
)

// bulkBudget is about the bytes of many-object transactions (a service's
// new instances, a pass's bindings, a node's status reports) one store
// has in flight to etcd at once. etcd applies its entries one after
// another, so a single object's write (an API client's apply, delete or
// status) waits for every batch ahead of it. With the controller's
// instance batches and a thousand nodes' status reports all sent at once,
// 150 and more transactions were queued in etcd and a probe's one-object
// apply took seconds; held here instead, the batches queue in the server
// and a single object's write, which never waits for the lane, finds at
// most this much ahead of it in etcd. Two of the largest transactions keep
// etcd busy (one applied while the next is written).
const bulkBudget = 2 * MaxTxnBytes

// bulkMinWeight is what any transaction in the lane counts for at least:
// etcd's cost is per transaction as well as per byte, and a thousand
// nodes' small status batches, a hundred at once under the byte budget
// alone, kept an API client's write waiting for seconds. At most 16 are
// in flight.
const bulkMinWeight = bulkBudget / 16

type bulkKey struct{}

// Bulk marks ctx's writes as background work that waits in the bulk
// lane whatever their size: a node's status reports, which its agent
// sends again when they fail, and whose latency no client waits on.
func Bulk(ctx context.Context) context.Context { return context.WithValue(ctx, bulkKey{}, true) }

func isBulk(ctx context.Context) bool { b, _ := ctx.Value(bulkKey{}).(bool); return b }

// bulkLane admits many-object transactions to etcd, up to a budget of
// bytes in flight, in the order they came (semaphore.Weighted is FIFO,
// so a large batch is not passed over for ever by small ones).
type bulkLane struct {
	sem     *semaphore.Weighted
	budget  int64
	waiting atomic.Int32 // transactions waiting for the lane
}

func newBulkLane(budget int64) *bulkLane {
	return &bulkLane{sem: semaphore.NewWeighted(budget), budget: budget}
}

// enter waits until a transaction of weight bytes may go to etcd and
// returns what lets the next one in once it is answered. A transaction
// larger than the budget goes alone; a small one counts as
// bulkMinWeight.
func (l *bulkLane) enter(ctx context.Context, weight int64) (release func(), err error) {
	weight = min(max(weight, bulkMinWeight), l.budget)
	if !l.sem.TryAcquire(weight) {
		l.waiting.Add(1)
		err = l.sem.Acquire(ctx, weight)
		l.waiting.Add(-1)
		if err != nil {
			return nil, err
		}
	}
	return func() { l.sem.Release(weight) }, nil
}
