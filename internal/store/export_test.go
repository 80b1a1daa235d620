package store

import "context"

// HoldBulk takes n bytes of the bulk lane (its whole budget at most), as
// batches in flight would, until release is called.
func (s *Store) HoldBulk(ctx context.Context, n int64) (release func(), err error) {
	return s.bulk.enter(ctx, n)
}

// BulkWaiting is how many transactions wait for the bulk lane.
func (s *Store) BulkWaiting() int { return int(s.bulk.waiting.Load()) }
