package image

import (
	"archive/tar"
	"bufio"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-dev/berth/api/errdefs"
)

// ImportOptions tune Import.
type ImportOptions struct {
	// Tag names the imported image, replacing the names the source gives
	// it. Only valid when the source holds exactly one image.
	Tag string
	// Progress, when set, is told how many layer bytes have been copied.
	Progress Progress
}

// Import copies the images in path into the store. path is an OCI image
// layout directory, an OCI archive (a tar of such a directory), or a
// `docker save` tarball; archives may be gzip-compressed. Multi-platform
// indexes contribute the image for this machine's platform.
func (s *Store) Import(ctx context.Context, path string, opts ImportOptions) ([]Image, error) {
	if opts.Tag != "" {
		t, err := NormalizeName(opts.Tag)
		if err != nil {
			return nil, err
		}
		opts.Tag = t
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	var imgs []found
	if st.IsDir() {
		imgs, err = s.fromLayout(path)
	} else {
		var cleanup func()
		imgs, cleanup, err = s.fromArchive(ctx, path)
		defer cleanup()
	}
	if err != nil {
		return nil, fmt.Errorf("import %s: %w", path, err)
	}
	if len(imgs) == 0 {
		return nil, fmt.Errorf("import %s: no image for %s/%s in it: %w", path, runtime.GOOS, runtime.GOARCH, errdefs.ErrInvalidArgument)
	}
	if opts.Tag != "" {
		if len(imgs) != 1 {
			return nil, fmt.Errorf("import %s: --tag needs exactly one image, the source has %d: %w", path, len(imgs), errdefs.ErrInvalidArgument)
		}
		imgs[0].names = []string{opts.Tag}
	}
	// A hostile layer is refused now, naming its bad entry, not at the
	// first container start: nothing of the source is stored until every
	// layer of every image in it unpacks.
	for _, f := range imgs {
		if err := s.unpackAll(ctx, f.img); err != nil {
			return nil, fmt.Errorf("import %s: %w", path, err)
		}
	}
	var out []Image
	for _, f := range imgs {
		img, err := s.put(ctx, f.img, f.names, opts.Progress)
		if err != nil {
			return out, fmt.Errorf("import %s: %w", path, err)
		}
		if f.index != nil {
			// Kept so that the index digest names this image here too.
			if _, err := s.PutIndex(f.index); err != nil {
				return out, fmt.Errorf("import %s: %w", path, err)
			}
		}
		out = append(out, img)
	}
	return out, nil
}

type found struct {
	img   v1.Image
	names []string
	index []byte // the multi-arch index img was chosen from, if any
}

// fromArchive sniffs a tar (maybe gzipped) for docker-save's manifest.json
// or an OCI layout's oci-layout file and reads it accordingly. The images
// read lazily from temporary files that cleanup removes.
func (s *Store) fromArchive(ctx context.Context, p string) (_ []found, cleanup func(), err error) {
	var temps []string
	cleanup = func() {
		for _, t := range temps {
			os.RemoveAll(t)
		}
	}
	imgs, err := s.readArchive(ctx, p, &temps)
	return imgs, cleanup, err
}

func (s *Store) readArchive(ctx context.Context, p string, temps *[]string) ([]found, error) {
	gz, err := isGzip(p)
	if err != nil {
		return nil, err
	}
	if gz {
		// The tar readers below reopen the file many times; unzip once.
		plain, err := s.gunzip(p)
		if err != nil {
			return nil, err
		}
		*temps = append(*temps, plain)
		p = plain
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	tr := tar.NewReader(f)
	docker, oci := false, false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("not an OCI layout, OCI archive or docker-save tarball: %w: %w", err, errdefs.ErrInvalidArgument)
		}
		switch path.Clean(hdr.Name) {
		case "manifest.json":
			docker = true
		case "oci-layout":
			oci = true
		}
	}
	f.Close()
	switch {
	case docker:
		return fromDockerSave(p)
	case oci:
		dir, err := os.MkdirTemp(filepath.Join(s.root, "tmp"), "oci-archive.*")
		if err != nil {
			return nil, err
		}
		*temps = append(*temps, dir)
		if err := extractLayoutArchive(ctx, p, dir); err != nil {
			return nil, err
		}
		return s.fromLayout(dir)
	}
	return nil, fmt.Errorf("not an OCI archive (no oci-layout) nor a docker-save tarball (no manifest.json): %w", errdefs.ErrInvalidArgument)
}

