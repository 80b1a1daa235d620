package registry

// Pull-through between servers. Every server of a cluster has an image
// store of its own, and an image imported or pushed to one is unknown to
// the others. A Handler given Peers fills a miss from them instead of
// answering 404 at once:
//
//	agent ──GET /v2/demo/busybox/manifests/sha256:…──▶ server 2 (miss)
//	                                                     │ registry.Pull, every digest checked,
//	                                                     │ header Berth-Registry-Local-Only: 1
//	                                                     ▼
//	                                                   server 1, 3: own store only
//
// A miss by digest that no peer fills, of a repository that names its
// registry (docker.io/library/nginx), is pulled from that registry, or its
// mirror (Options.Upstream, upstream.go): the cluster's servers are its
// pull-through cache, and concurrent misses share one fetch.
//
// What it fetches is stored as a Pull would store it (a tag under the same
// tag, a digest unnamed), and the request is then answered from its own
// store as if it had had it. The same goes for a blob fetched alone, and
// for PinImage (an apply landing on a server that lacks the tag).
//
// No loops: a pull-through request carries LocalOnlyHeader, and a
// registry answers such a request from its own store only. Two servers
// that both lack an image answer each other 404, and the request that
// asked answers 404 too. The header only ever narrows what a request
// does, so it is honoured from any caller.
//
// Concurrent misses of one manifest (tag or digest) or blob share one
// pull-through, and blobs are fetched once even across processes
// (image.Store.FetchBlob).

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// LocalOnlyHeader, set on a request (to any value), has the registry
// answer it from its own store, never pulling through from its peers.
const LocalOnlyHeader = "Berth-Registry-Local-Only"

// DefaultPullThroughTimeout bounds one pull-through, every peer asked
// included, when Peers.Timeout is zero.
const DefaultPullThroughTimeout = 10 * time.Minute

// Peers are the other registries a Handler pulls through from.
type Peers struct {
	// List returns the base URLs (https://HOST:PORT) of the registries to
	// ask, in order; it is called on every miss (Directory.Peers).
	List func(ctx context.Context) ([]string, error)
	// Transport carries the requests to them: TLS that trusts them, and
	// credentials their Authorize lets pull (PeerTransport). The default
	// transport when nil.
	Transport http.RoundTripper
	// Timeout bounds one pull-through; DefaultPullThroughTimeout when zero.
	Timeout time.Duration
}

// pullsThrough reports whether a miss of r may be filled from the peers.
func (h *Handler) pullsThrough(r *http.Request) bool {
	return ((h.opts.Peers != nil && h.opts.Peers.List != nil) || h.Upstream() != nil) && r.Header.Get(LocalOnlyHeader) == ""
}

var errNoPeers = fmt.Errorf("no peer to ask: %w", errdefs.ErrNotFound)

// pullManifest pulls the image repo:tag, or repo@digest when digest is
// set, through from the peers into the store. Errors wrap
// errdefs.ErrNotFound when no peer could give it, whatever the reasons.
func (h *Handler) pullManifest(ctx context.Context, repo, tag string, digest v1.Hash) error {
	ref, key := Reference{Repository: repo, Tag: tag}, "manifest "+repo+":"+tag
	if digest.Hex != "" {
		// The store is one pool: a digest names the same image in any repository.
		ref, key = Reference{Repository: repo, Digest: digest.String()}, "manifest "+digest.String()
	}
	return h.share(ctx, key, func(ctx context.Context) error {
		if ref.Tag != "" {
			// A flight that ended between the caller's miss and now.
			if _, _, _, err := h.store.Manifest(ctx, repo+":"+tag); err == nil {
				return nil
			}
		}
		err := errNoPeers
		if h.opts.Peers != nil && h.opts.Peers.List != nil {
			err = h.fromPeers(ctx, "image "+ref.String(), func(ctx context.Context, base string, rt http.RoundTripper) error {
				_, err := Pull(ctx, h.store, base, ref.String(), PullOptions{Transport: rt})
				return err
			})
		}
		if up := h.Upstream(); errors.Is(err, errdefs.ErrNotFound) && up != nil && IsUpstream(repo) && digest.Hex != "" {
			// Nobody in the cluster has it: the image's own registry (or its
			// mirror), every digest checked, the blobs kept for the others.
			// Only by digest: the cluster pins what it runs at apply time
			// (PinImage), so a tag asked for here is one the pull policy
			// (Never) or the registry left unpinned.
			_, err = PullUpstream(ctx, h.store, ref.String(), *up)
			if err == nil {
				h.log.Info("registry: pulled through from upstream", "image", ref.String())
			}
		}
		return err
	})
}

