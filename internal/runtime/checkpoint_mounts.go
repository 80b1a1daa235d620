package runtime

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// A container's /dev and /dev/shm are tmpfs mounts, which CRIU archives
// with tar and gzip at a dump and unpacks at a restore: three processes
// forked and run each way, for each, while the container is down. Where a
// dump finds them plain (the frozen container's /dev holds only
// directories, symbolic links, device nodes and the empty files that bind
// mounts sit on; its /dev/shm nothing), it leaves them out as external
// mounts: /dev's entries go in criuDevArchive, written here, and the
// restore mounts a new tmpfs of each with the spec's options, fills /dev
// from the archive, and has CRIU bind it in. Anything else in them and
// CRIU archives them as before.

// criuMounts, in a directory of CRIU images, names the mounts the dump
// left out for the restore to make (criuExternals, JSON).
const criuMounts = "berth-mounts.json"

// criuDevArchive, in a directory of CRIU images, holds the entries of
// the container's /dev as the dump found them (a tar).
const criuDevArchive = "berth-dev.tar"

// The external mount keys of /dev and /dev/shm in the images.
const (
	criuDevKey = "berth-dev"
	criuShmKey = "berth-shm"
)

// criuRestoreMounts, in a bundle being restored, holds the mounts CRIU
// binds in for the external keys; they go once the restore has ended
// (the container keeps its own binds).
const criuRestoreMounts = "criu-mounts"

// criuExternals says which of a container's mounts its dump left out.
type criuExternals struct {
	Dev bool `json:"dev,omitempty"`
	Shm bool `json:"shm,omitempty"`
}

// dumpExternals looks, while the container whose init is pid is frozen,
// at its /dev and /dev/shm and returns those its dump (images in dir)
// may leave out, with /dev's entries written to dir. A mount that cannot
// be read, or holds more, is left to CRIU.
func dumpExternals(pid int, dir string) criuExternals {
	root := "/proc/" + strconv.Itoa(pid) + "/root"
	mounts, err := mountPoints(pid)
	if err != nil || mounts["/dev"] != "tmpfs" {
		return criuExternals{}
	}
	var ext criuExternals
	if mounts["/dev/shm"] == "tmpfs" && !mountBelow(mounts, "/dev/shm") {
		if f, err := os.Open(root + "/dev/shm"); err == nil {
			names, err := f.Readdirnames(1)
			ext.Shm = len(names) == 0 && errors.Is(err, io.EOF)
			f.Close()
		}
	}
	ext.Dev = archiveDev(root, mounts, filepath.Join(dir, criuDevArchive)) == nil
	if ext.Dev || ext.Shm {
		if err := writeJSON(filepath.Join(dir, criuMounts), ext); err != nil {
			return criuExternals{}
		}
	}
	return ext
}

// mountPoints are the mount points of process pid's mount namespace, by
// path, with their filesystem types.
func mountPoints(pid int) (map[string]string, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/mountinfo")
	if err != nil {
		return nil, err
	}
	mounts := map[string]string{}
	for _, l := range strings.Split(string(b), "\n") {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [TAGS...] - TYPE SOURCE SUPER
		f := strings.Fields(l)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		mounts[unescapeMountinfo(f[4])] = f[sep+1]
	}
	return mounts, nil
}

// mountBelow tells whether something is mounted below path.
func mountBelow(mounts map[string]string, path string) bool {
	for p := range mounts {
		if strings.HasPrefix(p, path+"/") {
			return true
		}
	}
	return false
}

