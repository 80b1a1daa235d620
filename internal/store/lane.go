package store

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
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

// laneMaxTxns is how many transactions the lane has in flight at most,
// however small: etcd's cost is per transaction as well as per byte, and
// a thousand nodes' small status batches, a hundred at once under the
// byte budget alone, kept an API client's write waiting for seconds.
const laneMaxTxns = 16

// laneMinTxns is how many it always lets in: one applied while the next
// is written to etcd's log keeps etcd's apply busy.
const laneMinTxns = 2

// laneTarget is how long a transaction of the lane may take in etcd, from
// sent to answered, before the lane lets fewer in at once. A single
// object's write queues in etcd behind those in flight, so their time is
// its wait. With 5,000 nodes' status reports and the controller's batches
// on a busy server, etcd took 30 ms and more to apply each transaction,
// sixteen in flight made an API client's apply wait most of a second in
// etcd, and its p99 passed a second; the lane now halves what it lets in
// while its transactions take longer than this, and lets one more in, a
// little at a time, while they take less.
const laneTarget = 100 * time.Millisecond

type bulkKey struct{}

// Bulk marks ctx's writes as background work that waits in the bulk
// lane whatever their size: a node's status reports, which its agent
// sends again when they fail, and whose latency no client waits on.
func Bulk(ctx context.Context) context.Context { return context.WithValue(ctx, bulkKey{}, true) }

func isBulk(ctx context.Context) bool { b, _ := ctx.Value(bulkKey{}).(bool); return b }

// bulkLane admits many-object transactions to etcd, in the order they
// came (a large batch is not passed over for ever by small ones), up to a
// budget of bytes and a number of transactions in flight. The number
// follows etcd's pace (laneTarget): additive increase, multiplicative
// decrease, as TCP's congestion window.
type bulkLane struct {
	budget  int64
	waiting atomic.Int32 // transactions waiting for the lane

	mu      sync.Mutex
	target  time.Duration
	limit   float64 // transactions in flight allowed: laneMinTxns to laneMaxTxns
	cut     time.Time
	txns    int   // in flight
	bytes   int64 // in flight
	waiters []*laneWaiter
}

type laneWaiter struct {
	weight int64
	ready  chan struct{} // closed once admitted
	in     bool          // admitted
}

func newBulkLane(budget int64) *bulkLane {
	return &bulkLane{budget: budget, target: laneTarget, limit: laneMaxTxns}
}

// enter waits until a transaction of weight bytes may go to etcd and
// returns what lets the next one in once it is answered: called with the
// time etcd took to answer, or 0 when it did not (an error, a hold). A
// transaction larger than the budget goes alone.
func (l *bulkLane) enter(ctx context.Context, weight int64) (release func(took time.Duration), err error) {
	weight = min(max(weight, 1), l.budget)
	release = func(took time.Duration) { l.leave(weight, took) }
	l.mu.Lock()
	if len(l.waiters) == 0 && l.fits(weight) {
		l.txns++
		l.bytes += weight
		l.mu.Unlock()
		return release, nil
	}
	w := &laneWaiter{weight: weight, ready: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.mu.Unlock()
	l.waiting.Add(1)
	defer l.waiting.Add(-1)
	select {
	case <-w.ready:
		return release, nil
	case <-ctx.Done():
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w.in {
		// Let in as ctx ended: its place goes to the next.
		l.txns--
		l.bytes -= weight
	} else {
		for i, o := range l.waiters {
			if o == w {
				l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
				break
			}
		}
	}
	l.admit()
	return nil, ctx.Err()
}

// fits says whether a transaction of weight may go now; l.mu is held.
func (l *bulkLane) fits(weight int64) bool {
	return l.txns < int(l.limit) && (l.txns == 0 || l.bytes+weight <= l.budget)
}

// admit lets in the waiters at the head that fit; l.mu is held.
func (l *bulkLane) admit() {
	for len(l.waiters) > 0 && l.fits(l.waiters[0].weight) {
		w := l.waiters[0]
		l.waiters = l.waiters[1:]
		l.txns++
		l.bytes += w.weight
		w.in = true
		close(w.ready)
	}
}

func (l *bulkLane) leave(weight int64, took time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.txns--
	l.bytes -= weight
	if took > 0 {
		l.observe(took, time.Now())
	}
	l.admit()
}

// observe adjusts the limit to a transaction answered at now after
// took; l.mu is held. A slow one halves it, once a round: those sent
// before the last cut were in a queue the cut has not shortened yet.
func (l *bulkLane) observe(took time.Duration, now time.Time) {
	if took <= l.target {
		l.limit = min(laneMaxTxns, l.limit+1/l.limit)
		return
	}
	if now.Add(-took).Before(l.cut) {
		return
	}
	l.limit = max(laneMinTxns, l.limit/2)
	l.cut = now
}