// pullBlob fetches blob d through from the peers into the store, staged
// until a manifest names it (or PruneStaging finds it stale). Errors wrap
// errdefs.ErrNotFound when no peer could give it.
func (h *Handler) pullBlob(ctx context.Context, repo string, d v1.Hash) error {
	if h.opts.Peers == nil || h.opts.Peers.List == nil {
		return fmt.Errorf("blob %s: %w", d, errNoPeers)
	}
	return h.share(ctx, "blob "+d.String(), func(ctx context.Context) error {
		return h.fromPeers(ctx, "blob "+d.String(), func(ctx context.Context, base string, rt http.RoundTripper) error {
			return fetchBlob(ctx, h.store, base, repo, d, rt, h.opts.MaxBlobSize)
		})
	})
}

// fetchBlob stores blob d from the registry at base, checked against its
// digest and the size the registry announces, at most limit bytes.
func fetchBlob(ctx context.Context, store *image.Store, base, repo string, d v1.Hash, rt http.RoundTripper, limit int64) error {
	reg, err := newRemote(ctx, base, rt)
	if err != nil {
		return err
	}
	l, err := reg.puller.Layer(ctx, reg.registry.Repo(repo).Digest(d.String()))
	if err != nil {
		return classify(err)
	}
	size, err := l.Size() // a HEAD
	if err != nil {
		return classify(err)
	}
	if size > limit {
		return fmt.Errorf("blob %s of %d bytes: the limit is %d: %w", d, size, limit, errdefs.ErrTooLarge)
	}
	open := func(context.Context) (io.ReadCloser, error) { return l.Compressed() }
	_, err = store.FetchBlob(ctx, v1.Descriptor{Digest: d, Size: size}, open, nil)
	return classify(err)
}

// share runs fetch once for key however many callers miss the same thing
// at once. It runs apart from any one request (bounded by Peers.Timeout),
// so a caller that gives up does not fail the others; that caller gets
// its ctx's error.
func (h *Handler) share(ctx context.Context, key string, fetch func(context.Context) error) error {
	timeout := DefaultPullThroughTimeout
	if h.opts.Peers != nil && h.opts.Peers.Timeout > 0 {
		timeout = h.opts.Peers.Timeout
	}
	if timeout <= 0 {
		timeout = DefaultPullThroughTimeout
	}
	ch := h.flights.DoChan(key, func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		return nil, fetch(fctx)
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fromPeers asks the peers in turn with fetch until one succeeds. A peer
// that lacks what is asked, cannot be reached, or sends what does not
// match its digest is passed over; when none gives it the error wraps
// errdefs.ErrNotFound, so that a dead or lying peer looks to the caller
// like one that never had it.
func (h *Handler) fromPeers(ctx context.Context, what string, fetch func(ctx context.Context, base string, rt http.RoundTripper) error) error {
	peers, err := h.opts.Peers.List(ctx)
	if err != nil {
		h.log.Warn("registry: listing the peers to pull through from", "what", what, "err", err)
		return fmt.Errorf("%s: %w here, and the peers could not be listed: %v", what, errdefs.ErrNotFound, err)
	}
	rt := localOnly{inner: h.opts.Peers.Transport}
	var failures []string
	for _, base := range peers {
		start := time.Now()
		err := fetch(ctx, base, rt)
		if err == nil {
			h.log.Info("registry: pulled through from a peer", "what", what, "peer", base, "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s: pulling through from %s: %w", what, base, ctx.Err())
		}
		if !errors.Is(err, errdefs.ErrNotFound) {
			h.log.Warn("registry: pulling through from a peer failed", "what", what, "peer", base, "err", err)
		}
		failures = append(failures, fmt.Sprintf("%s: %v", base, err))
	}
	if len(failures) == 0 {
		return fmt.Errorf("%s: %w (and no peer to ask)", what, errdefs.ErrNotFound)
	}
	return fmt.Errorf("%s: %w here nor at a peer: %s", what, errdefs.ErrNotFound, strings.Join(failures, "; "))
}

// localOnly marks every request as a pull-through (LocalOnlyHeader).
type localOnly struct{ inner http.RoundTripper }

func (t localOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(LocalOnlyHeader, "1")
	inner := t.inner
	if inner == nil {
		inner = http.DefaultTransport
	}
	return inner.RoundTrip(r)
}
