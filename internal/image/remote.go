package image

// Images that travel between stores (a registry push, an agent's pull)
// arrive blob by blob, before the manifest that refers to them. gc deletes
// every blob in blobs/ that no indexed image names, so arriving blobs wait
// in staged/sha256/<hex>, where gc does not look, until CommitManifest
// moves them into blobs/ under the store lock. Staged blobs nobody commits
// are removed by PruneStaging.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/api/errdefs"
)

// Media types CommitManifest accepts. berth stores single-platform images
// only, so indexes are refused; foreign (non-distributable) layers too, as
// their content is not in the registry.
var (
	manifestTypes = map[types.MediaType]bool{types.OCIManifestSchema1: true, types.DockerManifestSchema2: true}
	configTypes   = map[types.MediaType]bool{types.OCIConfigJSON: true, types.DockerConfigJSON: true}
	layerTypes    = map[types.MediaType]bool{
		types.OCILayer: true, types.OCILayerZStd: true, types.OCIUncompressedLayer: true,
		types.DockerLayer: true, types.DockerUncompressedLayer: true,
	}
)

// maxConfigSize bounds image configs, which are read whole into memory.
const maxConfigSize = 8 << 20

// IsManifestType reports whether CommitManifest stores manifests of type mt.
func IsManifestType(mt types.MediaType) bool { return manifestTypes[mt] }

func (s *Store) stagedPath(h v1.Hash) string {
	return filepath.Join(s.root, "staged", h.Algorithm, h.Hex)
}

func (s *Store) blobLockPath(h v1.Hash) string {
	return filepath.Join(s.root, "locks", "blob-"+h.Hex)
}

// remoteDirs creates the directories of this file's features; Open predates them.
func (s *Store) remoteDirs() error {
	for _, d := range []string{"staged/sha256", "uploads"} {
		if err := os.MkdirAll(filepath.Join(s.root, d), 0o700); err != nil {
			return fmt.Errorf("image store %s: %w", s.root, err)
		}
	}
	return nil
}

// CheckDigest returns an error wrapping errdefs.ErrInvalidArgument unless h
// is a well-formed sha256 digest, the only kind the store keeps. Digests
// become file names, so nothing else may reach the file system.
func CheckDigest(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 || !hexRe().MatchString(h.Hex) {
		return fmt.Errorf("digest %q: want sha256:<64 lowercase hex digits>: %w", h.String(), errdefs.ErrInvalidArgument)
	}
	return nil
}

// Digest returns the sha256 digest of data.
func Digest(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

// OpenBlob opens the blob digest, committed or staged, for reading. The
// open file stays readable even if the blob is removed meanwhile.
func (s *Store) OpenBlob(digest v1.Hash) (*os.File, error) {
	if err := CheckDigest(digest); err != nil {
		return nil, err
	}
	// blobs/ again last: a commit may move the blob between the first two looks.
	for _, p := range []string{s.blobPath(digest), s.stagedPath(digest), s.blobPath(digest)} {
		f, err := os.Open(p)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("blob %s: %w", digest, err)
		}
	}
	return nil, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
}

