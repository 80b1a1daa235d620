// Package image is berth's image store: a content-addressed OCI store on
// disk, imports (OCI layout dirs, OCI archives, docker-save tarballs),
// deterministic builds from a rootfs directory, and the read-only unpacked
// layers that containers stack with overlayfs.
//
// Layout under the store root (itself a valid OCI image layout):
//
//	oci-layout, index.json     names → manifest digests (ref.name annotations)
//	blobs/sha256/<hex>         manifests, configs, compressed layers
//	layers/<diffid hex>/       one unpacked layer, shared and never modified
//	uses/<container>.json      which container uses which image (survives restarts of
//	                           berth; written unsynced, so not always a host crash)
//	locks/, tmp/               per-layer unpack locks; staging for atomic writes
//
// Every write lands in tmp/ (or a layers/.tmp-* dir) and is renamed into
// place, and index.json is replaced last, so a crash never leaves a half
// image visible. Metadata changes take an flock on <root>/lock, so several
// berth processes can share one store.
package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
)

// ErrNotFound is wrapped, with the reference, when no image matches.
var ErrNotFound = errdefs.ErrNotFound

// ErrInUse is wrapped when an image cannot be removed because containers use it.
var ErrInUse = fmt.Errorf("image in use: %w", errdefs.ErrFailedPrecondition)

// Annotations naming an image in index.json. berth writes the full
// reference in both; on import it prefers the containerd one.
const (
	annotationRefName        = "org.opencontainers.image.ref.name"
	annotationContainerdName = "io.containerd.image.name"
)

// Store is an image store rooted at one directory. It is safe for
// concurrent use by goroutines and by processes.
type Store struct {
	root    string
	unpacks atomic.Int64 // layers unpacked by this Store; tests read it

	mu sync.Mutex
	// loaded caches what load reads, by manifest digest. Blobs are content
	// addressed, so an entry never goes stale; gc drops the entries of
	// images no longer indexed.
	loaded map[v1.Hash]Image
}

// Image describes one stored image.
type Image struct {
	// Name is "repository:tag"; empty for an image imported without one.
	Name string `json:"name,omitempty"`
	// Digest is the manifest digest, "sha256:<hex>".
	Digest string      `json:"digest"`
	Config ImageConfig `json:"config"`
	Layers []Layer     `json:"layers"`
	// Size is the sum of the compressed layer sizes in bytes.
	Size         int64     `json:"size"`
	Created      time.Time `json:"created"`
	OS           string    `json:"os,omitempty"`
	Architecture string    `json:"architecture,omitempty"`
}

