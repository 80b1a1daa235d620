package registry

import (
	"context"
	"fmt"
	"net/http"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// PushOptions tune Push.
type PushOptions struct {
	// Transport carries the requests (TLS, credentials); the default
	// transport when nil.
	Transport http.RoundTripper
	// Progress, when set, is told the bytes sent of the bytes to send.
	// Blobs the registry has already count as sent.
	Progress func(done, total int64)
}

// Push sends the image named ref (REPOSITORY[:TAG], ":latest" when
// omitted) from store to the registry at base (scheme://host[:port]),
// under the same name. Blobs the registry has are not sent again.
func Push(ctx context.Context, store *image.Store, base, ref string, opts PushOptions) (image.Image, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return image.Image{}, err
	}
	if r.Digest != "" {
		return image.Image{}, fmt.Errorf("push %s: name the image REPOSITORY[:TAG], without a digest: %w", ref, errdefs.ErrInvalidArgument)
	}
	localName := r.Repository + ":" + r.Tag
	oimg, img, err := store.OCIImage(ctx, localName)
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s: %w", localName, err)
	}
	if img.Name != localName {
		// Resolve also matches digests; a push needs the name.
		return image.Image{}, fmt.Errorf("push %s: %w", localName, image.ErrNotFound)
	}
	reg, err := newRemote(ctx, base, opts.Transport)
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s: %w", localName, err)
	}
	var updates chan v1.Update
	done := make(chan struct{})
	if opts.Progress != nil {
		updates = make(chan v1.Update, 16)
		go func() {
			defer close(done)
			for u := range updates {
				opts.Progress(u.Complete, u.Total)
			}
		}()
	} else {
		close(done)
	}
	tag := reg.registry.Repo(r.Repository).Tag(r.Tag)
	wopts := append([]remote.Option(nil), reg.options...)
	if updates != nil {
		wopts = append(wopts, remote.WithProgress(updates))
	}
	err = remote.Write(tag, oimg, wopts...)
	<-done // the library closes updates when it returns
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s to %s: %w", localName, base, classify(err))
	}
	return img, nil
}
