package store

import (
	"context"
	"sync/atomic"
	"time"
)

// Timing adds up where one request's store calls spent their time:
// reading from etcd, waiting in the bulk lane, and writing to etcd (the
// transaction's round, queued behind whatever etcd has yet to apply). A
// slow API write then says which it waited on (the API server's phase
// histogram and slow-write log). Safe for concurrent use; a nil *Timing
// records nothing.
type Timing struct {
	read, lane, write atomic.Int64 // nanoseconds
	ahead, laneAhead  atomic.Int64 // the most seen by one of its writes
	writes            atomic.Int64 // write transactions sent
}

type timingKey struct{}

// WithTiming returns ctx whose store calls add their time to t.
func WithTiming(ctx context.Context, t *Timing) context.Context {
	return context.WithValue(ctx, timingKey{}, t)
}

func timingFrom(ctx context.Context) *Timing {
	t, _ := ctx.Value(timingKey{}).(*Timing)
	return t
}

// Read is the time spent reading from etcd.
func (t *Timing) Read() time.Duration { return time.Duration(t.read.Load()) }

// Lane is the time spent waiting in the bulk lane.
func (t *Timing) Lane() time.Duration { return time.Duration(t.lane.Load()) }

// Write is the time spent in etcd write transactions, from sent to answered.
func (t *Timing) Write() time.Duration { return time.Duration(t.write.Load()) }

// Ahead is the most write transactions the store had in etcd, sent and
// not yet answered, when one of this request's writes was sent: what it
// queued behind in etcd's apply, as far as this server knows (another
// server's writes are not counted).
func (t *Timing) Ahead() int { return int(t.ahead.Load()) }

// Writes is how many write transactions the request sent: more than one
// for a single object's write is a conflict tried again.
func (t *Timing) Writes() int { return int(t.writes.Load()) }

// LaneAhead is how many of Ahead were the bulk lane's.
func (t *Timing) LaneAhead() int { return int(t.laneAhead.Load()) }

// sawAhead counts one of the request's writes, sent with n transactions
// in flight, lane of them the lane's; the most is kept.
func (t *Timing) sawAhead(n, lane int) {
	if t == nil {
		return
	}
	t.writes.Add(1)
	for {
		cur := t.ahead.Load()
		if int64(n) <= cur {
			return
		}
		if t.ahead.CompareAndSwap(cur, int64(n)) {
			t.laneAhead.Store(int64(lane))
			return
		}
	}
}

// since adds the time since start to d; it is called deferred, with
// start taken when the call began.
func (t *Timing) since(d *atomic.Int64, start time.Time) { d.Add(int64(time.Since(start))) }

func (t *Timing) readSince(start time.Time) {
	if t != nil {
		t.since(&t.read, start)
	}
}

func (t *Timing) laneSince(start time.Time) {
	if t != nil {
		t.since(&t.lane, start)
	}
}

func (t *Timing) writeSince(start time.Time) {
	if t != nil {
		t.since(&t.write, start)
	}
}