// ImageConfig is the part of the OCI image config a container starts from.
type ImageConfig struct {
	Entrypoint   []string          `json:"entrypoint,omitempty"`
	Cmd          []string          `json:"cmd,omitempty"`
	Env          []string          `json:"env,omitempty"`
	WorkingDir   string            `json:"workingDir,omitempty"`
	User         string            `json:"user,omitempty"`
	ExposedPorts []string          `json:"exposedPorts,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Layer is one layer of an image: Digest names the compressed blob, DiffID
// the uncompressed tar (and the unpacked directory).
type Layer struct {
	Digest string `json:"digest"`
	DiffID string `json:"diffID"`
	Size   int64  `json:"size"`
}

// Open opens (creating if needed) the store rooted at root.
func Open(root string) (*Store, error) {
	for _, d := range []string{"blobs/sha256", "layers", "uses", "locks", "tmp", "empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o700); err != nil {
			return nil, fmt.Errorf("image store %s: %w", root, err)
		}
	}
	// Layers must be traversable by containers running as non-root users.
	for _, d := range []string{".", "layers", "empty"} {
		if err := os.Chmod(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("image store %s: %w", root, err)
		}
	}
	s := &Store{root: root}
	layoutFile := filepath.Join(root, "oci-layout")
	if _, err := os.Stat(layoutFile); errors.Is(err, os.ErrNotExist) {
		if err := s.writeFile(layoutFile, []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat(s.indexPath()); errors.Is(err, os.ErrNotExist) {
		if err := s.writeIndex(&v1.IndexManifest{}); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Root is the directory the store lives in.
func (s *Store) Root() string { return s.root }

func (s *Store) indexPath() string { return filepath.Join(s.root, "index.json") }

func (s *Store) blobPath(h v1.Hash) string {
	return filepath.Join(s.root, "blobs", h.Algorithm, h.Hex)
}

// lock takes the store-wide metadata lock. flock locks belong to the open
// file description, so this excludes other goroutines as well as processes.
func (s *Store) lock() (func(), error) {
	return flock(filepath.Join(s.root, "lock"), true)
}

func flock(path string, wait bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	how := unix.LOCK_EX
	if !wait {
		how |= unix.LOCK_NB
	}
	for {
		err = unix.Flock(int(f.Fd()), how)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// writeFile replaces path atomically with data, syncing the data before
// the rename so that after a crash the name holds either the old content
// or the new, never an empty or partial file.
func (s *Store) writeFile(path string, data []byte) error {
	return s.replaceFile(path, data, true)
}

// replaceFile replaces path atomically with data; durable says whether to
// sync the data first (see writeFile). Without it, running processes still
// see the old content or the new, but a host crash may leave the name
// empty or partly written: only for files whose readers cope with that.
func (s *Store) replaceFile(path string, data []byte, durable bool) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(data)
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(f.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func (s *Store) readIndex() (*v1.IndexManifest, error) {
	data, err := os.ReadFile(s.indexPath())
	if err != nil {
		return nil, fmt.Errorf("image index: %w", err)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("image index %s: %w", s.indexPath(), err)
	}
	return idx, nil
}

func (s *Store) writeIndex(idx *v1.IndexManifest) error {
	idx.SchemaVersion = 2
	idx.MediaType = types.OCIImageIndex
	if idx.Manifests == nil {
		idx.Manifests = []v1.Descriptor{}
	}
	data, err := json.MarshalIndent(idx, "", "  ")
	if err != nil {
		return fmt.Errorf("image index: %w", err)
	}
	return s.writeFile(s.indexPath(), data)
}

func descName(d v1.Descriptor) string {
	if n := d.Annotations[annotationContainerdName]; n != "" {
		return n
	}
	return d.Annotations[annotationRefName]
}

var (
	nameRe = lazyRegexp(`^[a-z0-9]+([._-]+[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-]+[a-z0-9]+)*)*:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hexRe  = lazyRegexp(`^[0-9a-f]+$`)
)

// NormalizeName returns ref as "repository:tag", adding ":latest" when it
// has no tag, or an error when it is not a valid image name.
func NormalizeName(ref string) (string, error) {
	n := ref
	if i := strings.LastIndex(n, ":"); i < 0 || strings.Contains(n[i:], "/") {
		n += ":latest"
	}
	if !nameRe().MatchString(n) {
		return "", fmt.Errorf("image name %q: want lowercase REPOSITORY[:TAG]: %w", ref, errdefs.ErrInvalidArgument)
	}
	return n, nil
}

// List returns every stored image, one per name (and one per unnamed
// digest), sorted by name then digest.
func (s *Store) List(ctx context.Context) ([]Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []Image
	for _, d := range idx.Manifests {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		img, err := s.load(d.Digest, descName(d))
		if err != nil {
			return nil, err
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Digest < out[j].Digest
	})
	return out, nil
}

// Resolve finds an image by "name[:tag]" (":latest" when omitted), full
// digest, or unique digest prefix (with or without "sha256:").
func (s *Store) Resolve(ctx context.Context, ref string) (Image, error) {
	idx, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	d, name, err := s.resolveIn(idx, ref)
	if err != nil {
		return Image{}, err
	}
	return s.load(d, name)
}

// resolveIn is the package's resolveIn, a digest that names a kept multi-arch index
// (PutIndex) standing for this node's image of it.
func (s *Store) resolveIn(idx *v1.IndexManifest, ref string) (v1.Hash, string, error) {
	d, name, err := resolveIn(idx, ref)
	if errors.Is(err, ErrNotFound) {
		if child, cerr := s.indexChild(ref); cerr == nil {
			return resolveIn(idx, child)
		}
	}
	return d, name, err
}

