package image

// Multi-arch indexes. The store keeps single-platform images, but a
// cluster pins a service to the index digest, so that nodes of every
// architecture run the same release. The index itself is kept beside the
// images, in indexes/sha256/<hex> (outside blobs/, where gc would remove
// it), and a digest that names one resolves to the image the index lists
// for this node's platform. gc removes an index once none of its images
// is in the store.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
)

func (s *Store) indexFile(h v1.Hash) string {
	return filepath.Join(s.root, "indexes", h.Algorithm, h.Hex)
}

// PutIndex keeps the image index raw and returns its digest.
func (s *Store) PutIndex(raw []byte) (v1.Hash, error) {
	h := Digest(raw)
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return h, fmt.Errorf("index %s: %w: %w", h, err, errdefs.ErrInvalidArgument)
	}
	for _, d := range idx.Manifests {
		if err := CheckDigest(d.Digest); err != nil {
			return h, fmt.Errorf("index %s: %w", h, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(s.indexFile(h)), 0o700); err != nil {
		return h, err
	}
	if err := s.replaceFile(s.indexFile(h), raw, true); err != nil {
		return h, fmt.Errorf("index %s: %w", h, err)
	}
	return h, nil
}

// Index returns the index of digest h kept by PutIndex.
func (s *Store) Index(h v1.Hash) ([]byte, error) {
	if err := CheckDigest(h); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(s.indexFile(h))
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("index %s: %w", h, ErrNotFound)
	}
	return raw, err
}

// indexChild returns, for a digest that names a kept index, the digest of
// the image it lists for this node's platform.
func (s *Store) indexChild(ref string) (string, error) {
	h, err := v1.NewHash(ref)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	raw, err := s.Index(h)
	if err != nil {
		return "", fmt.Errorf("image %q: %w", ref, ErrNotFound)
	}
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return "", fmt.Errorf("index %s: %w", h, err)
	}
	d, err := ChoosePlatform(idx, NodePlatform())
	if err != nil {
		return "", fmt.Errorf("index %s: %w", h, err)
	}
	return d.Digest.String(), nil
}

// gcIndexes removes the kept indexes none of whose images is indexed.
func (s *Store) gcIndexes(idx *v1.IndexManifest) error {
	dir := filepath.Join(s.root, "indexes", "sha256")
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	have := map[v1.Hash]bool{}
	for _, d := range idx.Manifests {
		have[d.Digest] = true
	}
	var errs []error
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keep := false
		if ii, err := v1.ParseIndexManifest(bytes.NewReader(raw)); err == nil {
			for _, d := range ii.Manifests {
				keep = keep || have[d.Digest]
			}
		}
		if !keep {
			errs = append(errs, os.Remove(filepath.Join(dir, e.Name())))
		}
	}
	return errors.Join(errs...)
}

// IndexOf returns the newest kept index that lists the image digest.
func (s *Store) IndexOf(digest v1.Hash) (v1.Hash, bool) {
	dir := filepath.Join(s.root, "indexes", "sha256")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return v1.Hash{}, false
	}
	var best v1.Hash
	var bestTime int64
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		ii, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			continue
		}
		for _, d := range ii.Manifests {
			if d.Digest != digest {
				continue
			}
			info, err := e.Info()
			if err == nil && info.ModTime().UnixNano() >= bestTime {
				best, bestTime = Digest(raw), info.ModTime().UnixNano()
			}
		}
	}
	return best, best.Hex != ""
}
