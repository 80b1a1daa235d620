package store

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
)

// A setting is written with an optional revision precondition, and a
// watcher sees its value at once and every change after.
func TestSettings(t *testing.T) {
	s := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if v, rev, err := s.Setting(ctx, "registry"); v != nil || rev != 0 || err != nil {
		t.Fatalf("unset: %q, %d, %v", v, rev, err)
	}
	seen := make(chan string, 10)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go s.WatchSetting(wctx, "registry", func(v []byte, _ int64) { seen <- string(v) })
	next := func(want string) {
		t.Helper()
		select {
		case got := <-seen:
			if got != want {
				t.Fatalf("watcher saw %q, want %q", got, want)
			}
		case <-ctx.Done():
			t.Fatalf("watcher saw nothing, want %q", want)
		}
	}
	next("")
	rev, err := s.PutSetting(ctx, "registry", []byte("one"), 0)
	if err != nil {
		t.Fatal(err)
	}
	next("one")
	if _, err := s.PutSetting(ctx, "registry", []byte("stale"), rev-1); !errdefs.IsConflict(err) {
		t.Fatalf("a stale revision: %v, want a conflict", err)
	}
	if _, err := s.PutSetting(ctx, "registry", []byte("two"), rev); err != nil {
		t.Fatal(err)
	}
	next("two")
	if v, _, _ := s.Setting(ctx, "registry"); string(v) != "two" {
		t.Fatalf("read back %q, want two", v)
	}
	if seeded, err := s.SeedSetting(ctx, "registry", []byte("seed")); seeded || err != nil {
		t.Fatalf("seeding a setting that was written: %t, %v; want nothing done", seeded, err)
	}
	if seeded, err := s.SeedSetting(ctx, "other", []byte("seed")); !seeded || err != nil {
		t.Fatalf("seeding a new setting: %t, %v", seeded, err)
	}
	if v, _, _ := s.Setting(ctx, "other"); string(v) != "seed" {
		t.Fatalf("seeded %q, want seed", v)
	}
}
