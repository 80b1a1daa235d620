package registry

import "context"

// PinImage returns ref (REPOSITORY[:TAG], ":latest" when no tag is given)
// pinned to the manifest digest this handler serves for it, as
// REPOSITORY:TAG@sha256:<hex>: the digest a Pull of the pinned reference
// verifies. A reference that names a digest already comes back unchanged,
// whether or not the store has it. Errors wrap errdefs.ErrNotFound when
// the store has no image of that name, errdefs.ErrInvalidArgument when ref
// is not a reference this registry can serve (a host:port prefix, say).
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
	if err != nil {
		return "", err
	}
	r.Digest = digest.String()
	return r.String(), nil
}
