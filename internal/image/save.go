package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/berth-dev/berth/api/errdefs"
)

// SaveOCI writes the images refs (as Resolve finds them) to w as an OCI
// archive: a tar of an OCI image layout whose index lists every image,
// named by its org.opencontainers.image.ref.name annotation. Blobs stream
// from the store; one shared by several images is written once.
func (s *Store) SaveOCI(ctx context.Context, w io.Writer, refs []string) error {
	tw := tar.NewWriter(w)
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: "application/vnd.oci.image.index.v1+json"}
	written := map[v1.Hash]bool{}
	for _, ref := range refs {
		img, err := s.Resolve(ctx, ref)
		if err != nil {
			return err
		}
		raw, mt, digest, err := s.Manifest(ctx, img.Digest)
		if err != nil {
			return err
		}
		m, _, err := parseImageManifest(raw, mt)
		if err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		for _, d := range append([]v1.Descriptor{{Digest: digest, Size: int64(len(raw))}, m.Config}, m.Layers...) {
			if written[d.Digest] {
				continue
			}
			if err := s.tarBlob(ctx, tw, d); err != nil {
				return fmt.Errorf("image %s: %w", ref, err)
			}
			written[d.Digest] = true
		}
		desc := v1.Descriptor{MediaType: mt, Digest: digest, Size: int64(len(raw))}
		if img.Name != "" {
			desc.Annotations = map[string]string{annotationRefName: img.Name, annotationContainerdName: img.Name}
		}
		idx.Manifests = append(idx.Manifests, desc)
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"oci-layout", map[string]string{"imageLayoutVersion": "1.0.0"}}, {"index.json", idx}} {
		data, err := json.Marshal(f.v)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)}); err != nil {
			return err
		}
		if _, err := tw.Write(data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func (s *Store) tarBlob(ctx context.Context, tw *tar.Writer, d v1.Descriptor) error {
	f, err := s.OpenBlob(d.Digest)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: "blobs/" + d.Digest.Algorithm + "/" + d.Digest.Hex, Typeflag: tar.TypeReg, Mode: 0o644, Size: st.Size(), ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err = io.CopyBuffer(tw, ctxReader{ctx, f}, make([]byte, 1<<20))
	return err
}

// SaveDocker writes the images refs to w in `docker save` form
// (manifest.json, configs and layers), each under its name; an unnamed
// image has no RepoTags.
func (s *Store) SaveDocker(ctx context.Context, w io.Writer, refs []string) error {
	images := map[name.Reference]v1.Image{}
	for _, ref := range refs {
		oimg, img, err := s.OCIImage(ctx, ref)
		if err != nil {
			return err
		}
		var r name.Reference
		if img.Name != "" {
			if r, err = name.NewTag(img.Name); err != nil {
				return fmt.Errorf("image %s: %w: %w", ref, err, errdefs.ErrInvalidArgument)
			}
		} else if r, err = name.NewDigest("unnamed@" + img.Digest); err != nil {
			return fmt.Errorf("image %s: %w", ref, err)
		}
		images[r] = oimg
	}
	return tarball.MultiRefWrite(images, w)
}

// History is one step of how an image was made, from its config.
type History struct {
	Created    time.Time `json:"created,omitzero"`
	CreatedBy  string    `json:"createdBy,omitempty"`
	Comment    string    `json:"comment,omitempty"`
	EmptyLayer bool      `json:"emptyLayer,omitempty"`
	// Layer is the digest of the layer the step made ("" for an empty
	// one), Size its compressed size.
	Layer string `json:"layer,omitempty"`
	Size  int64  `json:"size"`
}

// History returns the steps that made the image ref, oldest first. An image
// whose config records no history gets one step per layer.
func (s *Store) History(ctx context.Context, ref string) ([]History, error) {
	oimg, img, err := s.OCIImage(ctx, ref)
	if err != nil {
		return nil, err
	}
	cf, err := oimg.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: config: %w", ref, err)
	}
	var out []History
	li := 0
	for _, h := range cf.History {
		e := History{Created: h.Created.Time, CreatedBy: h.CreatedBy, Comment: h.Comment, EmptyLayer: h.EmptyLayer}
		if !h.EmptyLayer && li < len(img.Layers) {
			e.Layer, e.Size = img.Layers[li].Digest, img.Layers[li].Size
			li++
		}
		out = append(out, e)
	}
	for ; li < len(img.Layers); li++ {
		out = append(out, History{Layer: img.Layers[li].Digest, Size: img.Layers[li].Size})
	}
	return out, nil
}