func isGzip(p string) (bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 2)
	if _, err := io.ReadFull(f, magic); err != nil {
		return false, nil
	}
	return magic[0] == 0x1f && magic[1] == 0x8b, nil
}

func (s *Store) gunzip(p string) (string, error) {
	in, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer in.Close()
	zr, err := gzip.NewReader(bufio.NewReader(in))
	if err != nil {
		return "", err
	}
	out, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "archive.*.tar")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, zr)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		return "", fmt.Errorf("gunzip: %w", err)
	}
	return out.Name(), nil
}

func fromDockerSave(p string) ([]found, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(p) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, fmt.Errorf("docker-save manifest.json: %w", err)
	}
	var out []found
	for i, d := range m {
		var tag *name.Tag
		var names []string
		for _, rt := range d.RepoTags {
			n, err := NormalizeName(rt)
			if err != nil {
				return nil, fmt.Errorf("docker-save image %d: %w", i, err)
			}
			names = append(names, n)
		}
		if len(d.RepoTags) > 0 {
			t, err := name.NewTag(d.RepoTags[0])
			if err != nil {
				return nil, fmt.Errorf("docker-save image %d: tag %q: %w", i, d.RepoTags[0], err)
			}
			tag = &t
		} else if len(m) > 1 {
			return nil, fmt.Errorf("docker-save image %d has no tag and the tarball holds %d images: %w", i, len(m), errdefs.ErrInvalidArgument)
		}
		img, err := tarball.Image(opener, tag)
		if err != nil {
			return nil, fmt.Errorf("docker-save image %d: %w", i, err)
		}
		out = append(out, found{img: img, names: names})
	}
	return out, nil
}

func (s *Store) fromLayout(dir string) ([]found, error) {
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		return nil, fmt.Errorf("OCI layout: %w", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("OCI layout index.json: %w", err)
	}
	want := v1.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	var out []found
	for _, d := range im.Manifests {
		var names []string
		if n := descName(d); n != "" {
			// A bare tag ("1.0") in ref.name names nothing on its own.
			if nn, err := NormalizeName(n); err == nil && strings.ContainsAny(n, ":/") {
				names = []string{nn}
			}
		}
		switch {
		case d.MediaType.IsImage():
			if d.Platform != nil && !d.Platform.Satisfies(want) {
				continue
			}
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("OCI layout image %s: %w", d.Digest, err)
			}
			out = append(out, found{img: img, names: names})
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("OCI layout index %s: %w", d.Digest, err)
			}
			cm, err := child.IndexManifest()
			if err != nil {
				return nil, fmt.Errorf("OCI layout index %s: %w", d.Digest, err)
			}
			rawIndex, err := child.RawManifest()
			if err != nil {
				return nil, fmt.Errorf("OCI layout index %s: %w", d.Digest, err)
			}
			for _, cd := range cm.Manifests {
				if !cd.MediaType.IsImage() || (cd.Platform != nil && !cd.Platform.Satisfies(want)) {
					continue
				}
				img, err := child.Image(cd.Digest)
				if err != nil {
					return nil, fmt.Errorf("OCI layout image %s: %w", cd.Digest, err)
				}
				out = append(out, found{img: img, names: names, index: rawIndex})
				break
			}
		}
	}
	return out, nil
}

// extractLayoutArchive untars an OCI archive into dir. A layout holds only
// directories and regular files, so anything else, and any name that is
// absolute or climbs with "..", is refused.
func extractLayoutArchive(ctx context.Context, archive, dir string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("OCI archive: %w", err)
		}
		rel := path.Clean(hdr.Name)
		if strings.HasPrefix(hdr.Name, "/") || rel == ".." || strings.HasPrefix(rel, "../") {
			return fmt.Errorf("OCI archive entry %q: path escapes the archive: %w", hdr.Name, errdefs.ErrInvalidArgument)
		}
		dst := filepath.Join(dir, filepath.FromSlash(rel))
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			// Only dirs and files were created, so no symlink can redirect this.
			out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
			if err != nil {
				return fmt.Errorf("OCI archive entry %q: %w", hdr.Name, err)
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("OCI archive entry %q: %w", hdr.Name, err)
			}
		default:
			return fmt.Errorf("OCI archive entry %q: type %q does not belong in an OCI layout: %w", hdr.Name, hdr.Typeflag, errdefs.ErrInvalidArgument)
		}
	}
}
