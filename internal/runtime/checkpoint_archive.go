package runtime

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// ExportCheckpoint writes the image directory dir (a full dump, with the
// container's Config) to w as a gzipped tar, to be restored elsewhere.
func ExportCheckpoint(dir string, w io.Writer) error {
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
		if err := addFile(tw, dir, e.Name()); err != nil {
			return fmt.Errorf("checkpoint %s: %w", dir, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}

func addFile(tw *tar.Writer, dir, name string) error {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o600, Size: fi.Size(), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	_, err = io.Copy(tw, f)
	return err
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
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", "", fmt.Errorf("checkpoint archive: %w", err)
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
	var m meta
	if err := readJSON(filepath.Join(dir, metaFile), &m); err != nil {
		return "", "", fmt.Errorf("checkpoint archive: no container config (%s): %w", metaFile, err)
	}
	return m.Config.ID, m.Config.Image, nil
}
