package store

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The pages of the embedded member's database that reads mapped into the
// server are unmapped, and the data reads back the same after.
func TestDBPagesReleased(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Released only when the test says.
	s, err := Open(ctx, Config{DataDir: t.TempDir(), dbPagesInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	const n, size = 128, 256 << 10 // 32 MiB
	value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, size) }
	for i := range n {
		if _, err := c.Put(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i), string(value(i))); err != nil {
			t.Fatal(err)
		}
	}
	readAll := func() {
		t.Helper()
		for i := range n {
			r, err := c.Get(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i))
			if err != nil {
				t.Fatal(err)
			}
			if len(r.Kvs) != 1 || !bytes.Equal(r.Kvs[0].Value, value(i)) {
				t.Fatalf("key %d read back wrong (%d values)", i, len(r.Kvs))
			}
		}
	}
	path := s.etcd.Server.Cfg.BackendPath()
	mapped := func() int64 { return mappedOf(t, path) }
	// Reads go through the map once the member has committed the writes
	// to its file (every few seconds when alone).
	deadline := time.Now().Add(time.Minute)
	for mapped() < n*size/2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of %s mapped after reading it all for a minute, want at least %d KiB", mapped()>>10, path, n*size/2>>10)
		}
		readAll()
	}
	before := mapped()
	if _, err := s.releaseDBPages(1 << 40); err != nil {
		t.Fatal(err)
	}
	if after := mapped(); after < before/2 {
		t.Fatalf("%d KiB mapped after a release under the threshold, want the %d KiB there were", after>>10, before>>10)
	}
	got, err := s.releaseDBPages(0)
	if err != nil || got < before {
		t.Fatalf("releaseDBPages(0) = %d, %v; want the files mapped (at least the database's %d KiB) and no error", got, err, before>>10)
	}
	if after := mapped(); after > 1<<20 {
		t.Fatalf("%d KiB of %s still mapped after the release, want under 1 MiB (was %d KiB)", after>>10, path, before>>10)
	}
	readAll()
	if mapped() < before/2 {
		t.Fatalf("reading it all again mapped %d KiB, want the pages back (%d KiB)", mapped()>>10, before>>10)
	}
}

// A member's mapped pages are released every interval by themselves once
// the process maps more than dbPagesMinMapped of files.
func TestDBPagesReleasedEveryInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), dbPagesInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	const n, size = 320, 256 << 10 // 80 MiB, over dbPagesMinMapped alone
	value := strings.Repeat("v", size)
	for i := range n {
		if _, err := c.Put(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	path := s.etcd.Server.Cfg.BackendPath()
	deadline := time.Now().Add(time.Minute)
	for mappedOf(t, path) < dbPagesMinMapped {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of %s mapped after reading it all for a minute, want over %d KiB", mappedOf(t, path)>>10, path, dbPagesMinMapped>>10)
		}
		for i := range n {
			if _, err := c.Get(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for mappedOf(t, path) >= 8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of %s still mapped 30 s later, want it released every 2 s", mappedOf(t, path)>>10, path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mappedOf is how many bytes of the file at path are resident in this
// process's one map of it, from /proc/self/smaps.
func mappedOf(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rss []int64
	in := false // within the entry of a map of path
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // an entry's first line
			if in = strings.HasSuffix(line, " "+path); in {
				rss = append(rss, 0)
			}
			continue
		}
		if in && fields[0] == "Rss:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			rss[len(rss)-1] = kb << 10
		}
	}
	if err := sc.Err(); err != nil || len(rss) != 1 {
		t.Fatalf("maps of %s: %v, %v; want one", path, rss, err)
	}
	return rss[0]
}
