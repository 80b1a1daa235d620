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
	"strconv"
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
	return NewDumpStream(dir, part).Finish(tw)
}

// DumpStream sends an image directory into a migration stream while CRIU
// still writes it: the memory (pages-*.img, nearly all of a dump, which
// CRIU only ever appends to) goes as it grows, in pieces that each name
// the offset they start at (paxOffset), so the transfer runs beside the
// dump rather than after it; the rest goes once the dump has ended.
type DumpStream struct {
	dir, part string
	files     map[string]*os.File
	sent      map[string]int64
}

// paxOffset, on a migration stream's image entry, is where in the file its
// bytes go: the file's length so far, as the pieces come in order. An
// entry without it is the whole file.
const paxOffset = "BERTH.offset"

// dumpPieceMax bounds one piece of a growing image in the stream.
const dumpPieceMax = 8 << 20

// NewDumpStream streams the image directory dir under part.
func NewDumpStream(dir, part string) *DumpStream {
	return &DumpStream{dir: dir, part: part, files: map[string]*os.File{}, sent: map[string]int64{}}
}

// growing tells the images CRIU writes by appending, as it dumps.
func growing(name string) bool {
	return strings.HasPrefix(name, "pages-") && strings.HasSuffix(name, ".img")
}

// SendGrown sends what the memory images gained since the last call and
// returns the bytes it sent. The dump is under way: what it has written
// stays as it is.
func (d *DumpStream) SendGrown(tw *tar.Writer) (int64, error) {
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil // not made yet
		}
		return 0, fmt.Errorf("checkpoint %s: %w", d.dir, err)
	}
	var n int64
	for _, e := range ents {
		if !e.Type().IsRegular() || !growing(e.Name()) {
			continue
		}
		m, err := d.sendPiece(tw, e.Name())
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, tw.Flush()
}

// sendPiece sends what image name holds past what was sent of it.
func (d *DumpStream) sendPiece(tw *tar.Writer, name string) (int64, error) {
	f := d.files[name]
	if f == nil {
		var err error
		if f, err = os.Open(filepath.Join(d.dir, name)); err != nil {
			return 0, fmt.Errorf("checkpoint %s: %w", d.dir, err)
		}
		d.files[name] = f
	}
	var n int64
	for {
		fi, err := f.Stat()
		if err != nil {
			return n, fmt.Errorf("checkpoint %s: %w", d.dir, err)
		}
		off := d.sent[name]
		size := fi.Size() - off
		switch {
		case size < 0:
			return n, fmt.Errorf("checkpoint %s: %s shrank while it was sent", d.dir, name)
		case size == 0:
			return n, nil
		}
		size = min(size, dumpPieceMax)
		hdr := &tar.Header{Name: d.part + "/" + name, Mode: 0o600, Size: size, Typeflag: tar.TypeReg,
			PAXRecords: map[string]string{paxOffset: strconv.FormatInt(off, 10)}}
		if err := tw.WriteHeader(hdr); err != nil {
			return n, err
		}
		m, err := io.Copy(tw, io.NewSectionReader(f, off, size))
		n += m
		if err != nil {
			return n, fmt.Errorf("checkpoint %s: %s: %w", d.dir, name, err)
		}
		d.sent[name] = off + size
	}
}

// Finish, once the dump has ended, sends the rest of the memory images
// and every other image, and returns the bytes it sent.
func (d *DumpStream) Finish(tw *tar.Writer) (int64, error) {
	defer d.Close()
	ents, err := os.ReadDir(d.dir)
	if err != nil {
		return 0, fmt.Errorf("checkpoint %s: %w", d.dir, err)
	}
	var n int64
	for _, e := range ents {
		if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		var m int64
		if _, begun := d.files[e.Name()]; begun {
			m, err = d.sendPiece(tw, e.Name())
		} else {
			m, err = addFile(tw, d.dir, e.Name(), d.part+"/"+e.Name())
		}
		n += m
		if err != nil {
			return n, fmt.Errorf("checkpoint %s: %w", d.dir, err)
		}
	}
	return n, tw.Flush()
}

// Close lets go of the images it had open.
func (d *DumpStream) Close() {
	for name, f := range d.files {
		f.Close()
		d.files[name] = nil
	}
}

// ReadMigration unpacks a migration stream into dir (made if missing) and
// returns the directory of the final dump, ready for Restore.
func ReadMigration(r io.Reader, dir string) (string, error) {
	tr := tar.NewReader(r)
	parts, sizes := map[string]bool{}, map[string]int64{}
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
		if err := readImage(h, tr, filepath.Join(dir, part, name), sizes); err != nil {
			return "", fmt.Errorf("migration stream: %w", err)
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

// readImage writes one image entry of a migration stream to p: the whole
// file, or a piece of it (paxOffset) that must start where the file, as
// the stream has made it so far (sizes), ends.
func readImage(h *tar.Header, r io.Reader, p string, sizes map[string]int64) error {
	flag := os.O_CREATE | os.O_TRUNC | os.O_WRONLY
	if v, ok := h.PAXRecords[paxOffset]; ok {
		off, err := strconv.ParseInt(v, 10, 64)
		if have, begun := sizes[p]; err != nil || off != have || (off > 0 && !begun) {
			return fmt.Errorf("%s: a piece at offset %q, but the file holds %d bytes", h.Name, v, have)
		}
		if off > 0 {
			flag = os.O_WRONLY | os.O_APPEND
		}
	}
	f, err := os.OpenFile(p, flag, 0o600)
	if err != nil {
		return err
	}
	n, err := io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	if flag&os.O_APPEND != 0 {
		sizes[p] += n
	} else {
		sizes[p] = n
	}
	return nil
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
