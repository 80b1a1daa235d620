package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"

	"github.com/berth-dev/berth/internal/promdefer"
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
	// compactionBudget is the least history, in bytes of keys and values
	// written, kept by default before the retention has passed (see
	// history): a quarter of etcd's quota, so that no churn within the
	// retention runs the database into etcd's NOSPACE alarm, which stops
	// every write until an operator steps in. It is a ceiling, not a
	// setting that pays: compacting sooner costs etcd's compaction pauses
	// in the middle of the burst. At 300,000 instances, a budget of
	// 256 MiB (or the live data's size) kept the database under 1,000 MiB
	// instead of 1,450 through a scale to zero and back, and the server's
	// peak RSS 0.3 to 0.6 GB lower, but made the apply a fifth slower and
	// the scale back up twice as slow (p99 of writes 1.2 s).
	compactionBudget = quotaBackendBytes / 4
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

// liveRewrites is how many times the live data's size the budget is (see
// History an embedded cluster keeps).
const liveRewrites = 2

// deletedFloor is the fewest deleted keys that make a compaction early
// (see History an embedded cluster keeps): about 20 MiB of etcd's index.
const deletedFloor = 1 << 16

// History an embedded cluster keeps. etcd's own periodic compactor keeps
// a time's worth of revisions whatever they weigh: at 300,000 instances
// a scale to zero and back within its five minutes kept every revision
// of both, and the database grew from 660 MiB to 1,450 MiB, all of it
// mapped into the server's memory, with the index of every deleted and
// re-created key in its heap. Berth compacts instead (compactHistory):
// to the revision of CompactionRetention ago, as etcd's compactor would
// (once a retention, so five to ten minutes are kept), and earlier when
// what was written since the last compaction is over the budget, the
// larger of CompactionBudget and twice the live data's estimated size:
// then to the oldest revision, sampled every retention/10, with no more
// than that written since. What was written counts the live values
// too, so twice the live data is about one rewrite of it kept besides:
// it costs no more memory than the data itself, and a watcher further
// behind lists again, which reads as much. Once the live data's size
// only, a first apply (each instance written at its creation and again
// at its start, 1.4 times the live data) compacted itself as it went,
// and etcd's compaction pauses made it a fifth slower. At least one
// sampling interval is always kept. A watcher that falls behind what is kept gets etcd's
// compacted error and lists again, as after a five-minute compaction.
//
// Deleted keys also make a compaction early, whatever their bytes: etcd
// keeps each in its index, in the heap (its key, its revisions and a
// tombstone, about 300 B), until a compaction passes its deletion. A
// scale of 300,000 instances to zero left 600,000 of them (each
// instance's key and its assignment's), 95 MiB of tombstones alone, and
// the Go heap's limit grows by twice what is live. Once more keys were
// deleted since the last compaction than are live (and at least
// deletedFloor), the history is compacted to the sample before the
// latest, an interval ago.
//
// The weight is etcd's own count of the bytes put (exact, and the same
// on every member) rather than the database's size in use, which a
// compaction in progress or a defragmentation moves both ways. Each
// compaction reads every revision up to its own and indexes the live
// ones (etcd's compaction hash): it comes one interval (30 s) apart at
// most, and etcd applies it in batches of its default size, pausing
// between them, so that writes go on.

// historySample is what a member had applied at one time: its revision
// and etcd's counts of the puts and of their bytes (keys and values) it
// applied. Every member applies every write, so one member's counts are
// the whole cluster's writes.
type historySample struct {
	at          time.Time
	rev         int64
	bytes, puts float64
	dels        float64 // keys deleted
}

// history decides the compactions from the samples: pure, the time is
// the samples'.
type history struct {
	retention time.Duration
	floor     float64
	// delFloor is the fewest deleted keys that compact early.
	delFloor float64
	// samples are oldest first, all after base.
	samples []historySample
	// base is the sample of the revision compacted to last, or the first
	// one: the history kept is what was written since.
	base historySample
	// last is when this member last compacted, or its first sample;
	// compacted is the revision it compacted to.
	last      time.Time
	compacted int64
}

