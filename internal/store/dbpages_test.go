package store

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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
	got, err := s.releaseDBPages(1 << 30)
	if err != nil || got < before/2 {
		t.Fatalf("releaseDBPages(1 GiB) = %d, %v; want what is mapped (%d KiB) and no error", got, err, before>>10)
	}
	if after := mapped(); after < before/2 {
		t.Fatalf("%d KiB mapped after a release under the threshold, want the %d KiB there were", after>>10, before>>10)
	}
	if _, err := s.releaseDBPages(0); err != nil {
		t.Fatal(err)
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
// there are more than dbPagesMinMapped of them.
func TestDBPagesReleasedEveryInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), dbPagesInterval: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := s.Client()
	const n, size = 192, 256 << 10 // 48 MiB, over dbPagesMinMapped
	value := strings.Repeat("v", size)
	for i := range n {
		if _, err := c.Put(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i), value); err != nil {
			t.Fatal(err)
		}
	}
	path := s.etcd.Server.Cfg.BackendPath()
	mapped := func() int64 { return mappedOf(t, path) }
	deadline := time.Now().Add(time.Minute)
	for mapped() < dbPagesMinMapped+8<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of %s mapped after reading it all for a minute, want over %d KiB", mapped()>>10, path, (dbPagesMinMapped+8<<20)>>10)
		}
		if _, err := c.Get(ctx, "/berth/dbpagestest/", clientv3.WithPrefix(), clientv3.WithKeysOnly()); err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if _, err := c.Get(ctx, fmt.Sprintf("/berth/dbpagestest/%d", i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for mapped() >= dbPagesMinMapped {
		if time.Now().After(deadline) {
			t.Fatalf("%d KiB of %s still mapped 30 s later, want it released every 2 s", mapped()>>10, path)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// mappedOf is how many bytes of the file at path are mapped into this
// process, in its one map of it.
func mappedOf(t *testing.T, path string) int64 {
	t.Helper()
	maps, err := fileMaps(path)
	if err != nil || len(maps) != 1 {
		t.Fatalf("maps of %s: %v, %v; want one", path, maps, err)
	}
	return maps[0].rss
}
