package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// FindLocal finds ref in store: by its digest when it has one, else under
// the name as written ("demo/app:1", an image built or imported here),
// else under the name a pull gives it (docker.io/library/nginx:latest for
// "nginx"). asWritten reports the second case.
func FindLocal(ctx context.Context, store *image.Store, ref string) (img image.Image, asWritten bool, err error) {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		img, err = store.Resolve(ctx, d)
		if err == nil && img.Digest != d {
			err = fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
		}
		return img, false, err
	}
	if img, err = store.Resolve(ctx, ref); err == nil {
		return img, true, nil
	} else if !errors.Is(err, errdefs.ErrNotFound) && !errors.Is(err, errdefs.ErrInvalidArgument) {
		return image.Image{}, false, err
	}
	nr, err := Normalize(ref)
	if err != nil {
		return image.Image{}, false, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
	}
	if n := LocalName(nr); n != "" {
		if img, err = store.Resolve(ctx, n); err == nil {
			return img, false, nil
		}
	}
	return image.Image{}, false, fmt.Errorf("image %q: %w", ref, errdefs.ErrNotFound)
}

// wantsUpstream decides, under policy, whether ref is asked of its
// registry even though the store may have it: Always does so for a
// reference that names a registry, or one the store does not have as
// written (a local image is never replaced from a registry).
func wantsUpstream(policy api.PullPolicy, ref string, asWritten bool) bool {
	return policy == api.PullAlways && !strings.Contains(ref, "@") && (IsUpstream(ref) || !asWritten)
}

// Ensure returns the image ref from store, pulling it from its registry
// as policy (api.DefaultPullPolicy when empty) says: IfNotPresent pulls
// what the store lacks, Always asks the registry for the tag's current
// image, Never only looks in the store.
func Ensure(ctx context.Context, store *image.Store, ref string, policy api.PullPolicy, opts UpstreamOptions) (image.Image, error) {
	policy = api.DefaultPullPolicy(ref, policy)
	img, asWritten, err := FindLocal(ctx, store, ref)
	if err == nil && !wantsUpstream(policy, ref, asWritten) {
		return img, nil
	}
	if err != nil && !errors.Is(err, errdefs.ErrNotFound) {
		return image.Image{}, err
	}
	if policy == api.PullNever {
		return image.Image{}, fmt.Errorf("image %q is not in the store, and the pull policy is Never: %w", ref, errdefs.ErrNotFound)
	}
	p, err := PullUpstream(ctx, store, ref, opts)
	if err != nil && img.Digest == "" && !errors.Is(err, errdefs.ErrNotFound) {
		return image.Image{}, fmt.Errorf("image %q is not in the store, and pulling it failed: %w", ref, err)
	}
	if err != nil {
		return image.Image{}, err
	}
	return p.Image, nil
}
