package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// historyAt adds a sample of rev at t seconds after t0, with mib MiB put
// in as many puts, and returns h's compaction then with keys live.
func historyAt(h *history, t0 time.Time, sec int, rev int64, mib float64, keys float64) compaction {
	h.add(historySample{at: t0.Add(time.Duration(sec) * time.Second), rev: rev, bytes: mib * (1 << 20), puts: mib})
	return h.target(keys)
}

// Light writes keep the retention's history: the first compaction comes
// once it has passed, to the revision of a retention ago, and the next a
// retention later.
func TestHistoryKeepsRetentionUnderBudget(t *testing.T) {
	h := &history{retention: 5 * time.Minute, floor: 256 << 20}
	t0 := time.Now()
	for i := range 10 {
		if c := historyAt(h, t0, 30*i, int64(100+i), float64(i), 1); c.rev != 0 {
			t.Fatalf("compaction at %ds: %+v, want none before the retention", 30*i, c)
		}
	}
	c := historyAt(h, t0, 300, 110, 10, 1)
	if c.rev != 100 || c.early {
		t.Fatalf("compaction at 300s: %+v, want to revision 100 (300s ago), not early", c)
	}
	h.compactedTo(c.rev, t0.Add(300*time.Second))
	for i := 11; i < 20; i++ {
		if c := historyAt(h, t0, 30*i, int64(100+i), float64(i), 1); c.rev != 0 {
			t.Fatalf("compaction at %ds: %+v, want none a retention after the last", 30*i, c)
		}
	}
	if c := historyAt(h, t0, 600, 120, 20, 1); c.rev != 110 || c.early {
		t.Fatalf("compaction at 600s: %+v, want to revision 110 (300s ago)", c)
	}
}

// Heavy writes are compacted before the retention has passed, to the
// oldest sample with no more than the budget written since; writes of
// more than the budget in one interval keep that interval.
func TestHistoryBoundedByBudget(t *testing.T) {
	h := &history{retention: 5 * time.Minute, floor: 256 << 20}
	t0 := time.Now()
	var c compaction
	for i := range 3 {
		c = historyAt(h, t0, 30*i, int64(100+i), float64(100*i), 1)
		if c.rev != 0 {
			t.Fatalf("compaction at %ds with %d MiB written: %+v, want none within the budget", 30*i, 100*i, c)
		}
	}
	// 400 MiB since the first sample: the one of 200 MiB has 200 since.
	c = historyAt(h, t0, 90, 103, 400, 1)
	if c.rev != 102 || !c.early || c.kept != 400<<20 || c.budget != 256<<20 {
		t.Fatalf("compaction with 400 MiB written: %+v, want to revision 102, early, 400 MiB kept of 256", c)
	}
	h.compactedTo(c.rev, t0.Add(90*time.Second))
	if c = historyAt(h, t0, 120, 104, 450, 1); c.rev != 0 {
		t.Fatalf("compaction with 250 MiB since the last: %+v, want none", c)
	}
	if c = historyAt(h, t0, 150, 105, 1450, 1); c.rev != 104 || !c.early {
		t.Fatalf("compaction with 1 GiB in one interval: %+v, want to revision 104, the interval before", c)
	}
}

// The budget is twice the live data's size when larger than the floor:
// many keys of the size written keep as much history again.
func TestHistoryBudgetFollowsLiveData(t *testing.T) {
	h := &history{retention: 5 * time.Minute, floor: 1 << 20}
	t0 := time.Now()
	historyAt(h, t0, 0, 100, 0, 0)
	// 30 MiB in 30 puts: 1 MiB each, and 20 keys live make 20 MiB; as
	// a first apply does, more is written than is live.
	if c := historyAt(h, t0, 30, 101, 30, 20); c.rev != 0 || c.budget != 40<<20 {
		t.Fatalf("30 MiB written, 20 MiB live: %+v, want no compaction, a budget of 40 MiB", c)
	}
	if c := historyAt(h, t0, 30, 102, 50, 20); c.rev != 101 {
		t.Fatalf("50 MiB written, 20 MiB live: %+v, want to revision 101", c)
	}
}