// compaction is what history decides at a sample.
type compaction struct {
	rev int64 // to compact to; 0: none
	// early is true when the budget binds: rev is newer than the
	// retention asks.
	early bool
	// kept is the history's bytes before the compaction, budget the most
	// that may be kept; deleted the keys deleted in it.
	kept, budget, deleted float64
}

func (h *history) add(s historySample) {
	if h.last.IsZero() {
		h.base, h.last = s, s.at
	}
	h.samples = append(h.samples, s)
	// The time's target is the newest sample at least retention old:
	// those before it are of no more use.
	old := s.at.Add(-h.retention)
	for len(h.samples) > 1 && !h.samples[1].at.After(old) {
		h.samples = h.samples[1:]
	}
}

// budget is the most written since base kept before the retention has
// passed: the floor, or twice the live data's size when larger, the
// live data estimated as etcd's count of keys times the mean size of
// the puts since base.
func (h *history) budget(keys float64) float64 {
	n := len(h.samples)
	if n == 0 {
		return h.floor
	}
	cur := h.samples[n-1]
	puts := cur.puts - h.base.puts
	if puts <= 0 {
		return h.floor
	}
	return max(h.floor, liveRewrites*keys*(cur.bytes-h.base.bytes)/puts)
}

// target is the compaction due at the latest sample, with keys live.
func (h *history) target(keys float64) compaction {
	n := len(h.samples)
	if n == 0 {
		return compaction{}
	}
	cur := h.samples[n-1]
	c := compaction{kept: cur.bytes - h.base.bytes, budget: h.budget(keys), deleted: cur.dels - h.base.dels}
	var byTime, bySize int64
	if cur.at.Sub(h.last) >= h.retention {
		for _, s := range h.samples {
			if !s.at.After(cur.at.Add(-h.retention)) {
				byTime = s.rev
			}
		}
	}
	if c.kept > c.budget && n >= 2 {
		// The latest sample is now: the one before it keeps at least an
		// interval for the watchers just behind.
		bySize = h.samples[n-2].rev
		for _, s := range h.samples[:n-1] {
			if cur.bytes-s.bytes <= c.budget {
				bySize = s.rev
				break
			}
		}
	}
	if c.deleted > max(h.delFloor, keys) && n >= 2 {
		bySize = max(bySize, h.samples[n-2].rev)
	}
	c.rev, c.early = max(byTime, bySize), bySize > byTime
	if c.rev <= h.compacted {
		return compaction{kept: c.kept, budget: c.budget, deleted: c.deleted}
	}
	return c
}

// compactedTo notes a compaction to rev, made at time at (by this
// member or, seen at at, by another).
func (h *history) compactedTo(rev int64, at time.Time) {
	i := 0
	for i < len(h.samples)-1 && h.samples[i].rev < rev {
		i++
	}
	if len(h.samples) > 0 {
		h.base, h.samples = h.samples[i], h.samples[i+1:]
	}
	h.last, h.compacted = at, rev
}

// HistoryStats is what an embedded member's compactions keep.
type HistoryStats struct {
	// Bytes is the history written since the last compaction (keys and
	// values), Budget the most kept before the retention has passed.
	Bytes, Budget int64
	// Early counts the compactions the budget or the deleted keys made
	// before the retention.
	Early int64
	// Deleted is the keys deleted since the last compaction.
	Deleted int64
}

// historyStats is the latest HistoryStats, shared with the metrics.
type historyStats struct {
	mu      sync.Mutex
	st      HistoryStats
	samples int // taken so far
}

// History is what the embedded member's history weighs (zero with an
// external cluster, or before the first sample).
func (s *Store) History() HistoryStats {
	s.hist.mu.Lock()
	defer s.hist.mu.Unlock()
	return s.hist.st
}

