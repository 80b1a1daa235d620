package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// PinImage returns ref pinned to the manifest digest this handler serves
// for it, as REPOSITORY:TAG@sha256:<hex>: the digest a Pull of the pinned
// reference verifies. A reference that names a digest already comes back
// unchanged, whether or not the store has it. Where the image comes from
// follows policy (api.DefaultPullPolicy when empty; see Ensure): the
// store under the name as written, then the peers (Options.Peers), then
// the store under the name a pull gives it (docker.io/library/nginx:latest
// for "nginx"), then the image's own registry (Options.Upstream), whose
// image is pulled into the store first; Always goes to the registry
// first, Never never. Errors wrap errdefs.ErrNotFound when no source has
// it, errdefs.ErrInvalidArgument when ref is not a reference.
//
// The API server pins the images of the services and jobs it stores with
// it (apiserver.ImagePinner), so that every agent runs the same image
// however the tag moves later.
//
// auth, when not nil, holds the credentials of the template's
// imagePullSecrets: tried before the server's own for the pull.
func (h *Handler) PinImage(ctx context.Context, ref string, policy api.PullPolicy, auth *api.RegistryAuth) (string, error) {
	pinned, err := h.pinImage(ctx, ref, policy, auth)
	if err != nil {
		return pinned, err
	}
	if err := h.checkPrivate(ctx, pinned, auth); err != nil {
		return "", err
	}
	if strings.Contains(ref, "@") || !IsUpstream(pinned) {
		return pinned, nil
	}
	// An image pulled from a multi-arch index is pinned to the index, so
	// that nodes of every architecture run the same release.
	name, d, _ := strings.Cut(pinned, "@")
	if dh, err := v1.NewHash(d); err == nil {
		if idx, ok := h.store.IndexOf(dh); ok {
			return name + "@" + idx.String(), nil
		}
	}
	return pinned, nil
}

// pinImage resolves ref to name@digest: from the store, then the peers,
// then upstream, as policy says.
//
// Long because each source is tried in the order a pull would use, and a
// short name's upstream miss has its own rules (remembered, not refused).
func (h *Handler) pinImage(ctx context.Context, ref string, policy api.PullPolicy, auth *api.RegistryAuth) (string, error) {
	if strings.Contains(ref, "@") {
		if _, err := ParseReference(ref); err != nil {
			if _, nerr := Normalize(ref); nerr != nil {
				return "", err
			}
		}
		return ref, nil
	}
	policy = api.DefaultPullPolicy(ref, policy)
	if r, err := ParseReference(ref); err == nil {
		name := r.Repository + ":" + r.Tag
		_, _, digest, err := h.store.Manifest(ctx, name)
		if !wantsUpstream(policy, ref, err == nil) {
			if errors.Is(err, errdefs.ErrNotFound) && h.opts.Peers != nil && h.opts.Peers.List != nil && !h.peerMisses.recent(name) {
				// Another server may have it: pull it through, as /v2/ would.
				if err = h.pullManifest(ctx, r.Repository, r.Tag, v1.Hash{}); err == nil {
					_, _, digest, err = h.store.Manifest(ctx, name)
				} else if errors.Is(err, errdefs.ErrNotFound) {
					h.peerMisses.note(name)
				}
			}
			if err == nil {
				return name + "@" + digest.String(), nil
			}
			if !errors.Is(err, errdefs.ErrNotFound) {
				return "", err
			}
		}
	}
	nr, err := Normalize(ref)
	if err != nil {
		return "", err
	}
	name := LocalName(nr)
	if !wantsUpstream(policy, ref, false) {
		if _, _, digest, err := h.store.Manifest(ctx, name); err == nil {
			return name + "@" + digest.String(), nil
		}
	}
	if policy == api.PullNever {
		return "", fmt.Errorf("image %q is not in the store, and the pull policy is Never: %w", ref, errdefs.ErrNotFound)
	}
	up := h.Upstream()
	if up == nil {
		return "", fmt.Errorf("image %q: %w (and no registry is reached from here)", ref, errdefs.ErrNotFound)
	}
	opts := up.WithAuth(auth)
	var digest string
	// Pulls with different credentials do not share a flight: one
	// namespace's may reach what another's may not.
	flight := "upstream " + nr.String() + " " + Fingerprint(auth)
	short := !IsUpstream(ref) && policy != api.PullAlways
	if short && h.misses.recent(flight) {
		return "", fmt.Errorf("image %q is not on the servers, and docker.io had it not %v ago: %w", ref, pinMissTTL, errdefs.ErrNotFound)
	}
	err = h.share(ctx, flight, func(ctx context.Context) error {
		p, err := PullUpstream(ctx, h.store, ref, opts)
		digest = p.Digest
		if err == nil && auth != nil && h.opts.Private != nil {
			// Pulled with a namespace's credentials: others must show theirs.
			err = h.opts.Private.Mark(ctx, nr.Context().Name())
		}
		return err
	})
	if err != nil && short {
		h.misses.note(flight)
	}
	if err != nil && !IsUpstream(ref) && !errors.Is(err, errdefs.ErrNotFound) {
		// A short name ("demo/app:1") may be an image a node built or
		// imported itself: left unpinned, not refused, when Docker Hub
		// cannot be asked (no network, say).
		return "", fmt.Errorf("image %q is not on the servers, and pulling it from docker.io failed (%v): %w", ref, err, errdefs.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	if digest == "" {
		// Another caller's flight pulled it.
		_, _, d, err := h.store.Manifest(ctx, name)
		if err != nil {
			return "", err
		}
		digest = d.String()
	}
	return name + "@" + digest, nil
}

// pinMissTTL is how long a short name docker.io failed to pin is left
// unpinned without asking again.
const pinMissTTL = 30 * time.Second

// pinMisses remembers the short names (as "demo/app:1", the image's own
// registry being docker.io) that could not be pinned from docker.io: not
// there, or docker.io not reached. Every apply of a service running such
// an image (one a node built or imported itself, or a simulated one) asked
// docker.io again on the apply's own path, a TLS handshake and a token
// round trip where it answers, for an answer that leaves the image
// unpinned anyway. Images found are in the store and pinned from it;
// images named with their registry are asked each time, their failure
// being the apply's error; so is any image pulled Always.
//
// The same goes for the tags no peer had (Handler.peerMisses): every
// apply of a service whose image no server holds asked every peer's
// registry for it, each answering 404. The store is asked first every
// time, so that an image pushed or loaded here is never hidden; one
// pushed to a peer is found once the miss expires.
type pinMisses struct {
	mu  sync.Mutex
	m   map[string]time.Time // flight key -> until when it is not asked again
	now func() time.Time     // time.Now when nil; tests set it
}

func (p *pinMisses) clock() time.Time {
	if p.now != nil {
		return p.now()
	}
	return time.Now()
}

func (p *pinMisses) recent(key string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	until, ok := p.m[key]
	return ok && p.clock().Before(until)
}

func (p *pinMisses) note(key string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.clock()
	if p.m == nil {
		p.m = map[string]time.Time{}
	}
	if len(p.m) >= 1024 {
		for k, until := range p.m {
			if now.After(until) {
				delete(p.m, k)
			}
		}
	}
	if len(p.m) < 4096 {
		p.m[key] = now.Add(pinMissTTL)
	}
}
