package unpack

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

type ent struct {
	name, link, body string
	typ              byte
	mode             int64
	major, minor     int64
	uid, gid         int
	pax              map[string]string
}

func layerTar(t testing.TB, ents ...ent) *bytes.Buffer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		h := &tar.Header{PAXRecords: e.pax, Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Devmajor: e.major, Devminor: e.minor, Uid: e.uid, Gid: e.gid,
			ModTime: time.Unix(1_600_000_000, 0)}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write([]byte(e.body)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return &buf
}

// snapshotTree records everything observable about a directory tree.
func snapshotTree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		line := p + " " + fi.Mode().String() + " " + fi.ModTime().String() + " nlink=" + itoa(uint64(st.Nlink))
		if fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			line += " " + string(b)
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// canaryTarget is an empty target directory with, next to it, a canary
// directory that nothing unpacked into the target may change.
type canaryTarget struct {
	base, canary, target string
	before               string // the canary's snapshot
}

func newCanaryTarget(t *testing.T) canaryTarget {
	t.Helper()
	c := canaryTarget{base: t.TempDir()}
	c.canary = filepath.Join(c.base, "canary")
	if err := os.MkdirAll(filepath.Join(c.canary, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.canary, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.target = filepath.Join(c.base, "target")
	if err := os.Mkdir(c.target, 0o755); err != nil {
		t.Fatal(err)
	}
	c.before = snapshotTree(t, c.canary)
	return c
}

// check fails the test if the canary changed or anything appeared next
// to the target.
func (c canaryTarget) check(t *testing.T) {
	t.Helper()
	if after := snapshotTree(t, c.canary); after != c.before {
		t.Fatalf("canary changed:\nbefore:\n%s\nafter:\n%s", c.before, after)
	}
	if entries, _ := os.ReadDir(c.base); len(entries) != 2 {
		t.Fatalf("something appeared next to the target: %v", entries)
	}
}

func itoa(n uint64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// TestHostileLayers unpacks layers that try to reach a canary directory
// next to the target, and checks each is refused with a clear error and
// the canary is untouched.
func TestHostileLayers(t *testing.T) {
	testenv.RequireRoot(t)
	cases := []struct {
		name string
		ents func(canary string) []ent
		want string
	}{
		{"dotdot file", func(string) []ent { return []ent{{name: "../canary/pwned", body: "x"}} }, `climbs out with ".."`},
		{"dotdot inside", func(string) []ent { return []ent{{name: "a/../../canary/pwned", body: "x"}} }, `climbs out with ".."`},
		{"absolute file", func(c string) []ent { return []ent{{name: c + "/pwned", body: "x"}} }, "absolute path"},
		{"absolute dir", func(c string) []ent { return []ent{{name: c + "/sub/", typ: tar.TypeDir, mode: 0o755}} }, "absolute path"},
		{"relative symlink then write", func(string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: "../canary"}, {name: "evil/pwned", body: "x"}}
		}, `goes through symlink "evil" -> "../canary"`},
		{"absolute symlink then write", func(c string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/pwned", body: "x"}}
		}, `goes through symlink "evil"`},
		{"symlink then mkdir", func(c string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/sub/", typ: tar.TypeDir, mode: 0o755}}
		}, `goes through symlink "evil"`},
		{"nested symlink then write", func(string) []ent {
			return []ent{{name: "a/", typ: tar.TypeDir, mode: 0o755}, {name: "a/evil", typ: tar.TypeSymlink, link: "../../canary"}, {name: "a/evil/x/pwned", body: "x"}}
		}, `goes through symlink "a/evil"`},
		{"symlink then whiteout", func(c string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/.wh.secret", body: ""}}
		}, `goes through symlink "evil"`},
		{"symlink then opaque", func(c string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "evil/.wh..wh..opq", body: ""}}
		}, `goes through symlink "evil"`},
		{"hard link dotdot", func(string) []ent { return []ent{{name: "hl", typ: tar.TypeLink, link: "../canary/secret"}} }, `climbs out with ".."`},
		{"hard link absolute", func(c string) []ent { return []ent{{name: "hl", typ: tar.TypeLink, link: c + "/secret"}} }, "absolute path"},
		{"hard link through symlink", func(c string) []ent {
			return []ent{{name: "evil", typ: tar.TypeSymlink, link: c}, {name: "hl", typ: tar.TypeLink, link: "evil/secret"}}
		}, `goes through symlink "evil"`},
		{"hard link to missing", func(string) []ent { return []ent{{name: "hl", typ: tar.TypeLink, link: "nothere"}} }, "not in this layer"},
		{"char device", func(string) []ent { return []ent{{name: "null", typ: tar.TypeChar, major: 1, minor: 3}} }, "device node (1:3)"},
		{"block device", func(string) []ent { return []ent{{name: "sda", typ: tar.TypeBlock, major: 8, minor: 0}} }, "device node (8:0)"},
		{"whiteout device smuggled", func(string) []ent { return []ent{{name: "x", typ: tar.TypeChar}} }, "device node (0:0)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := newCanaryTarget(t)
			err := Layer(context.Background(), layerTar(t, tc.ents(c.canary)...), c.target)
			if !errors.Is(err, ErrUnsafe) {
				t.Fatalf("Layer = %v, want an ErrUnsafe error", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
			c.check(t)
		})
	}
}

