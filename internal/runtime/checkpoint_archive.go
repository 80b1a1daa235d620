package runtime

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// ExportCheckpoint writes the image directory dir (a full dump, with the
// container's Config) to w as a gzipped tar, to be restored elsewhere;
// with upper, the container's writable layer (UpperDir) goes too, under
// upper/, for the files the processes had open.
func ExportCheckpoint(dir, upper string, w io.Writer) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	for _, e := range ents {
		if !e.Type().IsRegular() {
			// A "parent" link points at a pre-dump whose pages the images need.
			return fmt.Errorf("checkpoint %s: %s is not a regular file: only a full dump (no pre-dump parent) can be exported", dir, e.Name())
		}
		if _, err := addFile(tw, dir, e.Name(), e.Name()); err != nil {
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
	}
	if upper != "" {
		if _, err := WriteUpper(tw, upper); err != nil {
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func addFile(tw *tar.Writer, dir, name, as string) (int64, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: as, Mode: 0o600, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
		return 0, err
	}
	return io.Copy(tw, f)
}

// A migration stream carries a container's CRIU images from one node to
// another: a plain tar (the pages compress slowly and poorly, and it
// crosses a LAN) of the pre-dump's images under pre/, sent while the
// container still runs, then the final dump's under final/, then its
// writable layer under upper/ (WriteUpper).
const (
	MigrationPre   = "pre"
	MigrationFinal = "final"
	MigrationUpper = "upper"
)

// opaqueXattr marks an overlay upper directory that hides the lower
// layers' (a directory removed, then made again).
const opaqueXattr = "trusted.overlay.opaque"

// WriteUpper adds the writable layer upper (a stopped container's) to a
// migration stream under upper/: directories, files, symbolic links and
// overlay whiteouts, with their owners, modes and opaque marks; hard
// links go as copies. It returns the bytes of file data sent.
func WriteUpper(tw *tar.Writer, upper string) (int64, error) {
	n, err := WriteTree(tw, upper, MigrationUpper, TreeOptions{NoTop: true, Opaque: true})
	if err != nil {
		return n, fmt.Errorf("writable layer %s: %w", upper, err)
	}
	return n, tw.Flush()
}

// readUpper makes one upper/ entry of a migration stream under dir. Its
// parent must be a directory the stream made (made holds them), so no
// entry reaches through a link out of dir.
func readUpper(h *tar.Header, r io.Reader, dir string, made map[string]bool) error {
	rel := strings.TrimSuffix(strings.TrimPrefix(h.Name, MigrationUpper+"/"), "/")
	if rel == "" || rel != path.Clean(rel) || path.IsAbs(rel) || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("entry %q is not a plain path", h.Name)
	}
	if parent := path.Dir(rel); parent != "." && !made[parent] {
		return fmt.Errorf("entry %q comes before its directory", h.Name)
	}
	p := filepath.Join(dir, filepath.FromSlash(rel))
	mode := uint32(h.Mode) & 0o7777
	switch h.Typeflag {
	case tar.TypeDir:
		if err := os.Mkdir(p, 0o700); err != nil {
			return err
		}
		made[rel] = true
		if v, ok := h.PAXRecords["SCHILY.xattr."+opaqueXattr]; ok {
			if err := unix.Lsetxattr(p, opaqueXattr, []byte(v), 0); err != nil {
				return fmt.Errorf("%s: %w", h.Name, err)
			}
		}
	case tar.TypeReg:
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, r)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	case tar.TypeSymlink:
		if err := os.Symlink(h.Linkname, p); err != nil {
			return err
		}
		return os.Lchown(p, h.Uid, h.Gid)
	case tar.TypeChar:
		if h.Devmajor != 0 || h.Devminor != 0 {
			return fmt.Errorf("entry %q: a device other than a whiteout (0:0)", h.Name)
		}
		if err := unix.Mknod(p, unix.S_IFCHR|mode, 0); err != nil {
			return fmt.Errorf("%s: %w", h.Name, err)
		}
	default:
		return fmt.Errorf("entry %q: type %q is not a directory, file, link or whiteout", h.Name, h.Typeflag)
	}
	if err := os.Lchown(p, h.Uid, h.Gid); err != nil {
		return err
	}
	if err := os.Chmod(p, fs.FileMode(mode&0o777)|modeBits(mode)); err != nil {
		return err
	}
	return os.Chtimes(p, h.ModTime, h.ModTime)
}

