package runtime

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
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
		if _, err := addFile(tw, dir, e.Name(), e.Name()); err != nil {
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
// container still runs, then the final dump's under final/.
const (
	MigrationPre   = "pre"
	MigrationFinal = "final"
)

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
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", fmt.Errorf("migration stream: %w", err)
		}
		part, name, _ := strings.Cut(h.Name, "/")
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
