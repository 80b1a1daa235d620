package registry

import (
	"context"
	"errors"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/errdefs"
)

// PinImage returns ref (REPOSITORY[:TAG], ":latest" when no tag is given)
// pinned to the manifest digest this handler serves for it, as
// REPOSITORY:TAG@sha256:<hex>: the digest a Pull of the pinned reference
// verifies. A reference that names a digest already comes back unchanged,
// whether or not the store has it. A tag the store lacks is pulled
// through from the peers (Options.Peers) first, so that an apply landing
// on any server pins an image any server has. Errors wrap
// errdefs.ErrNotFound when neither the store nor a peer has an image of
// that name, errdefs.ErrInvalidArgument when ref is not a reference this
// registry can serve (a host:port prefix, say).
//
// The API server pins the images of the services and jobs it stores with
// it (apiserver.ImagePinner), so that every agent runs the same image
// however the tag moves later.
func (h *Handler) PinImage(ctx context.Context, ref string) (string, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return "", err
	}
	if r.Digest != "" {
		return ref, nil
	}
	_, _, digest, err := h.store.Manifest(ctx, r.Repository+":"+r.Tag)
	if errors.Is(err, errdefs.ErrNotFound) && h.opts.Peers != nil && h.opts.Peers.List != nil {
		// Another server may have it: pull it through, as /v2/ would.
		if err = h.pullManifest(ctx, r.Repository, r.Tag, v1.Hash{}); err == nil {
			_, _, digest, err = h.store.Manifest(ctx, r.Repository+":"+r.Tag)
		}
	}
	if err != nil {
		return "", err
	}
	r.Digest = digest.String()
	return r.String(), nil
}
