package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
)

// Read access. The store is one pool, so a blob's digest alone would
// fetch it from any repository name: a caller that learned the digest of
// a layer of a private image (pulled with a namespace's pull secrets)
// could read it by asking for it under a name it may read. So a caller
// Options.Readable narrows reads manifests and blobs only of the images
// it names, closed over what their manifests reference:
//
//	image ref ─▶ manifest (or index ─▶ its manifests) ─▶ config, layers
//
// whatever repository name the request uses. Listings would name the
// private repositories and tags the caller does not run, so such a caller
// lists no catalog, and the tags only of repositories it runs an image of.

// ReadableFunc returns the image references (REPOSITORY[:TAG][@DIGEST])
// whose manifests and blobs the caller of r may read, or all=true when it
// may read everything. who names the caller in errors.
type ReadableFunc func(r *http.Request) (refs []string, all bool, who string, err error)

// checkRead refuses a manifest, blob, tag list or catalog read of rt that
// Options.Readable does not allow. A pinned image this store lacks yet is pulled through
// first, so that what it references is known.
func (h *Handler) checkRead(r *http.Request, rt route) error {
	switch {
	case h.opts.Readable == nil:
		return nil
	case rt.kind != "manifest" && rt.kind != "blob" && rt.kind != "tags" && rt.kind != "catalog":
		return nil
	}
	refs, all, who, err := h.opts.Readable(r)
	if err != nil {
		return fmt.Errorf("who may read %s: %w", truncate(r.URL.Path), err)
	}
	if all {
		return nil
	}
	switch rt.kind {
	case "catalog":
		return fail(http.StatusForbidden, codeDenied, "%s: %v: the catalog lists repositories it runs no image of", who, errdefs.ErrForbidden)
	case "tags":
		if readsRepo(refs, rt.name) {
			return nil
		}
		return fail(http.StatusForbidden, codeDenied, "%s: %v: repository %s holds no image it runs", who, errdefs.ErrForbidden, rt.name)
	}
	ctx := r.Context()
	var want v1.Hash
	if strings.Contains(rt.ref, ":") {
		if want, err = parseDigest(rt.ref); err != nil {
			return err
		}
	} else if rt.kind == "manifest" {
		if readsTag(refs, rt.name, rt.ref) {
			return nil
		}
		// A tag is read as the manifest it names here now.
		if _, d, err := h.manifestBytes(ctx, rt.name+":"+rt.ref); err == nil {
			want = d
		}
	}
	if rt.kind == "manifest" && namesDigest(refs, want) {
		return nil // itself a readable image's, whether or not the store holds it yet
	}
	if want.Hex != "" {
		ok, missing := h.reaches(ctx, refs, want, rt.kind == "blob")
		if !ok && len(missing) > 0 && h.pullsThrough(r) {
			for _, m := range missing {
				_ = h.pullManifest(ctx, m.Repository, m.Tag, digestOf(m))
			}
			ok, _ = h.reaches(ctx, refs, want, rt.kind == "blob")
		}
		if ok {
			return nil
		}
	}
	return fail(http.StatusForbidden, codeDenied, "%s: %v: %s %s:%s belongs to no image it runs", who, errdefs.ErrForbidden, rt.kind, rt.name, truncate(rt.ref))
}

// readsTag reports whether refs name repo:tag without a digest: an image
// left unpinned, fetched by its tag.
func readsTag(refs []string, repo, tag string) bool {
	for _, s := range refs {
		if r, err := ParseReference(s); err == nil && r.Digest == "" && r.Tag == tag && r.Repository == repo {
			return true
		}
	}
	return false
}

// namesDigest reports whether refs pin an image to the manifest want.
func namesDigest(refs []string, want v1.Hash) bool {
	if want.Hex == "" {
		return false
	}
	for _, s := range refs {
		if r, err := ParseReference(s); err == nil && r.Digest == want.String() {
			return true
		}
	}
	return false
}

// readsRepo reports whether refs name an image of repo, as written or
// under the name a pull gives it in the store (LocalName).
func readsRepo(refs []string, repo string) bool {
	for _, s := range refs {
		if r, err := ParseReference(s); err == nil && r.Repository == repo {
			return true
		}
		if nr, err := Normalize(s); err == nil && strings.HasPrefix(LocalName(nr), repo+":") {
			return true
		}
	}
	return false
}

func digestOf(r Reference) v1.Hash {
	h, _ := v1.NewHash(r.Digest)
	return h
}

// reaches reports whether want is a manifest (or, for a blob, a config or
// layer) of one of the images refs name, as far as the store knows them;
// missing are the refs whose manifest the store lacks.
func (h *Handler) reaches(ctx context.Context, refs []string, want v1.Hash, blob bool) (ok bool, missing []Reference) {
	for _, s := range refs {
		r, err := ParseReference(s)
		if err != nil {
			continue
		}
		key := r.Digest
		if key == "" {
			key = r.Repository + ":" + r.Tag
		}
		raw, digest, err := h.manifestBytes(ctx, key)
		if errors.Is(err, errdefs.ErrNotFound) && r.Digest == "" {
			// A short name the store keeps under the name a pull gives it.
			if nr, nerr := Normalize(s); nerr == nil {
				raw, digest, err = h.manifestBytes(ctx, LocalName(nr))
			}
		}
		if errors.Is(err, errdefs.ErrNotFound) && r.Digest != "" {
			missing = append(missing, r)
			continue
		}
		if err != nil {
			continue
		}
		if !blob && digest == want {
			return true, nil
		}
		for _, m := range h.manifestsOf(ctx, raw, digest) {
			if !blob && m.digest == want {
				return true, nil
			}
			if blob && referencesBlob(m.raw, want) {
				return true, nil
			}
		}
	}
	return false, missing
}

// manifestBytes is the manifest or index the store keeps under key (a
// digest or repository:tag), and its digest.
func (h *Handler) manifestBytes(ctx context.Context, key string) ([]byte, v1.Hash, error) {
	raw, _, digest, err := h.store.Manifest(ctx, key)
	if err == nil || !errors.Is(err, errdefs.ErrNotFound) {
		return raw, digest, err
	}
	d, herr := v1.NewHash(key)
	if herr != nil {
		return nil, v1.Hash{}, err
	}
	ir, ierr := h.store.Index(d)
	if ierr != nil {
		return nil, v1.Hash{}, err
	}
	return ir, d, nil
}

type manifestOf struct {
	digest v1.Hash
	raw    []byte
}

// manifestsOf is the image manifest raw, or for an index the manifests it
// lists that the store has.
func (h *Handler) manifestsOf(ctx context.Context, raw []byte, digest v1.Hash) []manifestOf {
	idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
	if err != nil || len(idx.Manifests) == 0 {
		return []manifestOf{{digest: digest, raw: raw}}
	}
	var out []manifestOf
	for _, d := range idx.Manifests {
		if m, _, _, err := h.store.Manifest(ctx, d.Digest.String()); err == nil {
			out = append(out, manifestOf{digest: d.Digest, raw: m})
		} else {
			// Listed, though not here: its digest is still the index's to give.
			out = append(out, manifestOf{digest: d.Digest})
		}
	}
	return out
}

// referencesBlob reports whether the image manifest raw names want as
// its config or a layer.
func referencesBlob(raw []byte, want v1.Hash) bool {
	if raw == nil {
		return false
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return false
	}
	if m.Config.Digest == want {
		return true
	}
	for _, l := range m.Layers {
		if l.Digest == want {
			return true
		}
	}
	return false
}
