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

// TestDumpStreamGrowing: a memory image sent in pieces while it grows,
// then finished with the other images, comes out of ReadMigration whole;
// a piece that does not start where the file ends is refused.
func TestDumpStreamGrowing(t *testing.T) {
	dir := t.TempDir()
	pages := filepath.Join(dir, "pages-1.img")
	f, err := os.Create(pages)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	ds := runtime.NewDumpStream(dir, runtime.MigrationFinal)
	var want []byte
	for i := range 3 {
		chunk := bytes.Repeat([]byte{byte('a' + i)}, 5000+i)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
		want = append(want, chunk...)
		if n, err := ds.SendGrown(tw); err != nil || n != int64(len(chunk)) {
			t.Fatalf("piece %d: sent %d, %v; want %d", i, n, err, len(chunk))
		}
	}
	if _, err := f.Write([]byte("tail")); err != nil {
		t.Fatal(err)
	}
	want = append(want, "tail"...)
	if err := os.WriteFile(filepath.Join(dir, "core-1.img"), []byte("core"), 0o600); err != nil {
		t.Fatal(err)
	}
	if n, err := ds.Finish(tw); err != nil || n != 8 {
		t.Fatalf("finish: sent %d, %v; want 8 (the tail and core-1.img)", n, err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	stream := buf.Bytes()
	final, err := runtime.ReadMigration(bytes.NewReader(stream), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(final, "pages-1.img")); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("pages-1.img: %d bytes, %v; want %d bytes as written", len(got), err, len(want))
	}
	if got, err := os.ReadFile(filepath.Join(final, "core-1.img")); err != nil || string(got) != "core" {
		t.Fatalf("core-1.img: %q %v", got, err)
	}

	// A piece skipping ahead of what has come is refused.
	var bad bytes.Buffer
	tw = tar.NewWriter(&bad)
	if err := tw.WriteHeader(&tar.Header{Name: "final/pages-1.img", Mode: 0o600, Size: 1, Typeflag: tar.TypeReg,
		PAXRecords: map[string]string{"BERTH.offset": "4096"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := runtime.ReadMigration(&bad, t.TempDir()); err == nil || !strings.Contains(err.Error(), "offset") {
		t.Fatalf("ReadMigration of a piece at a gap: %v, want a refusal naming the offset", err)
	}
}

// TestUrgent: the goroutine that streams a migration runs at a raised
// priority (nice -10) until it is done, then at the one it had.
func TestUrgent(t *testing.T) {
	runtimetest.RequireRoot(t) // raising a priority takes CAP_SYS_NICE
	done := runtime.Urgent()
	tid := unix.Gettid()
	during, err := unix.Getpriority(unix.PRIO_PROCESS, tid)
	done()
	after, err2 := unix.Getpriority(unix.PRIO_PROCESS, tid)
	if err != nil || err2 != nil || 20-during != -10 || 20-after != 0 {
		t.Fatalf("nice %d while urgent, %d after (%v %v); want -10, then 0", 20-during, 20-after, err, err2)
	}
}