// FetchBlob makes sure the store holds blob d until a manifest naming it is
// committed (or PruneStaging finds it stale). When the store lacks it, open
// is called for its content, which must match d's digest and size or
// nothing is kept; progress, when set, is told the bytes received so far.
// Concurrent calls for one blob, in any process, fetch it once: the others
// wait and then find it. fetched reports whether this call read it.
func (s *Store) FetchBlob(ctx context.Context, d v1.Descriptor, open func(context.Context) (io.ReadCloser, error), progress func(done int64)) (fetched bool, err error) {
	if err := CheckDigest(d.Digest); err != nil {
		return false, err
	}
	if d.Size < 0 {
		return false, fmt.Errorf("blob %s: size %d: %w", d.Digest, d.Size, errdefs.ErrInvalidArgument)
	}
	if err := s.remoteDirs(); err != nil {
		return false, err
	}
	unlock, err := flockCtx(ctx, s.blobLockPath(d.Digest))
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer unlock()
	if s.pin(d.Digest) {
		return false, nil
	}
	rc, err := open(ctx)
	if err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	if err := s.receive(ctx, rc, d, progress); err != nil {
		return false, fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	return true, nil
}

// pin reports whether blob h is staged, staging a hard link to it when it
// is committed: an image removed meanwhile takes its blobs with it, but
// not the link. The caller holds the blob's lock.
func (s *Store) pin(h v1.Hash) bool {
	staged := s.stagedPath(h)
	now := time.Now()
	if _, err := os.Stat(staged); err == nil {
		// Fresh again, so PruneStaging leaves it to the commit that needs it.
		_ = os.Chtimes(staged, now, now)
		return true
	}
	if err := os.Link(s.blobPath(h), staged); err != nil && !errors.Is(err, os.ErrExist) {
		return false
	}
	_ = os.Chtimes(staged, now, now)
	return true
}

// receive writes r, which must be exactly d, to staged/ through a temp file.
func (s *Store) receive(ctx context.Context, r io.Reader, d v1.Descriptor, progress func(int64)) error {
	f, err := os.CreateTemp(filepath.Join(s.root, "tmp"), "fetch.*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	h := newHasher()
	var w io.Writer = io.MultiWriter(f, h)
	if progress != nil {
		var done int64
		w = io.MultiWriter(w, progressWriter(func(n int64) { done += n; progress(done) }))
	}
	// One byte over the size is enough to know the source lies.
	// Large reads: fewer syscalls and hash calls per byte than io.Copy's 32 KiB.
	n, err := io.CopyBuffer(w, io.LimitReader(ctxReader{ctx, r}, d.Size+1), make([]byte, 1<<20))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if n != d.Size {
		return fmt.Errorf("received %d bytes, want %d: %w", n, d.Size, errdefs.ErrInvalidArgument)
	}
	if got := h.sum(); got != d.Digest {
		return fmt.Errorf("content is %s, want %s: %w", got, d.Digest, errdefs.ErrInvalidArgument)
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), s.stagedPath(d.Digest))
}

// Unstage removes the staged copy of blob h (not a committed blob), for a
// fetch that will not be committed after all.
func (s *Store) Unstage(h v1.Hash) error {
	if err := CheckDigest(h); err != nil {
		return err
	}
	unlock, err := flock(s.blobLockPath(h), true)
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	defer unlock()
	if err := ignoreNotExist(os.Remove(s.stagedPath(h))); err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

// flockCtx takes the lock at path, waiting for it no longer than ctx lasts.
func flockCtx(ctx context.Context, path string) (func(), error) {
	if unlock, err := flock(path, false); err == nil {
		return unlock, nil
	} else if !errors.Is(err, unix.EWOULDBLOCK) {
		return nil, err
	}
	type result struct {
		unlock func()
		err    error
	}
	ch := make(chan result, 1)
	go func() {
		u, err := flock(path, true)
		ch <- result{u, err}
	}()
	select {
	case r := <-ch:
		return r.unlock, r.err
	case <-ctx.Done():
		// The waiter lets go as soon as it gets the lock.
		go func() {
			if r := <-ch; r.err == nil {
				r.unlock()
			}
		}()
		return nil, ctx.Err()
	}
}

// CommitManifest stores the image manifest raw, of media type mt (or the
// type raw declares when mt is empty), whose config and layers must be in
// the store already (staged by FetchBlob or an Upload, or committed). With a
// name ("repository:tag") the name moves to the image; without, the image
// is recorded unnamed unless its digest is already there. Errors wrap
// errdefs.ErrInvalidArgument for a manifest berth cannot store, and
// ErrNotFound when a blob it names is missing.
func (s *Store) CommitManifest(ctx context.Context, raw []byte, mt types.MediaType, name string) (Image, error) {
	digest := Digest(raw)
	m, mt, err := parseImageManifest(raw, mt)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if name != "" {
		if name, err = NormalizeName(name); err != nil {
			return Image{}, err
		}
	}
	if err := s.remoteDirs(); err != nil {
		return Image{}, err
	}
	if err := s.commitBlobs(ctx, m, raw, mt, digest); err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	if name == "" {
		return s.Resolve(ctx, digest.String())
	}
	// put names the image exactly as a build or import would; everything
	// it copies is in blobs/ by now, and the unnamed index entry made above
	// keeps gc away in between.
	img, err := layout.Path(s.root).Image(digest)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	out, err := s.put(ctx, img, []string{name}, nil)
	if err != nil {
		return Image{}, fmt.Errorf("manifest %s: %w", digest, err)
	}
	return out, nil
}

// commitBlobs moves m's blobs from staged/ to blobs/, writes the manifest
// and indexes it (unnamed) unless it is there already. Everything is
// checked before anything moves, so a refused manifest costs the client
// none of the blobs it pushed.
func (s *Store) commitBlobs(ctx context.Context, m *v1.Manifest, raw []byte, mt types.MediaType, digest v1.Hash) (err error) {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	paths := make([]string, len(blobs))
	for i, d := range blobs {
		if paths[i], err = s.findBlob(d); err != nil {
			return err
		}
	}
	if err := checkConfig(paths[0], m); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Blobs moved before the failure belong to no image.
			err = errors.Join(err, s.gc(context.WithoutCancel(ctx)))
		}
	}()
	for i, d := range blobs {
		if paths[i] == s.blobPath(d.Digest) {
			err = ignoreNotExist(os.Remove(s.stagedPath(d.Digest)))
		} else {
			err = os.Rename(paths[i], s.blobPath(d.Digest))
		}
		if err != nil {
			return fmt.Errorf("blob %s: %w", d.Digest, err)
		}
	}
	if err := s.putBytes(raw, digest); err != nil {
		return err
	}
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	for _, d := range idx.Manifests {
		if d.Digest == digest {
			return nil
		}
	}
	idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Digest: digest, Size: int64(len(raw))})
	return s.writeIndex(idx)
}

