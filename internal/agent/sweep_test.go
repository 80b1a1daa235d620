package agent_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// TestAgentSweepsStaleMigrations: an agent starting removes the work
// directories a killed run left under .migrations, a mount left inside
// one included, without emptying what that mount shows.
func TestAgentSweepsStaleMigrations(t *testing.T) {
	runtimetest.RequireRoot(t)
	rootfs := runtimetest.BusyboxRootfs(t)
	stateDir := t.TempDir()
	cleanupAll(t, stateDir)
	stale := filepath.Join(stateDir, ".migrations", "in-uid-gone", "final")
	if err := os.MkdirAll(filepath.Join(stale, "rootfs"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(stale, "pages-1.img"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A restore killed midway leaves its bind of a volume mounted.
	volume := t.TempDir()
	if err := os.WriteFile(filepath.Join(volume, "data"), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(volume, filepath.Join(stale, "rootfs"), "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(filepath.Join(stale, "rootfs"), unix.MNT_DETACH) })

	f := start(t, rootfs, stateDir, newControlPlane())
	defer f.stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := os.Stat(filepath.Join(stateDir, ".migrations"))
		if errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the agent left .migrations in place (%v)", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if b, err := os.ReadFile(filepath.Join(volume, "data")); err != nil || string(b) != "keep" {
		t.Fatalf("the sweep reached through the mount: the volume's file holds %q (%v)", b, err)
	}
}
