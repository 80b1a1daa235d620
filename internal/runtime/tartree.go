package runtime

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// TreeOptions say how WriteTree writes a tree.
type TreeOptions struct {
	// NoTop leaves out the entry of the top itself: only what is under it
	// goes.
	NoTop bool
	// Opaque carries a directory's overlay opaque mark, as a PAX xattr
	// record.
	Opaque bool
}

// WriteTree adds src, a file or a directory tree, to tw with its top
// entry named as and what is under it as/REL: directories, files,
// symbolic links and devices, with their owners and modes (hard links go
// as copies). A src that is a symbolic link goes as what it points at.
// It returns the bytes of file data written.
func WriteTree(tw *tar.Writer, src, as string, opts TreeOptions) (int64, error) {
	top, err := os.Stat(src)
	if err != nil {
		return 0, err
	}
	var n int64
	walk := func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil || (rel == "." && opts.NoTop) {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		link := ""
		if fi.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		h, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		h.Name = path.Join(as, filepath.ToSlash(rel))
		h.Uname, h.Gname = "", ""
		if fi.IsDir() {
			h.Name += "/"
			if opts.Opaque {
				buf := make([]byte, 8)
				if m, err := unix.Lgetxattr(p, opaqueXattr, buf); err == nil {
					h.PAXRecords = map[string]string{"SCHILY.xattr." + opaqueXattr: string(buf[:m])}
				}
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		m, err := io.Copy(tw, f)
		n += m
		return err
	}
	if top.IsDir() {
		err = filepath.WalkDir(src, walk)
	} else {
		err = walk(src, fs.FileInfoToDirEntry(top), nil)
	}
	return n, err
}
