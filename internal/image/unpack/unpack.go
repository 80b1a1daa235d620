// Package unpack applies one image layer (an uncompressed tar stream) to an
// empty directory, the way overlayfs wants to see it as a lower layer:
//
//   - ".wh.NAME" entries become whiteouts: a 0/0 character device at NAME;
//   - ".wh..wh..opq" marks its directory opaque with trusted.overlay.opaque=y;
//   - ownership, modes, modification times and hard links are kept.
//
// Layers are untrusted input. Every path is resolved one component at a time
// with openat(O_NOFOLLOW) below the target directory, so nothing is ever
// written outside it. Entries that try are refused with an error wrapping
// ErrUnsafe: absolute names, ".." components, writes through a symlink, hard
// links whose target is absolute, climbs out or is missing from the layer,
// and device nodes. Whiteout devices and opaque xattrs are only ever created
// by the unpacker itself; a layer carrying trusted.* xattrs does not get them.
package unpack

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"github.com/berth-dev/berth/api/errdefs"
	"golang.org/x/sys/unix"
)

// ErrUnsafe is wrapped by every error about a layer entry that would write
// outside the target or create something a layer must not carry.
var ErrUnsafe = errdefs.New("unsafe layer entry", errdefs.ErrInvalidArgument)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// Layer unpacks the tar stream r into dir, which must exist and be empty and
// private to the caller (nobody else writes into it while Layer runs).
// When it fails, dir holds a partial tree the caller should remove.
func Layer(ctx context.Context, r io.Reader, dir string) error {
	root, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open layer dir %s: %w", dir, err)
	}
	defer unix.Close(root)
	u := &unpacker{root: root, dir: dir, chown: os.Geteuid() == 0}
	u.space.start(root)
	tr := tar.NewReader(r)
	for n := 0; ; n++ {
		if n%64 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w", err)
		}
		if err := u.entry(hdr, tr); err != nil {
			return fmt.Errorf("entry %q: %w", hdr.Name, err)
		}
	}
	// Directory times last: creating their children changed them.
	for i := len(u.dirTimes) - 1; i >= 0; i-- {
		d := u.dirTimes[i]
		if err := u.withParent(d.name, false, func(fd int, base string) error {
			return setTimes(fd, base, d.mtime)
		}); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, ErrUnsafe) {
			// A later entry may have replaced or removed the directory.
			return fmt.Errorf("directory %q: set times: %w", d.name, err)
		}
	}
	return nil
}

type dirTime struct {
	name  string
	mtime time.Time
}

type unpacker struct {
	root     int
	dir      string
	chown    bool
	dirTimes []dirTime
	space    spaceGuard
}

// spaceGuard keeps a layer from filling its filesystem: a layer is
// untrusted, and a few kilobytes of gzip can unpack to gigabytes of
// zeros, while the filesystem is shared with the node's other writers
// (the store's WAL in `berth up`, the containers' writable layers). The
// unpack stops once it would leave less free than the reserve: 5% of the
// filesystem, at most 1 GiB. It looks at the free space again after
// every quarter of the reserve written (at least 1 MiB), so it never
// overshoots by more.
type spaceGuard struct {
	fd        int
	reserve   int64
	every     int64
	unchecked int64
}

// maxReserve caps the reserve on large filesystems.
const maxReserve = 1 << 30

func (g *spaceGuard) start(fd int) {
	var st unix.Statfs_t
	if unix.Fstatfs(fd, &st) != nil || st.Blocks == 0 {
		return // no figures (a pseudo filesystem): no guard
	}
	g.fd = fd
	g.reserve = min(int64(st.Blocks)*st.Bsize/20, maxReserve)
	g.every = max(g.reserve/4, 1<<20)
}

// room refuses size more bytes when writing them would leave the
// filesystem under its reserve.
func (g *spaceGuard) room(size int64) error {
	if g.reserve == 0 {
		return nil
	}
	if g.unchecked += size; g.unchecked < g.every {
		return nil
	}
	g.unchecked = 0
	var st unix.Statfs_t
	if err := unix.Fstatfs(g.fd, &st); err != nil {
		return nil
	}
	if free := int64(st.Bavail) * st.Bsize; free-size < g.reserve {
		return fmt.Errorf("%w: %d more bytes would leave %d free on the layer store's filesystem, under its reserve of %d bytes (5%%, at most 1 GiB)",
			errdefs.ErrTooLarge, size, max(free-size, 0), g.reserve)
	}
	return nil
}

// clean checks a tar path and returns it relative to the layer root, or ""
// for the root itself.
func clean(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", fmt.Errorf("%w: absolute path", ErrUnsafe)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("%w: path climbs out with \"..\"", ErrUnsafe)
		}
	}
	if strings.ContainsRune(name, 0) {
		return "", fmt.Errorf("%w: NUL in path", ErrUnsafe)
	}
	p := path.Clean(name)
	if p == "." {
		return "", nil
	}
	return p, nil
}

