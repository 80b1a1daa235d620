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