// findBlob returns where blob d is, committed or staged, after checking its
// size against d's. The caller holds the store lock, so nothing removes
// blobs/ entries meanwhile.
func (s *Store) findBlob(d v1.Descriptor) (string, error) {
	for _, p := range []string{s.blobPath(d.Digest), s.stagedPath(d.Digest)} {
		st, err := os.Stat(p)
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return "", fmt.Errorf("blob %s: %w", d.Digest, err)
		}
		if st.Size() != d.Size {
			return "", fmt.Errorf("blob %s is %d bytes, the manifest says %d: %w", d.Digest, st.Size(), d.Size, errdefs.ErrInvalidArgument)
		}
		return p, nil
	}
	return "", fmt.Errorf("blob %s: %w", d.Digest, ErrNotFound)
}

// checkConfig checks the config at path against m: a config the store
// would fail to load later is refused now.
func checkConfig(path string, m *v1.Manifest) error {
	rawCfg, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config %s: %w", m.Config.Digest, err)
	}
	cf, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return fmt.Errorf("config %s: %w: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("config %s: %d diff IDs for %d layers: %w", m.Config.Digest, len(cf.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	for _, id := range cf.RootFS.DiffIDs {
		// Diff IDs name the unpacked layer directories.
		if err := CheckDigest(id); err != nil {
			return fmt.Errorf("config %s: diff ID: %w", m.Config.Digest, err)
		}
	}
	return nil
}

// MaxLayers bounds an image's layers, as Docker's does (127): each costs
// a fetch, a directory and an overlay lower layer, so a hostile manifest
// of thousands of layers is refused before any is fetched.
const MaxLayers = 127

