package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// SaveAllPlatforms writes the image ref to w as an OCI archive of the
// whole multi-arch index it was pulled from, every platform's image in it
// (as `skopeo copy --all` or `docker save` of a multi-platform image
// do). The store keeps only this node's platform: the others' manifests
// and blobs are fetched from the image's registry (its mirrors first)
// with opts, checked against their digests and written straight into the
// archive, kept nowhere else. An image that came from no index is
// written as SaveOCI writes it.
func SaveAllPlatforms(ctx context.Context, store *image.Store, w io.Writer, ref string, opts UpstreamOptions) error {
	img, _, err := FindLocal(ctx, store, ref)
	if err != nil {
		return err
	}
	d, err := v1.NewHash(img.Digest)
	if err != nil {
		return fmt.Errorf("image %q: %w", ref, err)
	}
	idxDigest, ok := store.IndexOf(d)
	if !ok {
		return store.SaveOCI(ctx, w, []string{ref})
	}
	raw, err := store.Index(idxDigest)
	if err != nil {
		return err
	}
	rem := &indexRemote{name: img.Name, index: idxDigest, opts: opts}
	if err := store.SaveIndexOCI(ctx, w, img.Name, raw, rem); err != nil {
		return fmt.Errorf("image %q, all platforms: %w", ref, err)
	}
	return nil
}

// indexRemote reaches the registry an index came from, on first use.
type indexRemote struct {
	name  string
	index v1.Hash
	opts  UpstreamOptions
	up    *upstream
}

// connect dials the image's mirrors, then its registry, taking the first
// that has the index.
func (r *indexRemote) connect(ctx context.Context) (*upstream, error) {
	if r.up != nil {
		return r.up, nil
	}
	if r.name == "" {
		return nil, fmt.Errorf("the image has no name to find its registry by: %w", errdefs.ErrNotFound)
	}
	ref, err := Normalize(r.name)
	if err != nil {
		return nil, err
	}
	opts := r.opts
	opts = opts.withDefaults()
	host := ref.Context().RegistryStr()
	rc := opts.Config.Registry(host)
	type candidate struct {
		repo name.Repository
		ep   endpoint
	}
	var cands []candidate
	for _, m := range rc.Mirrors {
		u, err := url.Parse(m)
		if err != nil || u.Host == "" {
			continue
		}
		repo, err := name.NewRepository(u.Host + "/" + ref.Context().RepositoryStr())
		if err != nil {
			continue
		}
		cands = append(cands, candidate{repo, opts.mirrorEndpoint(u)})
	}
	cands = append(cands, candidate{ref.Context(), opts.registryEndpoint(host)})
	var errs []error
	for _, c := range cands {
		dref := c.repo.Digest(r.index.String())
		up, err := dial(ctx, dref, c.ep, opts, transport.PullScope)
		if err == nil {
			_, err = remote.Head(dref, up.opts...)
		}
		if err == nil {
			r.up = up
			return up, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", c.ep.host, classify(err)))
	}
	return nil, fmt.Errorf("index %s of %s: %w", r.index, r.name, errors.Join(errs...))
}

func (r *indexRemote) Manifest(ctx context.Context, d v1.Descriptor) ([]byte, error) {
	up, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(up.repo.Digest(d.Digest.String()), append(up.opts, remote.WithContext(ctx))...)
	if err != nil {
		return nil, classify(err)
	}
	return desc.Manifest, nil
}

func (r *indexRemote) Blob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	up, err := r.connect(ctx)
	if err != nil {
		return nil, err
	}
	return up.openBlob(ctx, d)
}