// More keys deleted since the last compaction than are live, and at
// least the floor, compact early to the sample before the latest,
// whatever their bytes: etcd's index keeps each deleted key until then.
func TestHistoryCompactedOverDeletedKeys(t *testing.T) {
	h := &history{retention: 5 * time.Minute, floor: 256 << 20, delFloor: 1000}
	t0 := time.Now()
	at := func(sec int, rev int64, dels, keys float64) compaction {
		h.add(historySample{at: t0.Add(time.Duration(sec) * time.Second), rev: rev, bytes: 1 << 20, puts: 1, dels: dels})
		return h.target(keys)
	}
	at(0, 100, 0, 10)
	if c := at(30, 200, 900, 10); c.rev != 0 || c.deleted != 900 {
		t.Fatalf("900 keys deleted, 10 live: %+v, want none under the floor of 1,000", c)
	}
	if c := at(60, 300, 4000, 5000); c.rev != 0 {
		t.Fatalf("4,000 keys deleted, 5,000 live: %+v, want no compaction", c)
	}
	c := at(90, 400, 6000, 5000)
	if c.rev != 300 || !c.early || c.deleted != 6000 {
		t.Fatalf("6,000 keys deleted, 5,000 live: %+v, want to revision 300 (the sample before), early", c)
	}
	// Those deleted after revision 300 are still kept, and count.
	h.compactedTo(c.rev, t0.Add(90*time.Second))
	if c := at(120, 500, 6500, 100); c.rev != 400 || c.deleted != 2500 {
		t.Fatalf("2,500 keys deleted since revision 300, 100 live: %+v, want to revision 400", c)
	}
	h.compactedTo(400, t0.Add(120*time.Second))
	if c := at(150, 600, 6600, 100); c.rev != 0 {
		t.Fatalf("600 keys deleted since revision 400: %+v, want none", c)
	}
	if c := at(180, 700, 8000, 100); c.rev != 600 || !c.early {
		t.Fatalf("2,000 keys deleted since revision 400, 100 live: %+v, want to revision 600", c)
	}
}

// Another member's compaction (a former leader's) counts as this one's:
// the history kept counts from there, and the next compaction by time
// comes a retention later.
func TestHistoryFollowsOthersCompaction(t *testing.T) {
	h := &history{retention: 5 * time.Minute, floor: 256 << 20}
	t0 := time.Now()
	for i := range 12 {
		historyAt(h, t0, 30*i, int64(100+10*i), float64(i), 1)
	}
	h.compactedTo(155, t0.Add(330*time.Second)) // between two samples
	if h.base.rev != 160 || h.compacted != 155 {
		t.Fatalf("after another's compaction to 155: base %d, compacted %d, want 160 and 155", h.base.rev, h.compacted)
	}
	for i := 12; i < 21; i++ {
		if c := historyAt(h, t0, 30*i, int64(100+10*i), float64(i), 1); c.rev != 0 {
			t.Fatalf("compaction at %ds: %+v, want none within a retention of the last", 30*i, c)
		}
	}
	if c := historyAt(h, t0, 630, 310, 21, 1); c.rev != 210 || c.kept != 15<<20 {
		t.Fatalf("compaction at 630s: %+v, want to revision 210 (300s ago), 15 MiB kept", c)
	}
}

// openHistoryStore is a lone member keeping an hour of history, or what
// budget allows, sampled every 100 ms.
func openHistoryStore(t *testing.T, budget int64) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), CompactionRetention: time.Hour,
		CompactionBudget: budget, compactInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// waitSamples waits until the compactor of s has sampled n times.
func waitSamples(t *testing.T, s *Store, n int) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.historySamples() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d samples of the history in a minute, want %d", s.historySamples(), n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *Store) historySamples() int {
	s.hist.mu.Lock()
	defer s.hist.mu.Unlock()
	return s.hist.samples
}

// putRound writes n keys of size bytes each, the value telling the round,
// and returns the revision of its first write.
func putRound(ctx context.Context, t *testing.T, c *clientv3.Client, round, n, size int) int64 {
	t.Helper()
	var first int64
	for i := range n {
		v := fmt.Sprintf("%d:", round) + strings.Repeat("x", size)
		r, err := c.Put(ctx, fmt.Sprintf("/berth/histtest/%d", i), v)
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = r.Header.Revision
		}
	}
	return first
}

// Writes beyond the budget are compacted long before the retention (an
// hour) has passed, and what is live is intact.
func TestHistoryCompactedOverBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := openHistoryStore(t, 1<<20)
	c := s.Client()
	// 16 keys of 64 KiB: 1 MiB live, so a budget of about 2 MiB.
	first := putRound(ctx, t, c, 0, 16, 64<<10)
	round := 0
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := c.Get(ctx, "/berth/histtest/0", clientv3.WithRev(first))
		if errors.Is(err, rpctypes.ErrCompacted) || rpctypes.Error(err) == rpctypes.ErrCompacted {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still kept after %d MiB written over a budget of about 2 MiB", first, round+1)
		}
		round++
		putRound(ctx, t, c, round, 16, 64<<10)
	}
	r, err := c.Get(ctx, "/berth/histtest/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 16 {
		t.Fatalf("%d keys after the compaction, want 16", len(r.Kvs))
	}
	for _, kv := range r.Kvs {
		if !strings.HasPrefix(string(kv.Value), fmt.Sprintf("%d:", round)) || len(kv.Value) < 64<<10 {
			t.Errorf("%s after the compaction: %.10q (%d bytes), want round %d's value", kv.Key, kv.Value, len(kv.Value), round)
		}
	}
	if st := s.History(); st.Early == 0 {
		t.Errorf("history %+v after a compaction before the retention, want it counted early", st)
	}
}

