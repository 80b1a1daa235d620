package runtime

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/testing/testenv"
)

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/var/lib/my\040dir/x`); got != "/var/lib/my dir/x" {
		t.Errorf("unescapeMountinfo: %q", got)
	}
}

// A work directory with a bind mount left inside it is removed, and the
// mounted directory keeps its files.
func TestRemoveTreeLeavesMountedFilesAlone(t *testing.T) {
	testenv.RequireRoot(t)
	kept := t.TempDir()
	if err := os.WriteFile(filepath.Join(kept, "data"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(t.TempDir(), "work dir")
	inner := filepath.Join(work, "criu.root", "vol")
	if err := os.MkdirAll(inner, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(kept, inner, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(inner, unix.MNT_DETACH) })
	if m, err := MountsUnder(work); err != nil || len(m) != 1 || m[0] != inner {
		t.Fatalf("MountsUnder(%s) = %q, %v; want [%s]", work, m, err, inner)
	}
	if err := RemoveTree(work); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(work); !os.IsNotExist(err) {
		t.Errorf("%s still there: %v", work, err)
	}
	if b, err := os.ReadFile(filepath.Join(kept, "data")); err != nil || string(b) != "keep" {
		t.Errorf("the mounted directory lost its file: %q, %v", b, err)
	}
}
