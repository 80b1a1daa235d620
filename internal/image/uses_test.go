package image

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestTornUseRecord: use records are written unsynced, so a host crash can
// leave one empty or cut short. Such a record is skipped by whatever reads
// the records, and released like any other.
func TestTornUseRecord(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	buildTiny(t, s, BuildOptions{Tag: "app:1"})
	if _, err := s.Prepare(ctx, "app:1", "live"); err != nil {
		t.Fatal(err)
	}
	torn := map[string]string{"empty": "", "cut": `{"container":"cut","ima`, "zeros": "\x00\x00\x00\x00"}
	for id, body := range torn {
		if err := os.WriteFile(s.usePath(id), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	users, err := s.Users(ctx, "app:1")
	if err != nil || !slices.Equal(users, []string{"live"}) {
		t.Fatalf("users = %v, %v; want [live]", users, err)
	}
	if err := s.Remove(ctx, "app:1", false); !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "live") {
		t.Fatalf("Remove while in use = %v, want ErrInUse naming live", err)
	}
	for id := range torn {
		if err := s.Release(ctx, id); err != nil {
			t.Fatalf("release %s: %v", id, err)
		}
		if _, err := os.Stat(s.usePath(id)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("record of %s kept after release: %v", id, err)
		}
	}
}

// TestLoadCacheCopies: the images load hands out share nothing with its
// cache, and the cache forgets images no longer indexed.
func TestLoadCacheCopies(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	buildTiny(t, s, BuildOptions{Tag: "app:1", Cmd: []string{"sh"}, Env: []string{"A=1"}, Labels: map[string]string{"k": "v"}})
	img, err := s.Resolve(ctx, "app:1")
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Clone(img.Config.Env)
	img.Config.Cmd[0], img.Config.Env[0], img.Config.Labels["k"], img.Layers[0].DiffID = "x", "x", "x", "x"
	again, err := s.Resolve(ctx, "app:1")
	if err != nil {
		t.Fatal(err)
	}
	if again.Config.Cmd[0] != "sh" || !slices.Equal(again.Config.Env, want) || again.Config.Labels["k"] != "v" || again.Layers[0].DiffID == "x" {
		t.Fatalf("a change to a loaded image reached the next load: %+v", again)
	}
	if err := s.Remove(ctx, "app:1", false); err != nil {
		t.Fatal(err)
	}
	if n := len(s.loaded); n != 0 {
		t.Errorf("%d images cached after the only one was removed", n)
	}
}