func TestLayerContent(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	err := Layer(context.Background(), layerTar(t,
		ent{name: "./", typ: tar.TypeDir, mode: 0o755},
		ent{name: "etc/", typ: tar.TypeDir, mode: 0o750},
		ent{name: "etc/conf", body: "v1", mode: 0o4755, uid: 1000, gid: 2000},
		ent{name: "etc/conf-link", typ: tar.TypeLink, link: "etc/conf"},
		ent{name: "etc/abs", typ: tar.TypeSymlink, link: "/outside/is/fine/to/point/at"},
		ent{name: "deep/er/file", body: "made parents"},
		ent{name: "gone", body: "x"},
		ent{name: "gone", body: "replaced"},
		ent{name: "dir/.wh.old", body: ""},
		ent{name: "dir/.wh..wh..opq", body: ""},
		ent{name: "fifo", typ: tar.TypeFifo, mode: 0o600},
		ent{name: "dir/.wh..wh.plnk/", typ: tar.TypeDir, mode: 0o700},
		ent{name: "xa", body: "x", pax: map[string]string{"SCHILY.xattr.user.berth": "v", "SCHILY.xattr.trusted.overlay.opaque": "y"}},
	), dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, "etc/conf"))
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1000 || st.Gid != 2000 {
		t.Errorf("etc/conf owned by %d:%d, want 1000:2000", st.Uid, st.Gid)
	}
	if fi.Mode()&fs.ModeSetuid == 0 || fi.Mode().Perm() != 0o755 {
		t.Errorf("etc/conf mode %v, want setuid 0755", fi.Mode())
	}
	if !fi.ModTime().Equal(time.Unix(1_600_000_000, 0)) {
		t.Errorf("etc/conf mtime %v", fi.ModTime())
	}
	if fi, err := os.Stat(filepath.Join(dir, "etc")); err != nil || fi.Mode().Perm() != 0o750 || !fi.ModTime().Equal(time.Unix(1_600_000_000, 0)) {
		t.Errorf("etc: %v %v", fi, err)
	}
	if fi.Sys().(*syscall.Stat_t).Nlink != 2 {
		t.Errorf("etc/conf has %d links, want 2", fi.Sys().(*syscall.Stat_t).Nlink)
	}
	if l, err := os.Readlink(filepath.Join(dir, "etc/abs")); err != nil || l != "/outside/is/fine/to/point/at" {
		t.Errorf("etc/abs -> %q, %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "gone")); err != nil || string(b) != "replaced" {
		t.Errorf("gone = %q, %v", b, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "deep/er/file")); err != nil || string(b) != "made parents" {
		t.Errorf("deep/er/file = %q, %v", b, err)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dir, "dir/old"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("whiteout dir/old is mode %o rdev %d, want a 0/0 char device", st.Mode, st.Rdev)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dir/.wh.old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".wh.old kept in the layer dir: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "dir/.wh.plnk")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("aufs metadata dir turned into a whiteout: %v", err)
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(dir, "xa"), "user.berth", buf); err != nil || string(buf[:n]) != "v" {
		t.Errorf("xa user.berth xattr = %q, %v", buf[:max(n, 0)], err)
	}
	if _, err := unix.Getxattr(filepath.Join(dir, "xa"), "trusted.overlay.opaque", buf); err == nil {
		t.Error("a trusted.overlay xattr from the tar was applied")
	}
	n, err := unix.Lgetxattr(filepath.Join(dir, "dir"), "trusted.overlay.opaque", buf)
	if err != nil || string(buf[:n]) != "y" {
		t.Errorf("dir opaque xattr = %q, %v", buf[:n], err)
	}
}

