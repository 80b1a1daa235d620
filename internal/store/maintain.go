package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"
)

// History and free space of an embedded member. etcd keeps every
// revision of every key until it is compacted, and its database file
// never shrinks by itself: compaction frees pages for later writes, only
// a defragmentation gives them back. After a scale of 20,000 instances
// down and up again, one hour of history had doubled the database.
const (
	// compactionRetention is the history kept by default: long enough for
	// a watcher that lost its stream to resume from where it was (a
	// restarted agent, a slow list), as Kubernetes' five-minute compaction
	// allows; older, it lists again.
	compactionRetention = 5 * time.Minute
	// defragInterval is how often the free space is looked at by default.
	defragInterval = time.Minute
	// defragMinFree is the free space below which the database is left as
	// it is by default: reused by the next writes, not worth the pause.
	defragMinFree = 64 << 20
)

// maintain defragments the embedded member's database every interval
// when its free pages dominate: more than minFree and more than the
// pages in use. A defragmentation stops the member's reads and writes
// while it copies the pages in use to a new file, so it waits until
// they are the smaller part (after a scale down, a compaction of a busy
// hour): its pause is short then and gives back most of the file. Each
// look comes after interval and up to as long again at random: the
// members of a cluster see the same free space at about the same time,
// and defragmented at once they would stop the cluster.
func (s *Store) maintain(ctx context.Context, interval time.Duration, minFree int64) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval + rand.N(interval)):
		}
		if _, err := s.defragIfFree(ctx, minFree); err != nil && ctx.Err() == nil {
			s.log.Warn("etcd defragmentation", "err", err)
		}
	}
}

// defragIfFree defragments the member's database when more than minFree
// bytes and more than half of it are free, and reports whether it did.
func (s *Store) defragIfFree(ctx context.Context, minFree int64) (bool, error) {
	// Over the member's own socket: its in-process maintenance server
	// lacks what a defragmentation needs.
	c, ep := s.watchConn, s.watchConn.Endpoints()[0]
	st, err := c.Status(ctx, ep)
	if err != nil {
		return false, fmt.Errorf("etcd status: %w", wrapEtcd(err))
	}
	free := st.DbSize - st.DbSizeInUse
	if free <= minFree || free <= st.DbSizeInUse {
		return false, nil
	}
	t0 := time.Now()
	if _, err := c.Defragment(ctx, ep); err != nil {
		return false, fmt.Errorf("defragment etcd's database of %d MiB (%d MiB in use): %w", st.DbSize>>20, st.DbSizeInUse>>20, wrapEtcd(err))
	}
	s.log.Info("etcd database defragmented", "was_mib", st.DbSize>>20, "in_use_mib", st.DbSizeInUse>>20, "took", time.Since(t0).Round(time.Millisecond))
	return true, nil
}
