package runtime_test

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/runtime"
	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

// TestMigrationStreamUpper: a writable layer sent with WriteUpper comes
// out of ReadMigration as the final dump's rootfs-diff, with its files,
// links, owners, modes, whiteouts and opaque directories.
func TestMigrationStreamUpper(t *testing.T) {
	runtimetest.RequireRoot(t) // whiteouts are devices; opaque marks trusted xattrs
	upper := t.TempDir()
	final := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(final, "core-1.img"), []byte("core"), 0o600))
	must(os.MkdirAll(filepath.Join(upper, "etc", "app"), 0o750))
	must(os.WriteFile(filepath.Join(upper, "etc", "app", "conf"), []byte("x=1\n"), 0o640))
	must(os.Chown(filepath.Join(upper, "etc", "app", "conf"), 1000, 1001))
	must(os.Symlink("/etc/app/conf", filepath.Join(upper, "conf")))
	must(unix.Mknod(filepath.Join(upper, "etc", "gone"), unix.S_IFCHR, 0))
	must(unix.Lsetxattr(filepath.Join(upper, "etc", "app"), "trusted.overlay.opaque", []byte("y"), 0))

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if _, err := runtime.WriteImages(tw, final, runtime.MigrationFinal); err != nil {
		t.Fatal(err)
	}
	if _, err := runtime.WriteUpper(tw, upper); err != nil {
		t.Fatal(err)
	}
	must(tw.Close())
	got, err := runtime.ReadMigration(&buf, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	diff := filepath.Join(got, runtime.RootfsDiff)
	b, err := os.ReadFile(filepath.Join(diff, "etc", "app", "conf"))
	if err != nil || string(b) != "x=1\n" {
		t.Fatalf("conf: %q %v", b, err)
	}
	var st unix.Stat_t
	must(unix.Lstat(filepath.Join(diff, "etc", "app", "conf"), &st))
	if st.Uid != 1000 || st.Gid != 1001 || st.Mode&0o7777 != 0o640 {
		t.Errorf("conf: uid %d gid %d mode %o, want 1000 1001 640", st.Uid, st.Gid, st.Mode&0o7777)
	}
	if l, err := os.Readlink(filepath.Join(diff, "conf")); err != nil || l != "/etc/app/conf" {
		t.Errorf("link: %q %v", l, err)
	}
	must(unix.Lstat(filepath.Join(diff, "etc", "gone"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	v := make([]byte, 4)
	if n, err := unix.Lgetxattr(filepath.Join(diff, "etc", "app"), "trusted.overlay.opaque", v); err != nil || string(v[:n]) != "y" {
		t.Errorf("opaque mark: %q %v", v[:n], err)
	}
}

// TestMigrationStreamUpperEscape: an entry reaching through a link the
// stream made, or out of the layer, is refused and writes nothing there.
func TestMigrationStreamUpperEscape(t *testing.T) {
	outside := t.TempDir()
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"through a link", []tar.Header{
			{Name: "upper/a", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "upper/a/owned", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"dot-dot", []tar.Header{{Name: "upper/../owned", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"a device", []tar.Header{{Name: "upper/sda", Typeflag: tar.TypeBlock, Devmajor: 8}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			if err := tw.WriteHeader(&tar.Header{Name: "final/core-1.img", Typeflag: tar.TypeReg, Mode: 0o600}); err != nil {
				t.Fatal(err)
			}
			for _, h := range tc.entries {
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := runtime.ReadMigration(&buf, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), "migration stream") {
				t.Fatalf("ReadMigration: %v, want a refusal", err)
			}
			if _, err := os.Stat(filepath.Join(outside, "owned")); err == nil {
				t.Fatal("an entry was written outside the layer")
			}
		})
	}
}