func (u *unpacker) entry(hdr *tar.Header, r io.Reader) error {
	name, err := clean(hdr.Name)
	if err != nil {
		return err
	}
	base := path.Base(name)
	dirName := path.Dir(name)
	if name == "" {
		dirName, base = ".", "."
	}

	if done, err := u.whiteout(name, dirName, base); done {
		return err
	}

	switch hdr.Typeflag {
	case tar.TypeChar, tar.TypeBlock:
		return fmt.Errorf("%w: device node (%d:%d): image layers may not carry device nodes", ErrUnsafe, hdr.Devmajor, hdr.Devminor)
	case tar.TypeDir, tar.TypeReg, tar.TypeSymlink, tar.TypeLink, tar.TypeFifo:
	case tar.TypeXGlobalHeader:
		return nil
	default:
		return fmt.Errorf("%w: unsupported tar entry type %q", ErrUnsafe, hdr.Typeflag)
	}
	if name == "" {
		if hdr.Typeflag != tar.TypeDir {
			return fmt.Errorf("%w: root entry is not a directory", ErrUnsafe)
		}
		return u.attrs(u.root, ".", hdr, true)
	}

	return u.withParent(name, true, func(fd int, b string) error {
		if hdr.Typeflag == tar.TypeDir {
			return u.mkdir(fd, b, name, hdr)
		}
		if err := removeAt(fd, b); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeReg:
			if err := u.space.room(hdr.Size); err != nil {
				return err
			}
			f, err := unix.Openat(fd, b, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, uint32(hdr.Mode&0o777))
			if err != nil {
				return err
			}
			file := os.NewFile(uintptr(f), b)
			_, err = io.Copy(file, r)
			if cerr := file.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return err
			}
		case tar.TypeSymlink:
			// The link itself may point anywhere: it is only ever resolved
			// inside the container. Writes through it are what is refused.
			if err := unix.Symlinkat(hdr.Linkname, fd, b); err != nil {
				return err
			}
		case tar.TypeFifo:
			if err := unix.Mknodat(fd, b, unix.S_IFIFO|0o600, 0); err != nil {
				return err
			}
		case tar.TypeLink:
			return u.hardlink(fd, b, hdr.Linkname)
		}
		return u.attrs(fd, b, hdr, false)
	})
}

// whiteout carries out an entry that marks a directory opaque or deletes
// a lower layer's file; false when the entry is neither.
func (u *unpacker) whiteout(name, dirName, base string) (bool, error) {
	switch {
	case base == opaqueMarker:
		return true, u.withParent(name, true, func(fd int, _ string) error {
			d, err := unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			defer unix.Close(d)
			if err := unix.Fsetxattr(d, "trusted.overlay.opaque", []byte("y"), 0); err != nil {
				return fmt.Errorf("mark %q opaque (needs root): %w", dirName, err)
			}
			return nil
		})
	case strings.HasPrefix(base, whiteoutPrefix+whiteoutPrefix):
		return true, nil // other ".wh..wh." names are aufs metadata, meaningless here
	case strings.HasPrefix(base, whiteoutPrefix):
		target := strings.TrimPrefix(base, whiteoutPrefix)
		if target == "" || target == "." || target == ".." {
			return true, fmt.Errorf("%w: bad whiteout name", ErrUnsafe)
		}
		return true, u.withParent(path.Join(dirName, target), true, func(fd int, b string) error {
			if err := removeAt(fd, b); err != nil {
				return err
			}
			if err := unix.Mknodat(fd, b, unix.S_IFCHR, 0); err != nil {
				return fmt.Errorf("create whiteout for %q (needs root): %w", path.Join(dirName, target), err)
			}
			return nil
		})
	}
	return false, nil
}

// mkdir makes (or keeps) the directory entry name at fd/b, replacing what
// else stands there, and records its time for the end.
func (u *unpacker) mkdir(fd int, b, name string, hdr *tar.Header) error {
	var st unix.Stat_t
	err := unix.Fstatat(fd, b, &st, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		if err := removeAt(fd, b); err != nil {
			return err
		}
		err = unix.ENOENT
	}
	if err == unix.ENOENT {
		if err := unix.Mkdirat(fd, b, uint32(hdr.Mode&0o777)); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	u.dirTimes = append(u.dirTimes, dirTime{name, hdr.ModTime})
	return u.attrs(fd, b, hdr, false)
}

// hardlink links fd/base to an earlier entry of this layer. The target is
// resolved with the same rules as any entry, so it cannot name a host file.
func (u *unpacker) hardlink(fd int, base, linkname string) error {
	target, err := clean(linkname)
	if err != nil {
		return fmt.Errorf("hard link to %q: %w", linkname, err)
	}
	if target == "" {
		return fmt.Errorf("%w: hard link to the layer root", ErrUnsafe)
	}
	err = u.withParent(target, false, func(tfd int, tb string) error {
		var st unix.Stat_t
		if err := unix.Fstatat(tfd, tb, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			return fmt.Errorf("%w: hard link to directory %q", ErrUnsafe, linkname)
		}
		// No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
		return unix.Linkat(tfd, tb, fd, base, 0)
	})
	if errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("%w: hard link target %q is not in this layer", ErrUnsafe, linkname)
	}
	return err
}