// BenchmarkLayer unpacks a busybox-shaped layer: a few directories, a
// few files and hundreds of symlinks.
func BenchmarkLayer(b *testing.B) {
	testenv.RequireRoot(b)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, d := range []string{"bin/", "etc/", "tmp/", "www/"} {
		tw.WriteHeader(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755})
	}
	body := bytes.Repeat([]byte("x"), 4096)
	for i := range 20 {
		tw.WriteHeader(&tar.Header{Name: "etc/f" + itoa(uint64(i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(body))})
		tw.Write(body)
	}
	for i := range 300 {
		tw.WriteHeader(&tar.Header{Name: "bin/l" + itoa(uint64(i)), Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777})
	}
	tw.Close()
	data := buf.Bytes()
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		b.StartTimer()
		if err := Layer(context.Background(), bytes.NewReader(data), dir); err != nil {
			b.Fatal(err)
		}
	}
}

// A layer that unpacks to more than its filesystem can spare (a
// decompression bomb: a few kilobytes of gzip, gigabytes of zeros) stops
// before the filesystem falls under its reserve, with an error saying so,
// rather than filling it: the node's other writers (the store's WAL, the
// containers' layers) share it.
func TestLayerKeepsTheDiskReserve(t *testing.T) {
	testenv.RequireRoot(t)
	const fsSize = 32 << 20
	for _, tc := range []struct {
		name        string
		files, size int64
	}{
		{"one huge file", 1, 64 << 20},
		{"many files", 64, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size="+itoa(fsSize)); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
			target := filepath.Join(mnt, "layer")
			if err := os.Mkdir(target, 0o755); err != nil {
				t.Fatal(err)
			}
			pr, pw := io.Pipe()
			go func() {
				tw := tar.NewWriter(pw)
				zeros := make([]byte, 1<<20)
				for i := range tc.files {
					if err := tw.WriteHeader(&tar.Header{Name: "f" + itoa(uint64(i)), Typeflag: tar.TypeReg, Mode: 0o644, Size: tc.size}); err != nil {
						pw.CloseWithError(err)
						return
					}
					for left := tc.size; left > 0; left -= int64(len(zeros)) {
						if _, err := tw.Write(zeros[:min(left, int64(len(zeros)))]); err != nil {
							pw.CloseWithError(err)
							return
						}
					}
				}
				pw.CloseWithError(tw.Close())
			}()
			err := Layer(context.Background(), pr, target)
			pr.Close()
			if !errors.Is(err, errdefs.ErrTooLarge) || !strings.Contains(err.Error(), "reserve") {
				t.Fatalf("Layer = %v, want an error saying the layer would eat into the disk's reserve", err)
			}
			var st unix.Statfs_t
			if err := unix.Statfs(mnt, &st); err != nil {
				t.Fatal(err)
			}
			if free := int64(st.Bavail) * st.Bsize; free < fsSize/20/2 {
				t.Errorf("%d bytes left free of %d, want the unpack to have stopped short of the reserve", free, fsSize)
			}
		})
	}
}