// resolveIn finds ref in idx and returns its digest and a name for it.
func resolveIn(idx *v1.IndexManifest, ref string) (v1.Hash, string, error) {
	if n, err := NormalizeName(ref); err == nil {
		for _, d := range idx.Manifests {
			if descName(d) == n {
				return d.Digest, n, nil
			}
		}
	}
	hex := strings.TrimPrefix(ref, "sha256:")
	if hex == "" || !hexRe().MatchString(hex) {
		return v1.Hash{}, "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	var found []v1.Descriptor
	for _, d := range idx.Manifests {
		if strings.HasPrefix(d.Digest.Hex, hex) {
			if len(found) > 0 && found[0].Digest != d.Digest {
				return v1.Hash{}, "", fmt.Errorf("image %q: digest prefix matches more than one image: %w", ref, errdefs.ErrInvalidArgument)
			}
			found = append(found, d)
		}
	}
	if len(found) == 0 {
		return v1.Hash{}, "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	return found[0].Digest, descName(found[0]), nil
}

// load reads an image's manifest and config from the blob store, or
// from the cache of what it read before, and names the image name.
func (s *Store) load(digest v1.Hash, name string) (Image, error) {
	s.mu.Lock()
	img, ok := s.loaded[digest]
	s.mu.Unlock()
	if !ok {
		var err error
		if img, err = s.loadBlobs(digest); err != nil {
			return Image{}, err
		}
		s.mu.Lock()
		if s.loaded == nil {
			s.loaded = map[v1.Hash]Image{}
		}
		s.loaded[digest] = img
		s.mu.Unlock()
	}
	img = img.clone()
	img.Name = name
	return img, nil
}

// clone copies img deeply enough that changing the copy leaves img alone.
func (img Image) clone() Image {
	img.Config.Entrypoint = slices.Clone(img.Config.Entrypoint)
	img.Config.Cmd = slices.Clone(img.Config.Cmd)
	img.Config.Env = slices.Clone(img.Config.Env)
	img.Config.ExposedPorts = slices.Clone(img.Config.ExposedPorts)
	img.Config.Labels = maps.Clone(img.Config.Labels)
	img.Layers = slices.Clone(img.Layers)
	return img
}

// loadBlobs reads an image's manifest and config from the blob store.
func (s *Store) loadBlobs(digest v1.Hash) (Image, error) {
	raw, err := os.ReadFile(s.blobPath(digest))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: manifest: %w", digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: manifest: %w", digest, err)
	}
	rawCfg, err := os.ReadFile(s.blobPath(m.Config.Digest))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: config: %w", digest, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return Image{}, fmt.Errorf("image %s: config: %w", digest, err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return Image{}, fmt.Errorf("image %s: %d layers but %d diff IDs in the config", digest, len(m.Layers), len(cf.RootFS.DiffIDs))
	}
	img := Image{
		Digest:       digest.String(),
		Created:      cf.Created.Time,
		OS:           cf.OS,
		Architecture: cf.Architecture,
		Config: ImageConfig{
			Entrypoint: cf.Config.Entrypoint,
			Cmd:        cf.Config.Cmd,
			Env:        cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir,
			User:       cf.Config.User,
			Labels:     cf.Config.Labels,
		},
	}
	for p := range cf.Config.ExposedPorts {
		img.Config.ExposedPorts = append(img.Config.ExposedPorts, p)
	}
	sort.Strings(img.Config.ExposedPorts)
	for i, l := range m.Layers {
		img.Layers = append(img.Layers, Layer{Digest: l.Digest.String(), DiffID: cf.RootFS.DiffIDs[i].String(), Size: l.Size})
		img.Size += l.Size
	}
	return img, nil
}

