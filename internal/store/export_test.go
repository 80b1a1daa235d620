package store

import (
	"context"
	"time"
)

// HoldBulk takes n bytes of the bulk lane (its whole budget at most), as
// batches in flight would, until release is called.
func (s *Store) HoldBulk(ctx context.Context, n int64) (release func(), err error) {
	r, err := s.bulk.enter(ctx, n)
	if err != nil {
		return nil, err
	}
	return func() { r(0) }, nil
}

// SetBulkTarget sets the time in etcd over which the bulk lane lets fewer
// transactions in (laneTarget).
func (s *Store) SetBulkTarget(d time.Duration) {
	s.bulk.mu.Lock()
	defer s.bulk.mu.Unlock()
	s.bulk.target = d
}

// BulkLimit is how many transactions the bulk lane lets in at once now.
func (s *Store) BulkLimit() int {
	s.bulk.mu.Lock()
	defer s.bulk.mu.Unlock()
	return int(s.bulk.limit)
}

// BulkWaiting is how many transactions wait for the bulk lane.
func (s *Store) BulkWaiting() int { return int(s.bulk.waiting.Load()) }