// CheckLayers refuses a manifest of more than MaxLayers layers.
func CheckLayers(m *v1.Manifest) error {
	if n := len(m.Layers); n > MaxLayers {
		return fmt.Errorf("%d layers, more than %d (image.MaxLayers): %w", n, MaxLayers, errdefs.ErrInvalidArgument)
	}
	return nil
}

// parseImageManifest checks that raw is an image manifest berth can store
// and returns it with its media type.
func parseImageManifest(raw []byte, mt types.MediaType) (*v1.Manifest, types.MediaType, error) {
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     types.MediaType `json:"mediaType"`
	}
	if err := json.Unmarshal(raw, &probe); err != nil {
		return nil, "", fmt.Errorf("not JSON: %w: %w", err, errdefs.ErrInvalidArgument)
	}
	switch {
	case mt == "":
		mt = probe.MediaType
	case probe.MediaType != "" && probe.MediaType != mt:
		return nil, "", fmt.Errorf("sent as %s but declares %s: %w", mt, probe.MediaType, errdefs.ErrInvalidArgument)
	}
	if !manifestTypes[mt] {
		return nil, "", fmt.Errorf("media type %q is not an image manifest (only single-platform OCI and Docker v2 images are stored): %w", mt, errdefs.ErrInvalidArgument)
	}
	if probe.SchemaVersion != 2 {
		return nil, "", fmt.Errorf("schema version %d, want 2: %w", probe.SchemaVersion, errdefs.ErrInvalidArgument)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return nil, "", fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if !configTypes[m.Config.MediaType] {
		return nil, "", fmt.Errorf("config media type %q: %w", m.Config.MediaType, errdefs.ErrInvalidArgument)
	}
	if m.Config.Size > maxConfigSize {
		return nil, "", fmt.Errorf("config is %d bytes, more than %d: %w", m.Config.Size, maxConfigSize, errdefs.ErrInvalidArgument)
	}
	if err := CheckLayers(m); err != nil {
		return nil, "", err
	}
	for i, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		what := "config"
		if i > 0 {
			what = fmt.Sprintf("layer %d", i-1)
			if !layerTypes[d.MediaType] {
				return nil, "", fmt.Errorf("%s: media type %q is not a layer berth can unpack: %w", what, d.MediaType, errdefs.ErrInvalidArgument)
			}
		}
		if err := CheckDigest(d.Digest); err != nil {
			return nil, "", fmt.Errorf("%s: %w", what, err)
		}
		if d.Size < 0 {
			return nil, "", fmt.Errorf("%s: size %d: %w", what, d.Size, errdefs.ErrInvalidArgument)
		}
	}
	return m, mt, nil
}

// Manifest returns the manifest, its media type and digest of the image
// named exactly ref ("repository:tag") or whose manifest digest is ref
// ("sha256:<hex>"); unlike Resolve it takes no prefixes and adds no tag.
func (s *Store) Manifest(ctx context.Context, ref string) ([]byte, types.MediaType, v1.Hash, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, "", v1.Hash{}, err
	}
	h, herr := v1.NewHash(ref)
	for _, d := range idx.Manifests {
		if err := ctx.Err(); err != nil {
			return nil, "", v1.Hash{}, err
		}
		if (herr == nil && d.Digest == h) || (herr != nil && descName(d) == ref) {
			raw, err := os.ReadFile(s.blobPath(d.Digest))
			if err != nil {
				return nil, "", v1.Hash{}, fmt.Errorf("image %s: manifest: %w", ref, err)
			}
			mt := d.MediaType
			if mt == "" {
				_, mt, err = parseImageManifest(raw, "")
				if err != nil {
					return nil, "", v1.Hash{}, fmt.Errorf("image %s: %w", ref, err)
				}
			}
			return raw, mt, d.Digest, nil
		}
	}
	return nil, "", v1.Hash{}, fmt.Errorf("image %s: %w", ref, ErrNotFound)
}

