package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
)

// Remote gives what the store lacks of a multi-arch index (the other
// platforms' manifests and blobs: a pull keeps only the node's), from the
// image's registry.
type Remote interface {
	Manifest(ctx context.Context, d v1.Descriptor) ([]byte, error)
	Blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error)
}

// SaveIndexOCI writes to w an OCI archive of the multi-arch index raw
// (as PutIndex keeps it), named name: the index, and every manifest it
// lists with its config and layers, for every platform. What the store
// lacks comes from remote (nil: nothing may be missing), each manifest
// and blob checked against its digest and size as it streams into the
// archive; none of it is kept in the store.
func (s *Store) SaveIndexOCI(ctx context.Context, w io.Writer, name string, raw []byte, remote Remote) error {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil {
		return fmt.Errorf("index of %s: %w: %w", name, err, errdefs.ErrInvalidArgument)
	}
	idxDigest := Digest(raw)
	tw := tar.NewWriter(w)
	written := map[v1.Hash]bool{}
	for _, md := range idx.Manifests {
		if md.MediaType.IsIndex() {
			return fmt.Errorf("index %s: manifest %s is an index itself: %w", idxDigest, md.Digest, errdefs.ErrInvalidArgument)
		}
		mraw, err := s.indexManifest(ctx, md, remote)
		if err != nil {
			return fmt.Errorf("index %s: %w", idxDigest, err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(mraw))
		if err != nil {
			return fmt.Errorf("index %s: manifest %s: %w: %w", idxDigest, md.Digest, err, errdefs.ErrInvalidArgument)
		}
		if err := writeBytes(tw, md.Digest, mraw); err != nil {
			return err
		}
		written[md.Digest] = true
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if written[d.Digest] {
				continue
			}
			if err := s.tarBlobFrom(ctx, tw, d, remote); err != nil {
				return fmt.Errorf("index %s: manifest %s: %w", idxDigest, md.Digest, err)
			}
			written[d.Digest] = true
		}
	}
	if err := writeBytes(tw, idxDigest, raw); err != nil {
		return err
	}
	mt := idx.MediaType
	if mt == "" {
		mt = "application/vnd.oci.image.index.v1+json"
	}
	top := v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json", Manifests: []v1.Descriptor{{
		MediaType: mt, Digest: idxDigest, Size: int64(len(raw)),
		Annotations: map[string]string{annotationRefName: name, annotationContainerdName: name},
	}}}
	for _, f := range []struct {
		name string
		v    any
	}{{"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}}, {"index.json", top}} {
		data, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := writeFile(tw, f.name, data); err != nil {
			return err
		}
	}
	return tw.Close()
}

// indexManifest is the manifest md names: the store's, else remote's,
// checked against its digest.
func (s *Store) indexManifest(ctx context.Context, md v1.Descriptor, remote Remote) ([]byte, error) {
	if f, err := s.OpenBlob(md.Digest); err == nil {
		defer f.Close()
		return io.ReadAll(io.LimitReader(f, 4<<20))
	}
	if remote == nil {
		return nil, fmt.Errorf("manifest %s: %w", md.Digest, ErrNotFound)
	}
	raw, err := remote.Manifest(ctx, md)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", md.Digest, err)
	}
	if got := Digest(raw); got != md.Digest {
		return nil, fmt.Errorf("manifest %s: %w: the registry's has digest %s", md.Digest, ErrDigestMismatch, got)
	}
	return raw, nil
}

// ErrDigestMismatch is content that does not match the digest naming it.
var ErrDigestMismatch = fmt.Errorf("content does not match its digest: %w", errdefs.ErrInvalidArgument)

// tarBlobFrom writes blob d from the store, else from remote, checking
// what remote gives against d's size and digest.
func (s *Store) tarBlobFrom(ctx context.Context, tw *tar.Writer, d v1.Descriptor, remote Remote) error {
	f, err := s.OpenBlob(d.Digest)
	if err == nil {
		f.Close()
		return s.tarBlob(ctx, tw, d)
	}
	if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, ErrNotFound) {
		return err
	}
	if remote == nil {
		return fmt.Errorf("blob %s: %w", d.Digest, ErrNotFound)
	}
	rc, err := remote.Blob(ctx, d)
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	hdr := &tar.Header{Name: "blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex, Typeflag: tar.TypeReg, Mode: 0o644, Size: d.Size, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	h := sha256.New()
	n, err := io.CopyBuffer(io.MultiWriter(tw, h), ctxReader{ctx, io.LimitReader(rc, d.Size+1)}, make([]byte, 1<<20))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	if n != d.Size || hex.EncodeToString(h.Sum(nil)) != d.Digest.Hex {
		return fmt.Errorf("blob %s (%d bytes, %d announced): %w", d.Digest, n, d.Size, ErrDigestMismatch)
	}
	return nil
}

func writeBytes(tw *tar.Writer, d v1.Hash, data []byte) error {
	return writeFile(tw, "blobs/"+d.Algorithm+"/"+d.Hex, data)
}

func writeFile(tw *tar.Writer, name string, data []byte) error {
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}
