package store_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/internal/store"
)

// An embedded member keeps CompactionRetention of history, and gives its
// free pages back once they are most of its database: after megabytes
// written and deleted again (a scale up and down), the file shrinks to
// what is in use, without anyone asking.
func TestHistoryCompactedAndDefragmented(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s, err := store.Open(ctx, store.Config{DataDir: t.TempDir(),
		CompactionRetention: time.Second, DefragInterval: 100 * time.Millisecond, DefragMinFree: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	value := strings.Repeat("x", 256<<10)
	var first int64
	for i := range 64 {
		r, err := c.Put(ctx, fmt.Sprintf("/berth/maintaintest/%d", i), value)
		if err != nil {
			t.Fatal(err)
		}
		if first == 0 {
			first = r.Header.Revision
		}
	}
	// A lone member commits its database every few seconds.
	var written int64
	deadline := time.Now().Add(30 * time.Second)
	for written < 16<<20 {
		st, err := c.Status(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		written = st.DbSize
		if time.Now().After(deadline) {
			t.Fatalf("database of %d bytes after 16 MiB written, want more", written)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Delete(ctx, "/berth/maintaintest/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}

	// The compactor and the defragmentation both wait their turn for
	// CPU on a loaded machine: 30 s was once not enough in CI.
	deadline = time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		// bbolt counts the pages a compaction frees only once later
		// transactions have begun, and etcd's backend begins one only
		// after a write: a member that takes none reports them in use
		// for ever (this test failed whenever etcd's own storage-version
		// writes came before the compaction). A cluster's statuses and
		// events are such writes; here, a small key every second.
		if i%10 == 0 {
			if _, err := c.Put(ctx, "/berth/maintaintest-live", strconv.Itoa(i)); err != nil {
				t.Fatal(err)
			}
		}
		st, err := c.Status(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if st.DbSize < 4<<20 {
			t.Logf("database %d -> %d bytes (%d in use)", written, st.DbSize, st.DbSizeInUse)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("database still %d bytes (%d in use) after its history was deleted, want under 4 MiB", st.DbSize, st.DbSizeInUse)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := c.Get(ctx, "/berth/maintaintest/0", clientv3.WithRev(first)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("read at revision %d, beyond the retention: %v, want it compacted", first, err)
	}
}