// archiveDev writes the entries of the container's /dev (under root,
// its root seen from here) to the tar file path, or fails when one is
// other than a directory, symbolic link, device node or empty file. A
// mount point is written as the empty directory or file it must be, and
// what is mounted there left to CRIU.
func archiveDev(root string, mounts map[string]string, path string) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	base := root + "/dev"
	err = filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == base {
			return err
		}
		name := strings.TrimPrefix(p, base+"/")
		fi, err := d.Info()
		if err != nil {
			return err
		}
		var h *tar.Header
		if _, ok := mounts["/dev/"+name]; ok {
			// Covered by its mount: its own mode is never seen.
			h = &tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644}
			if fi.IsDir() {
				h.Typeflag, h.Mode = tar.TypeDir, 0o755
			}
			if err := tw.WriteHeader(h); err != nil || !fi.IsDir() {
				return err
			}
			return filepath.SkipDir
		}
		link := ""
		switch m := fi.Mode(); {
		case m.IsRegular() && fi.Size() != 0:
			return fmt.Errorf("%s: a file with data", p)
		case m&os.ModeSymlink != 0:
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		case m.IsRegular(), m.IsDir(), m&os.ModeDevice != 0:
		default:
			return fmt.Errorf("%s: mode %v", p, m)
		}
		if h, err = tar.FileInfoHeader(fi, link); err != nil {
			return err
		}
		h.Name, h.Uname, h.Gname = name, "", ""
		return tw.WriteHeader(h)
	})
	if err == nil {
		err = tw.Close()
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// criuRestoreConfig is CRIU's configuration for restoring bd from the
// images in bd.restoreFrom: its masked directories bound to an empty
// read-only tmpfs (as the runtime masks them) and what the dump left out
// of /dev, made afresh with the options spec s gives them. Undo (always
// called, once the restore has ended) takes the mounts off the host.
func criuRestoreConfig(bd *bundle, s *specs.Spec) (conf string, undo func(), err error) {
	dir := bd.path(criuRestoreMounts)
	undo = func() { _ = RemoveTree(dir) }
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", undo, err
	}
	masked := filepath.Join(dir, "masked")
	if err := mountTmpfs(masked, specs.Mount{Type: "tmpfs", Source: "tmpfs", Options: []string{"ro"}}); err != nil {
		return "", undo, err
	}
	conf = criuConfig + "external mnt[" + criuMaskedKey + "]:" + masked + "\n"
	// The runtime has CRIU bind the host's /dev/null, as it is, where the
	// container had it and over the files it masks: those binds came back
	// without the nosuid and noexec they had. A bind of a bind that has
	// them keeps them.
	null := filepath.Join(dir, "null")
	if err := bindNull(null); err != nil {
		return "", undo, err
	}
	conf += "external mnt[/dev/null]:" + null + "\n"
	var ext criuExternals
	if err := readJSON(filepath.Join(bd.restoreFrom, criuMounts), &ext); err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", undo, fmt.Errorf("image %s: %w", bd.restoreFrom, err)
	}
	for _, m := range []struct {
		on   bool
		dest string
		key  string
	}{{ext.Dev, "/dev", criuDevKey}, {ext.Shm, "/dev/shm", criuShmKey}} {
		if !m.on {
			continue
		}
		sm, ok := specMount(s, m.dest)
		if !ok || sm.Type != "tmpfs" {
			return "", undo, fmt.Errorf("image %s: its %s was left out, and the container has no tmpfs there", bd.restoreFrom, m.dest)
		}
		at := filepath.Join(dir, m.key)
		if err := mountTmpfs(at, sm); err != nil {
			return "", undo, err
		}
		if m.key == criuDevKey {
			if err := unpackDev(filepath.Join(bd.restoreFrom, criuDevArchive), at); err != nil {
				return "", undo, fmt.Errorf("image %s: %w", bd.restoreFrom, err)
			}
		}
		conf += "external mnt[" + m.key + "]:" + at + "\n"
	}
	return conf, undo, nil
}

// bindNull binds the host's /dev/null at path (made), nosuid and noexec,
// as the runtime binds it into a container.
func bindNull(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount("/dev/null", path, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("bind /dev/null on %s: %w", path, err)
	}
	if err := unix.Mount("", path, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("bind /dev/null on %s nosuid, noexec: %w", path, err)
	}
	return nil
}

// specMount is the mount of s at dest.
func specMount(s *specs.Spec, dest string) (specs.Mount, bool) {
	for _, m := range s.Mounts {
		if m.Destination == dest {
			return m, true
		}
	}
	return specs.Mount{}, false
}

// mountTmpfs mounts a tmpfs at path (made), with m's source and options.
func mountTmpfs(path string, m specs.Mount) error {
	lm, err := planMount(m)
	if err != nil {
		return err
	}
	if err := os.Mkdir(path, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	if err := unix.Mount(m.Source, path, "tmpfs", lm.Flags, lm.Data); err != nil {
		return fmt.Errorf("mount tmpfs on %s: %w", path, err)
	}
	return nil
}

// unpackDev makes the entries archiveDev wrote to path under dir, a
// fresh tmpfs; names that would leave dir are refused.
func unpackDev(path, dir string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", criuDevArchive, err)
		}
		name := filepath.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("%s: entry %q leaves /dev", criuDevArchive, h.Name)
		}
		p := filepath.Join(dir, name)
		mode := uint32(h.Mode & 0o7777)
		switch h.Typeflag {
		case tar.TypeDir:
			err = unix.Mkdir(p, mode)
		case tar.TypeSymlink:
			err = unix.Symlink(h.Linkname, p)
		case tar.TypeReg:
			err = unix.Mknod(p, unix.S_IFREG|mode, 0)
		case tar.TypeChar:
			err = unix.Mknod(p, unix.S_IFCHR|mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))))
		case tar.TypeBlock:
			err = unix.Mknod(p, unix.S_IFBLK|mode, int(unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor))))
		default:
			return fmt.Errorf("%s: entry %q of type %c", criuDevArchive, h.Name, h.Typeflag)
		}
		if err == nil && h.Typeflag != tar.TypeSymlink {
			// Past the umask, as the dumped ones were.
			err = unix.Chmod(p, mode)
		}
		if err == nil {
			err = unix.Lchown(p, h.Uid, h.Gid)
		}
		if err != nil && !(errors.Is(err, unix.EEXIST) && h.Typeflag == tar.TypeDir) {
			return fmt.Errorf("%s: %s: %w", criuDevArchive, h.Name, err)
		}
	}
}