// modeBits turns setuid, setgid and sticky bits into fs.FileMode's.
func modeBits(m uint32) fs.FileMode {
	var f fs.FileMode
	if m&unix.S_ISUID != 0 {
		f |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		f |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		f |= fs.ModeSticky
	}
	return f
}

// WriteImages adds the image directory dir to a migration stream under
// part (MigrationPre or MigrationFinal) and returns the bytes it held. The
// final dump's link to its pre-dump is left out: ReadMigration makes it.
func WriteImages(tw *tar.Writer, dir, part string) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", dir, err)
	}
	var n int64
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		m, err := addFile(tw, dir, e.Name(), part+"/"+e.Name())
		n += m
		if err != nil {
			return n, fmt.Errorf("checkpoint %s: %w", dir, err)
		}
	}
	return n, tw.Flush()
}

// ReadMigration unpacks a migration stream into dir (made if missing) and
// returns the directory of the final dump, ready for Restore.
func ReadMigration(r io.Reader, dir string) (string, error) {
	tr := tar.NewReader(r)
	parts := map[string]bool{}
	upper, made := filepath.Join(dir, MigrationUpper), map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("migration stream: %w", err)
		}
		part, name, _ := strings.Cut(h.Name, "/")
		if part == MigrationUpper {
			if !parts[part] {
				if err := os.MkdirAll(upper, 0o755); err != nil {
					return "", err
				}
				parts[part] = true
			}
			if err := readUpper(h, tr, upper, made); err != nil {
				return "", fmt.Errorf("migration stream: %w", err)
			}
			continue
		}
		if h.Typeflag != tar.TypeReg || (part != MigrationPre && part != MigrationFinal) ||
			name == "" || name != filepath.Base(name) || name == ".." {
			return "", fmt.Errorf("migration stream: entry %q is not pre/FILE or final/FILE", h.Name)
		}
		if !parts[part] {
			if err := os.MkdirAll(filepath.Join(dir, part), 0o700); err != nil {
				return "", err
			}
			parts[part] = true
		}
		f, err := os.OpenFile(filepath.Join(dir, part, name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return "", err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", fmt.Errorf("migration stream: %s: %w", h.Name, err)
		}
	}
	if !parts[MigrationFinal] {
		return "", errors.New("migration stream: it ended before the final dump")
	}
	final := filepath.Join(dir, MigrationFinal)
	if parts[MigrationUpper] {
		if err := os.Rename(upper, filepath.Join(final, RootfsDiff)); err != nil {
			return "", err
		}
	}
	if parts[MigrationPre] {
		// CRIU finds the pages the final dump left out in its parent.
		if err := os.Symlink("../"+MigrationPre, filepath.Join(final, "parent")); err != nil {
			return "", err
		}
	}
	return final, nil
}

// ImportCheckpoint unpacks what ExportCheckpoint wrote into dir (made if
// missing) and returns the id and image of the container it holds.
func ImportCheckpoint(r io.Reader, dir string) (id, image string, err error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return "", "", fmt.Errorf("checkpoint archive: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	tr := tar.NewReader(zr)
	upper, made, hasUpper := filepath.Join(dir, MigrationUpper), map[string]bool{}, false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", "", fmt.Errorf("checkpoint archive: %w", err)
		}
		if strings.HasPrefix(h.Name, MigrationUpper+"/") {
			if !hasUpper {
				hasUpper = true
				if err := os.RemoveAll(upper); err != nil {
					return "", "", err
				}
				if err := os.Mkdir(upper, 0o755); err != nil {
					return "", "", err
				}
			}
			if err := readUpper(h, tr, upper, made); err != nil {
				return "", "", fmt.Errorf("checkpoint archive: %w", err)
			}
			continue
		}
		if h.Typeflag != tar.TypeReg || h.Name != filepath.Base(h.Name) || h.Name == ".." {
			return "", "", fmt.Errorf("checkpoint archive: entry %q is not a plain file name", h.Name)
		}
		f, err := os.OpenFile(filepath.Join(dir, h.Name), os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
		if err != nil {
			return "", "", err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return "", "", fmt.Errorf("checkpoint archive: %s: %w", h.Name, err)
		}
	}
	if hasUpper {
		// The restore takes it as the container's writable layer.
		if err := os.RemoveAll(filepath.Join(dir, RootfsDiff)); err != nil {
			return "", "", err
		}
		if err := os.Rename(upper, filepath.Join(dir, RootfsDiff)); err != nil {
			return "", "", err
		}
	}
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		return "", "", fmt.Errorf("checkpoint archive: no container config (%s): %w", metaFile, err)
	}
	return m.Config.ID, m.Config.Image, nil
}