// Names returns the names ("repository:tag") of the stored images, sorted.
func (s *Store) Names(ctx context.Context) ([]string, error) {
	idx, err := s.readIndex()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range idx.Manifests {
		if n := descName(d); n != "" {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, ctx.Err()
}

// OCIImage returns the stored image ref (as Resolve finds it) as a v1.Image
// reading from the store, for copying it elsewhere.
func (s *Store) OCIImage(ctx context.Context, ref string) (v1.Image, Image, error) {
	img, err := s.Resolve(ctx, ref)
	if err != nil {
		return nil, Image{}, err
	}
	h, err := v1.NewHash(img.Digest)
	if err != nil {
		return nil, Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	// The store root is an OCI image layout, so the library reads it.
	oimg, err := layout.Path(s.root).Image(h)
	if err != nil {
		return nil, Image{}, fmt.Errorf("image %s: %w", ref, err)
	}
	return oimg, img, nil
}

// PruneStaging removes staged blobs no manifest committed and upload
// sessions nobody wrote to for longer than olderThan, and the locks of
// blobs nobody is fetching.
func (s *Store) PruneStaging(ctx context.Context, olderThan time.Duration) error {
	if err := s.remoteDirs(); err != nil {
		return err
	}
	cutoff := time.Now().Add(-olderThan)
	var errs []error
	stale := func(dir string, each func(e os.DirEntry)) {
		entries, err := os.ReadDir(dir)
		if err != nil {
			errs = append(errs, err)
			return
		}
		for _, e := range entries {
			if ctx.Err() != nil {
				return
			}
			if fi, err := e.Info(); err == nil && fi.ModTime().Before(cutoff) {
				each(e)
			}
		}
	}
	stale(filepath.Join(s.root, "staged", "sha256"), func(e os.DirEntry) {
		h := v1.Hash{Algorithm: "sha256", Hex: e.Name()}
		// Under the blob's lock, so a FetchBlob pinning it now wins.
		if unlock, err := flock(s.blobLockPath(h), false); err == nil {
			p := filepath.Join(s.root, "staged", "sha256", e.Name())
			if fi, err := os.Stat(p); err == nil && fi.ModTime().Before(cutoff) {
				errs = append(errs, ignoreNotExist(os.Remove(p)))
			}
			unlock()
		}
	})
	stale(filepath.Join(s.root, "uploads"), func(e os.DirEntry) {
		if id, ok := strings.CutSuffix(e.Name(), ".state"); ok && uploadIDRe().MatchString(id) {
			return // goes with its data file
		}
		errs = append(errs, s.removeUploadIfIdle(e.Name()))
	})
	stale(filepath.Join(s.root, "locks"), func(e os.DirEntry) {
		hex, ok := strings.CutPrefix(e.Name(), "blob-")
		if !ok {
			return
		}
		p := filepath.Join(s.root, "locks", e.Name())
		if unlock, err := flock(p, false); err == nil {
			// A fetch that opened the old file just now may then work
			// alongside one using a new file: both write the same
			// content through atomic renames, so the cost is a second
			// download, never a torn blob.
			if _, err := os.Stat(s.stagedPath(v1.Hash{Algorithm: "sha256", Hex: hex})); errors.Is(err, os.ErrNotExist) {
				errs = append(errs, ignoreNotExist(os.Remove(p)))
			}
			unlock()
		}
	})
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("prune staging in %s: %w", s.root, err)
	}
	return ctx.Err()
}

// Tag names the image src (as Resolve finds it) dst ("repository[:tag]"),
// moving dst from the image it named before.
func (s *Store) Tag(ctx context.Context, src, dst string) (Image, error) {
	img, err := s.Resolve(ctx, src)
	if err != nil {
		return Image{}, err
	}
	raw, mt, _, err := s.Manifest(ctx, img.Digest)
	if err != nil {
		return Image{}, fmt.Errorf("tag %s: %w", src, err)
	}
	out, err := s.CommitManifest(ctx, raw, mt, dst)
	if err != nil {
		return Image{}, fmt.Errorf("tag %s as %s: %w", src, dst, err)
	}
	return out, nil
}