// Remove deletes the name ref, or every name of the digest ref. The image
// itself goes when no name is left; while containers use it that is
// refused (the error names them) unless force is set. Unpacked layers a
// container still uses stay until it is released.
func (s *Store) Remove(ctx context.Context, ref string, force bool) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	digest, name, err := resolveIn(idx, ref)
	if err != nil {
		return err
	}
	byName := name != "" && func() bool { n, err := NormalizeName(ref); return err == nil && n == name }()
	var keep []v1.Descriptor
	remaining := 0
	for _, d := range idx.Manifests {
		drop := d.Digest == digest && (!byName || descName(d) == name)
		if drop {
			continue
		}
		if d.Digest == digest {
			remaining++
		}
		keep = append(keep, d)
	}
	if remaining == 0 && !force {
		users, err := s.users(digest)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return fmt.Errorf("image %s (%s) is used by container(s) %s (remove them first, or use --force): %w",
				ref, digest.Hex[:12], strings.Join(users, ", "), ErrInUse)
		}
	}
	idx.Manifests = keep
	if err := s.writeIndex(idx); err != nil {
		return err
	}
	if remaining > 0 {
		return nil
	}
	return s.gc(ctx)
}

// gc removes blobs and unpacked layers that no indexed image and no
// container refers to. The caller holds the store lock.
func (s *Store) gc(ctx context.Context) error {
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	blobs := map[string]bool{}
	layers := map[string]bool{}
	s.mu.Lock()
	maps.DeleteFunc(s.loaded, func(h v1.Hash, _ Image) bool {
		return !slices.ContainsFunc(idx.Manifests, func(d v1.Descriptor) bool { return d.Digest == h })
	})
	s.mu.Unlock()
	for _, d := range idx.Manifests {
		blobs[d.Digest.Hex] = true
		img, err := s.load(d.Digest, "")
		if err != nil {
			return err
		}
		for _, l := range img.Layers {
			blobs[strings.TrimPrefix(l.Digest, "sha256:")] = true
			layers[strings.TrimPrefix(l.DiffID, "sha256:")] = true
		}
		raw, err := os.ReadFile(s.blobPath(d.Digest))
		if err != nil {
			return fmt.Errorf("image %s: %w", d.Digest, err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(raw))
		if err != nil {
			return fmt.Errorf("image %s: %w", d.Digest, err)
		}
		blobs[m.Config.Digest.Hex] = true
	}
	uses, err := s.readUses()
	if err != nil {
		return err
	}
	for _, u := range uses {
		for _, l := range u.Layers {
			layers[strings.TrimPrefix(l, "sha256:")] = true
		}
	}
	errs := []error{s.gcIndexes(idx)}
	entries, err := os.ReadDir(filepath.Join(s.root, "blobs", "sha256"))
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, e := range entries {
		if !blobs[e.Name()] {
			errs = append(errs, os.Remove(filepath.Join(s.root, "blobs", "sha256", e.Name())))
		}
	}
	entries, err = os.ReadDir(filepath.Join(s.root, "layers"))
	if err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		n := e.Name()
		if hex, ok := strings.CutPrefix(n, ".tmp-"); ok {
			// A staging dir whose layer lock is free was left by a crash.
			hex, _, _ = strings.Cut(hex, "-")
			if unlock, err := flock(s.layerLockPath(hex), false); err == nil {
				errs = append(errs, os.RemoveAll(filepath.Join(s.root, "layers", n)))
				unlock()
			}
			continue
		}
		if !layers[n] {
			errs = append(errs, os.RemoveAll(filepath.Join(s.root, "layers", n)))
			errs = append(errs, ignoreNotExist(os.Remove(s.layerLockPath(n))))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gc: %w", err)
	}
	return nil
}

func ignoreNotExist(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// copyVerified copies r to a new file and renames it to dst only when its
// sha256 matches want, so a blob's name always matches its content.
func (s *Store) copyVerified(r io.Reader, want v1.Hash, dst string, progress func(int64)) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "blob.*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := newHasher()
	w := io.MultiWriter(f, h)
	if progress != nil {
		w = io.MultiWriter(w, progressWriter(progress))
	}
	_, err = io.Copy(w, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if got := h.sum(); got != want {
		return fmt.Errorf("content is %s, want %s", got, want)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

type progressWriter func(int64)

func (p progressWriter) Write(b []byte) (int, error) {
	p(int64(len(b)))
	return len(b), nil
}

// lazyRegexp compiles expr on first use: every command of the one binary
// would otherwise compile every package's expressions at start.
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