// Writes within the budget keep their history: no revision is compacted
// before the retention has passed, however many times the compactor
// looked.
func TestHistoryKeptUnderBudget(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s := openHistoryStore(t, 256<<20)
	c := s.Client()
	waitSamples(t, s, 1) // the history counts from the first
	first := putRound(ctx, t, c, 0, 16, 64<<10)
	for round := 1; round < 4; round++ {
		putRound(ctx, t, c, round, 16, 64<<10)
	}
	// Twenty samples after the writes, each a chance to compact.
	waitSamples(t, s, s.historySamples()+20)
	r, err := c.Get(ctx, "/berth/histtest/0", clientv3.WithRev(first))
	if err != nil {
		t.Fatalf("read at revision %d, 4 MiB ago within a budget of 256 MiB: %v, want it kept", first, err)
	}
	if len(r.Kvs) != 1 || !strings.HasPrefix(string(r.Kvs[0].Value), "0:") {
		t.Fatalf("read at revision %d: %v, want round 0's value", first, r.Kvs)
	}
	if st := s.History(); st.Bytes < 4<<20 || st.Early != 0 {
		t.Errorf("history %+v after 4 MiB written within the budget, want at least 4 MiB kept, no early compaction", st)
	}
}

// Keys deleted beyond those live are compacted long before the
// retention (an hour), whatever the budget of bytes, and the live keys
// are intact.
func TestHistoryCompactedOverDeletedKeysOnEtcd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), CompactionRetention: time.Hour,
		CompactionBudget: 1 << 30, compactInterval: 100 * time.Millisecond, deletedFloor: 100})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	c := s.Client()
	for i := range 20 {
		if _, err := c.Put(ctx, fmt.Sprintf("/berth/histlive/%d", i), "live"); err != nil {
			t.Fatal(err)
		}
	}
	// etcd's count of live keys is the process's, other tests' stores
	// included: rounds of 300 deletes go on until they outnumber it.
	first := putRound(ctx, t, c, 0, 300, 16)
	compacted := func() bool {
		_, err := c.Get(ctx, "/berth/histtest/0", clientv3.WithRev(first))
		return errors.Is(err, rpctypes.ErrCompacted) || rpctypes.Error(err) == rpctypes.ErrCompacted
	}
	deadline := time.Now().Add(time.Minute)
	for round := 1; !compacted(); round++ {
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still kept after %d rounds of 300 deletes", first, round)
		}
		if round > 1 {
			putRound(ctx, t, c, round, 300, 16)
		}
		for i := range 300 {
			if _, err := c.Delete(ctx, fmt.Sprintf("/berth/histtest/%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		for wait := time.Now(); !compacted() && time.Since(wait) < time.Second; {
			time.Sleep(50 * time.Millisecond)
		}
	}
	r, err := c.Get(ctx, "/berth/histlive/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Kvs) != 20 {
		t.Fatalf("%d live keys after the compaction, want 20", len(r.Kvs))
	}
	waitFor(t, "the early compaction counted", func() bool { return s.History().Early > 0 })
}

// In a cluster the leader alone compacts; the others count the same
// writes, which every member applies.
func TestHistoryCompactedByLeaderAlone(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := openClusterWith(t, 3, Config{CompactionRetention: time.Hour,
		CompactionBudget: 1 << 20, compactInterval: 100 * time.Millisecond})
	leader := func() (uint64, uint64) {
		e := c.stores[0].etcd.Server
		return uint64(e.Leader()), e.Term()
	}
	lead, term := leader()
	cl := c.stores[0].Client()
	first := putRound(ctx, t, cl, 0, 16, 64<<10)
	deadline := time.Now().Add(2 * time.Minute)
	for round := 1; ; round++ {
		_, err := cl.Get(ctx, "/berth/histtest/0", clientv3.WithRev(first))
		if errors.Is(err, rpctypes.ErrCompacted) || rpctypes.Error(err) == rpctypes.ErrCompacted {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("revision %d still kept after %d MiB written over a budget of about 2 MiB", first, round)
		}
		putRound(ctx, t, cl, round, 16, 64<<10)
	}
	if l, tm := leader(); l != lead || tm != term {
		t.Skipf("the leader changed during the writes (%x at term %d, then %x at %d): which member compacted proves nothing", lead, term, l, tm)
	}
	// The leader counts its compaction once etcd answered it, which may
	// be after the read above saw the revision gone.
	for _, s := range c.stores {
		if uint64(s.etcd.Server.MemberID()) == lead {
			waitFor(t, "the leader's count of its early compaction", func() bool { return s.History().Early > 0 })
		}
	}
	for i, s := range c.stores {
		isLeader := uint64(s.etcd.Server.MemberID()) == lead
		if early := s.History().Early; (early > 0) != isLeader {
			t.Errorf("member %d (leader: %v) made %d compactions, want some on the leader alone", i, isLeader, early)
		}
	}
}
