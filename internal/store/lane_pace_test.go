package store

import (
	"testing"
	"time"
)

// The lane's limit halves on a transaction slower than its target, once
// a round (not again for those already in flight at the cut), never below
// laneMinTxns; and grows by about one a round of fast ones, up to
// laneMaxTxns.
func TestBulkLaneLimitFollowsPace(t *testing.T) {
	l := newBulkLane(bulkBudget)
	now := time.Unix(1000, 0)
	slow := 2 * laneTarget
	l.observe(slow, now)
	if l.limit != laneMaxTxns/2 {
		t.Fatalf("after one slow transaction: limit %v, want %v", l.limit, laneMaxTxns/2)
	}
	// Sent before that cut: in the queue the cut has not shortened yet.
	l.observe(slow, now.Add(time.Millisecond))
	if l.limit != laneMaxTxns/2 {
		t.Fatalf("a slow one sent before the cut cut again: limit %v", l.limit)
	}
	for range 10 {
		now = now.Add(slow + time.Millisecond)
		l.observe(slow, now)
	}
	if l.limit != laneMinTxns {
		t.Fatalf("after many slow rounds: limit %v, want the floor %d", l.limit, laneMinTxns)
	}
	rounds := 0
	for l.limit < laneMaxTxns {
		for range int(l.limit) {
			l.observe(laneTarget/2, now)
		}
		rounds++
		if rounds > 2*laneMaxTxns {
			t.Fatalf("fast transactions: limit %v after %d rounds", l.limit, rounds)
		}
	}
	if rounds < laneMaxTxns-laneMinTxns-2 {
		t.Fatalf("the limit went from %d to %d in %d rounds: more than one a round", laneMinTxns, laneMaxTxns, rounds)
	}
	l.observe(laneTarget/2, now)
	if l.limit != laneMaxTxns {
		t.Fatalf("limit %v over the ceiling %d", l.limit, laneMaxTxns)
	}
}