// compactHistory samples the member's writes every interval and, on
// the leader alone, compacts what history decides (etcd's compactor
// also pauses on followers: a compaction is a request every member
// applies). etcd compacts the database in batches with pauses between
// them (its CompactionBatchLimit and CompactionSleepInterval defaults),
// so writes go on meanwhile; the compaction is not waited for, as etcd's
// compactor does not.
func (s *Store) compactHistory(ctx context.Context, interval, retention time.Duration, floor, delFloor int64) {
	h := &history{retention: retention, floor: float64(floor), delFloor: float64(delFloor)}
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		sm, keys, compacted, err := s.sampleHistory()
		if err != nil && !warned {
			// Without etcd's counts, the retention alone bounds history.
			s.log.Warn("etcd history: no write counts, compacting by time alone", "err", err)
			warned = true
		}
		h.add(sm)
		if compacted > h.compacted {
			// Another member compacted (a former leader), or one before
			// this start: what is kept counts from there, and this member
			// as leader would compact next a retention later, as it would.
			h.compactedTo(compacted, sm.at)
		}
		if s.etcd.Server.Leader() == s.etcd.Server.MemberID() {
			s.compactTo(ctx, h, h.target(keys))
		}
		s.hist.mu.Lock()
		s.hist.st.Bytes, s.hist.st.Budget = int64(sm.bytes-h.base.bytes), int64(h.budget(keys))
		s.hist.st.Deleted = int64(sm.dels - h.base.dels)
		s.hist.samples++
		s.hist.mu.Unlock()
	}
}

// compactTo makes compaction c, if any, and notes it in h.
func (s *Store) compactTo(ctx context.Context, h *history, c compaction) {
	if c.rev == 0 {
		return
	}
	_, err := s.client.Compact(ctx, c.rev)
	if err != nil && !errors.Is(err, rpctypes.ErrCompacted) && rpctypes.Error(err) != rpctypes.ErrCompacted {
		if ctx.Err() == nil {
			s.log.Warn("etcd compaction", "revision", c.rev, "err", err)
		}
		return
	}
	h.compactedTo(c.rev, h.samples[len(h.samples)-1].at)
	if c.early {
		s.hist.mu.Lock()
		s.hist.st.Early++
		s.hist.mu.Unlock()
		s.log.Info("etcd history compacted before its retention", "revision", c.rev,
			"history_mib", int64(c.kept)>>20, "budget_mib", int64(c.budget)>>20, "deleted_keys", int64(c.deleted))
	}
}

// Names of etcd's counts in Prometheus's default registry, the only
// place it keeps them.
const (
	etcdPutBytes = "etcd_debugging_mvcc_total_put_size_in_bytes"
	etcdPuts     = "etcd_mvcc_put_total"
	etcdDeletes  = "etcd_mvcc_delete_total"
	etcdKeys     = "etcd_debugging_mvcc_keys_total"
)

// sampleHistory is the member's sample now, its count of live keys and
// the revision compacted to. etcd's counts belong to the process: with
// several members in one process (tests), each counts all of theirs,
// which makes the history and the live data look as many times larger
// and compacts no later; the compacted revision is the cluster's.
func (s *Store) sampleHistory() (sm historySample, keys float64, compacted int64, err error) {
	kv := s.etcd.Server.KV()
	// The compacted revision is this member's own: etcd's gauge of it is
	// the process's, the last any member in it compacted to (a test's
	// several clusters), and one ahead of this cluster stopped its
	// compactions.
	sm, compacted = historySample{at: time.Now(), rev: kv.Rev()}, kv.FirstRev()
	promdefer.Release() // etcd's counts are registered there
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil && len(mfs) == 0 {
		return sm, 0, 0, fmt.Errorf("etcd's metrics: %w", err)
	}
	found := 0
	for _, mf := range mfs {
		if len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		switch mf.GetName() {
		case etcdPutBytes:
			sm.bytes, found = m.GetGauge().GetValue(), found+1
		case etcdPuts:
			sm.puts, found = m.GetCounter().GetValue(), found+1
		case etcdDeletes:
			sm.dels, found = m.GetCounter().GetValue(), found+1
		case etcdKeys:
			keys, found = m.GetGauge().GetValue(), found+1
		}
	}
	if found != 4 {
		return sm, 0, compacted, fmt.Errorf("etcd's metrics: %s, %s, %s or %s missing", etcdPutBytes, etcdPuts, etcdDeletes, etcdKeys)
	}
	return sm, keys, compacted, nil
}
