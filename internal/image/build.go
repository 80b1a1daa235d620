package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
)

// BuildOptions describe the image Build makes.
type BuildOptions struct {
	Tag        string // NAME[:TAG]; required
	Entrypoint []string
	Cmd        []string
	Env        []string // K=V; PATH gets a default when not given
	WorkingDir string
	User       string
	Labels     map[string]string
	// ExposedPorts are "PORT[/PROTO]" (tcp when omitted); informational.
	ExposedPorts []string
	// Created is recorded in the config. The zero value means the Unix
	// epoch, which keeps builds reproducible.
	Created time.Time
	// Progress, when set, is told how many file bytes have been archived.
	Progress Progress
	// Warn, when set, hears what the build left out (device nodes under /dev).
	Warn func(msg string)
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Build makes a one-layer OCI image whose root filesystem is the content of
// dir, and stores it under opts.Tag. The same directory content (names,
// data, modes, owners, link targets) and options give the same digest:
// entries are archived in sorted order with fixed times, so copying the
// directory or touching its files does not change the image. Device nodes
// under dev/ are left out with a warning (a debootstrap rootfs has them;
// the runtime provides /dev); elsewhere they are refused, as are sockets.
func (s *Store) Build(ctx context.Context, dir string, opts BuildOptions) (Image, error) {
	tag, err := NormalizeName(opts.Tag)
	if err != nil {
		return Image{}, fmt.Errorf("build %s: %w", dir, err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return Image{}, fmt.Errorf("build %s: %w", dir, err)
	}
	if !st.IsDir() {
		return Image{}, fmt.Errorf("build %s: not a directory: %w", dir, errdefs.ErrInvalidArgument)
	}
	layerFile, err := s.archiveDir(ctx, dir, opts.Progress, opts.Warn)
	if err != nil {
		return Image{}, fmt.Errorf("build %s: %w", dir, err)
	}
	defer os.Remove(layerFile)
	layer, err := tarball.LayerFromFile(layerFile, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return Image{}, fmt.Errorf("build %s: layer: %w", dir, err)
	}
	created := opts.Created.UTC()
	if opts.Created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "berth image build"},
	})
	if err != nil {
		return Image{}, fmt.Errorf("build %s: %w", dir, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("build %s: config: %w", dir, err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: created}
	env := append([]string(nil), opts.Env...)
	hasPath := false
	for _, e := range env {
		hasPath = hasPath || strings.HasPrefix(e, "PATH=")
	}
	if !hasPath {
		env = append([]string{defaultPath}, env...)
	}
	cf.Config = v1.Config{
		Entrypoint: opts.Entrypoint,
		Cmd:        opts.Cmd,
		Env:        env,
		WorkingDir: opts.WorkingDir,
		User:       opts.User,
		Labels:     opts.Labels,
	}
	for _, p := range opts.ExposedPorts {
		if !strings.Contains(p, "/") {
			p += "/tcp"
		}
		if cf.Config.ExposedPorts == nil {
			cf.Config.ExposedPorts = map[string]struct{}{}
		}
		cf.Config.ExposedPorts[p] = struct{}{}
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return Image{}, fmt.Errorf("build %s: config: %w", dir, err)
	}
	out, err := s.put(ctx, img, []string{tag}, nil)
	if err != nil {
		return Image{}, fmt.Errorf("build %s: %w", dir, err)
	}
	return out, nil
}

// archiveDir writes dir as a gzipped, reproducible tar to a temp file.
func (s *Store) archiveDir(ctx context.Context, dir string, progress Progress, warn func(string)) (string, error) {
	entries, total, err := buildEntries(dir, warn)
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "build.*.tar.gz")
	if err != nil {
		return "", err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	zw := gzip.NewWriter(f) // no name or time in the header: reproducible
	tw := tar.NewWriter(zw)
	seen := map[inode]string{}
	var done int64
	for i, e := range entries {
		if i%64 == 0 {
			if err := ctx.Err(); err != nil {
				return "", err
			}
		}
		hdr, err := buildHeader(dir, e, seen)
		if err != nil {
			return "", err
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", fmt.Errorf("%s: %w", e.rel, err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		src, err := os.Open(filepath.Join(dir, e.rel))
		if err != nil {
			return "", err
		}
		n, err := io.Copy(tw, src)
		src.Close()
		if err != nil {
			return "", fmt.Errorf("%s: %w", e.rel, err)
		}
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	if err := tw.Close(); err != nil {
		return "", err
	}
	if err := zw.Close(); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	ok = true
	return f.Name(), nil
}

// buildEntry is a file of a directory being built into an image.
type buildEntry struct {
	rel string
	fi  fs.FileInfo
}

type inode struct{ dev, ino uint64 }

// buildEntries lists what an image built from dir holds, in a stable
// order, and the bytes of its regular files. Device nodes under /dev are
// left out (warned of): the runtime provides /dev.
func buildEntries(dir string, warn func(string)) ([]buildEntry, int64, error) {
	var entries []buildEntry
	var total int64
	var skipped []string
	// WalkDir visits in lexical order, which makes the archive order stable.
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		switch m := fi.Mode(); {
		case m&fs.ModeDevice != 0 && strings.HasPrefix(filepath.ToSlash(rel), "dev/"):
			skipped = append(skipped, filepath.ToSlash(rel))
			return nil
		case m&fs.ModeDevice != 0:
			return fmt.Errorf("%s is a device node: images may not carry device nodes: %w", p, errdefs.ErrInvalidArgument)
		case m&fs.ModeSocket != 0:
			return fmt.Errorf("%s is a socket, which cannot be archived: %w", p, errdefs.ErrInvalidArgument)
		case m.IsRegular():
			total += fi.Size()
		}
		entries = append(entries, buildEntry{filepath.ToSlash(rel), fi})
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	if len(skipped) > 0 && warn != nil {
		warn(fmt.Sprintf("left out %d device nodes under /dev (%s): the runtime provides /dev", len(skipped), strings.Join(skipped, ", ")))
	}
	return entries, total, nil
}

// buildHeader is e's tar header, reproducible (no times, no owner
// names); a file seen before by its inode is a hard link to it.
func buildHeader(dir string, e buildEntry, seen map[inode]string) (*tar.Header, error) {
	link := ""
	if e.fi.Mode()&fs.ModeSymlink != 0 {
		var err error
		if link, err = os.Readlink(filepath.Join(dir, e.rel)); err != nil {
			return nil, err
		}
	}
	hdr, err := tar.FileInfoHeader(e.fi, link)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", e.rel, err)
	}
	hdr.Name = e.rel
	if e.fi.IsDir() {
		hdr.Name += "/"
	}
	hdr.Uname, hdr.Gname = "", ""
	hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = time.Unix(0, 0), time.Time{}, time.Time{}
	hdr.Format = tar.FormatPAX
	sys, _ := e.fi.Sys().(*syscall.Stat_t)
	if sys != nil {
		hdr.Uid, hdr.Gid = int(sys.Uid), int(sys.Gid)
		if e.fi.Mode().IsRegular() && sys.Nlink > 1 {
			key := inode{uint64(sys.Dev), sys.Ino}
			if first, ok := seen[key]; ok {
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
			} else {
				seen[key] = e.rel
			}
		}
	}
	return hdr, nil
}