// withParent opens the parent directory of name (relative to the layer
// root) without following any symlink, optionally creating missing
// directories, and calls fn with it and the last component.
func (u *unpacker) withParent(name string, create bool, fn func(fd int, base string) error) error {
	dirName, base := path.Split(name)
	fd, err := unix.Dup(u.root)
	if err != nil {
		return err
	}
	defer func() { unix.Close(fd) }()
	walked := ""
	for _, c := range strings.Split(strings.TrimSuffix(dirName, "/"), "/") {
		if c == "" || c == "." {
			continue
		}
		walked = path.Join(walked, c)
		next, err := unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err == unix.ENOENT && create {
			// Like tar, make missing parents; the layer's own entry for
			// the directory (if any) sets its attributes later.
			if err := unix.Mkdirat(fd, c, 0o755); err != nil {
				return fmt.Errorf("create parent %q: %w", walked, err)
			}
			next, err = unix.Openat(fd, c, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		}
		if err == unix.ENOTDIR || err == unix.ELOOP {
			var st unix.Stat_t
			if unix.Fstatat(fd, c, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK {
				buf := make([]byte, 4096)
				n, _ := unix.Readlinkat(fd, c, buf)
				return fmt.Errorf("%w: path goes through symlink %q -> %q", ErrUnsafe, walked, string(buf[:max(n, 0)]))
			}
			return fmt.Errorf("%w: parent %q is not a directory", ErrUnsafe, walked)
		}
		if err != nil {
			return fmt.Errorf("open parent %q: %w", walked, err)
		}
		unix.Close(fd)
		fd = next
	}
	if base == "" {
		base = "."
	}
	return fn(fd, base)
}

// removeAt clears the way for a new entry: a later entry replaces an earlier
// one of the same name, as tar does.
func removeAt(fd int, base string) error {
	var st unix.Stat_t
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if err == unix.ENOENT {
			return nil
		}
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return unix.Unlinkat(fd, base, 0)
	}
	if err := unix.Unlinkat(fd, base, unix.AT_REMOVEDIR); err != unix.ENOTEMPTY && err != unix.EEXIST {
		return err
	}
	// A non-empty directory: descend without following symlinks.
	d, err := unix.Openat(fd, base, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(d), base)
	names, err := f.Readdirnames(-1)
	if err != nil {
		f.Close()
		return err
	}
	for _, n := range names {
		if err := removeAt(d, n); err != nil {
			f.Close()
			return err
		}
	}
	f.Close()
	return unix.Unlinkat(fd, base, unix.AT_REMOVEDIR)
}

// attrs applies ownership, mode, xattrs and (except for directories, done
// at the end) times to fd/base without following a symlink there.
func (u *unpacker) attrs(fd int, base string, hdr *tar.Header, isRoot bool) error {
	if hdr.Typeflag == tar.TypeLink {
		return nil // the target's attributes are the link's
	}
	// Metadata writes dominate unpack time, so skip those already true.
	var st unix.Stat_t
	if err := unix.Fstatat(fd, base, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	chowned := false
	if u.chown && (int(st.Uid) != hdr.Uid || int(st.Gid) != hdr.Gid) {
		if err := unix.Fchownat(fd, base, hdr.Uid, hdr.Gid, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
		chowned = true // which may have cleared setuid/setgid
	}
	if hdr.Typeflag == tar.TypeSymlink {
		return setTimes(fd, base, hdr.ModTime)
	}
	// fchmodat has no working AT_SYMLINK_NOFOLLOW, but base is known not to
	// be a symlink here: it was just created (or found a directory) by us.
	if mode := uint32(hdr.Mode & 0o7777); chowned || st.Mode&0o7777 != mode {
		if err := unix.Fchmodat(fd, base, mode, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	for k, v := range hdr.PAXRecords {
		x, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok || strings.HasPrefix(x, "trusted.") {
			continue
		}
		// Best effort: xattrs are optional and not every fs takes them.
		_ = setXattrAt(fd, base, x, v)
	}
	if hdr.Typeflag == tar.TypeDir || isRoot {
		return nil
	}
	return setTimes(fd, base, hdr.ModTime)
}

func setXattrAt(fd int, base, key, value string) error {
	f, err := unix.Openat(fd, base, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(f)
	// The magic link leads to the opened inode itself, never further.
	return unix.Setxattr(fmt.Sprintf("/proc/self/fd/%d", f), key, []byte(value), 0)
}

func setTimes(fd int, base string, mtime time.Time) error {
	ts, err := unix.TimeToTimespec(mtime)
	if err != nil {
		ts = unix.Timespec{}
	}
	return unix.UtimesNanoAt(fd, base, []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
}
