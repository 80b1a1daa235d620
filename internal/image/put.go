package image

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Progress is called as bytes are processed: done of total so far.
type Progress func(done, total int64)

type hasher struct{ hash.Hash }

func newHasher() hasher { return hasher{sha256.New()} }

func (h hasher) sum() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}
}

// put copies img's blobs into the store (layers first, the manifest last)
// and then points names at it in index.json. With no names the image is
// recorded unnamed unless the digest is already there.
func (s *Store) put(ctx context.Context, img v1.Image, names []string, progress Progress) (Image, error) {
	digest, err := img.Digest()
	if err != nil {
		return Image{}, fmt.Errorf("image digest: %w", err)
	}
	// Held throughout: gc deletes blobs no index entry refers to yet.
	unlock, err := s.lock()
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	m, err := img.Manifest()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: manifest: %w", digest, err)
	}
	mt, err := img.MediaType()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: media type: %w", digest, err)
	}
	if err := CheckLayers(m); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", digest, err)
	}
	if err := s.putLayers(ctx, img, m.Layers, progress); err != nil {
		return Image{}, fmt.Errorf("image %s: %w", digest, err)
	}
	rawCfg, err := img.RawConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: config: %w", digest, err)
	}
	rawManifest, err := img.RawManifest()
	if err != nil {
		return Image{}, fmt.Errorf("image %s: manifest: %w", digest, err)
	}
	for _, b := range []struct {
		data []byte
		h    v1.Hash
	}{{rawCfg, m.Config.Digest}, {rawManifest, digest}} {
		if err := s.putBytes(b.data, b.h); err != nil {
			return Image{}, fmt.Errorf("image %s: %w", digest, err)
		}
	}

	desc := v1.Descriptor{MediaType: mt, Digest: digest, Size: int64(len(rawManifest))}
	if err := s.setNames(desc, names); err != nil {
		return Image{}, err
	}
	// Retagging may have orphaned the image a name pointed at before.
	if err := s.gc(ctx); err != nil {
		return Image{}, err
	}
	name := ""
	if len(names) > 0 {
		name = names[0]
	}
	return s.load(digest, name)
}

// putLayers copies the layers the store lacks, reporting progress over
// all of them (those it has count as done).
func (s *Store) putLayers(ctx context.Context, img v1.Image, layers []v1.Descriptor, progress Progress) error {
	var total, done int64
	for _, l := range layers {
		total += l.Size
	}
	report := func(n int64) {
		done += n
		if progress != nil {
			progress(done, total)
		}
	}
	for _, ld := range layers {
		if err := ctx.Err(); err != nil {
			return err
		}
		dst := s.blobPath(ld.Digest)
		if _, err := os.Stat(dst); err == nil {
			report(ld.Size)
			continue
		}
		l, err := img.LayerByDigest(ld.Digest)
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
		err = s.copyVerified(ctxReader{ctx, rc}, ld.Digest, dst, report)
		rc.Close()
		if err != nil {
			return fmt.Errorf("layer %s: %w", ld.Digest, err)
		}
	}
	return nil
}

// setNames records desc in index.json under names, moving each from the
// image it named before; with no names, unnamed unless the digest is
// there already. Held under the store's lock.
func (s *Store) setNames(desc v1.Descriptor, names []string) error {
	idx, err := s.readIndex()
	if err != nil {
		return err
	}
	if len(names) == 0 {
		present := false
		for _, d := range idx.Manifests {
			present = present || d.Digest == desc.Digest
		}
		if !present {
			idx.Manifests = append(idx.Manifests, desc)
		}
	}
	for _, n := range names {
		var kept []v1.Descriptor
		var moved []v1.Hash
		for _, d := range idx.Manifests {
			// A name moves to the new image; an unnamed entry of the same
			// digest is superseded by the named one.
			if descName(d) == n || (d.Digest == desc.Digest && descName(d) == "") {
				if d.Digest != desc.Digest {
					moved = append(moved, d.Digest)
				}
				continue
			}
			kept = append(kept, d)
		}
		nd := desc
		nd.Annotations = map[string]string{annotationRefName: n, annotationContainerdName: n}
		idx.Manifests = append(kept, nd)
		for _, old := range moved {
			// An image that loses its last name while containers use it
			// stays, unnamed, so they can still be traced to it; in a
			// store that retains unnamed images (a server's) it stays
			// anyway, until Prune.
			if err := s.keepIfUsed(idx, old); err != nil {
				return err
			}
		}
	}
	return s.writeIndex(idx)
}

func (s *Store) putBytes(data []byte, h v1.Hash) error {
	dst := s.blobPath(h)
	if _, err := os.Stat(dst); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := s.copyVerified(bytes.NewReader(data), h, dst, nil); err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}

// ctxReader stops a long copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// keepIfUsed adds an unnamed entry for digest to idx when no entry is left
// for it and a container uses it, or the store retains unnamed images.
func (s *Store) keepIfUsed(idx *v1.IndexManifest, digest v1.Hash) error {
	for _, d := range idx.Manifests {
		if d.Digest == digest {
			return nil
		}
	}
	users, err := s.users(digest)
	if err != nil {
		return err
	}
	if len(users) == 0 && !s.retaining() {
		return nil
	}
	raw, err := os.ReadFile(s.blobPath(digest))
	if err != nil {
		return fmt.Errorf("image %s: %w", digest, err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("image %s: %w", digest, err)
	}
	mt := m.MediaType
	if mt == "" {
		mt = types.OCIManifestSchema1
	}
	idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: mt, Digest: digest, Size: int64(len(raw))})
	return nil
}
