package registry

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
)

// Private images. The servers' store is one pool shared by every
// namespace: an image a namespace's pull secret fetched would otherwise
// be pinned, from the cache, for a template of any namespace that names
// it. So a repository once pulled with pull secrets is recorded as
// private, cluster-wide, and every later pin of an image of it asks the
// registry (not its mirrors) whether the template's own credentials reach
// it, whatever the pull policy; a registry that cannot be asked refuses.

// PrivateRepos records the repositories pulled with pull secrets, in
// etcd under a key prefix (ending in "/"): PREFIX<repository>.
type PrivateRepos struct {
	client *clientv3.Client
	prefix string
}

// NewPrivateRepos returns the record kept under prefix in c.
func NewPrivateRepos(c *clientv3.Client, prefix string) *PrivateRepos {
	return &PrivateRepos{client: c, prefix: prefix}
}

// Mark records repo as private.
func (p *PrivateRepos) Mark(ctx context.Context, repo string) error {
	if _, err := p.client.Put(ctx, p.prefix+repo, "1"); err != nil {
		return fmt.Errorf("private repository %s: %w", repo, err)
	}
	return nil
}

// Has reports whether repo is recorded as private.
func (p *PrivateRepos) Has(ctx context.Context, repo string) (bool, error) {
	r, err := p.client.Get(ctx, p.prefix+repo, clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("private repository %s: %w", repo, err)
	}
	return r.Count > 0, nil
}

// checkPrivate refuses pinned (an upstream image, pinned by digest) when
// its repository is private and auth does not reach it at its registry.
// The server's own credentials (its registry config) count too: what the
// operator gave the servers, every namespace may use.
func (h *Handler) checkPrivate(ctx context.Context, pinned string, auth *api.RegistryAuth) error {
	if h.opts.Private == nil || !IsUpstream(pinned) {
		return nil
	}
	r, err := Normalize(pinned)
	if err != nil {
		return nil
	}
	repo := r.Context().Name()
	private, err := h.opts.Private.Has(ctx, repo)
	if err != nil || !private {
		return err
	}
	up := h.Upstream()
	if up == nil {
		return fmt.Errorf("image %q is private, and no registry is reached from here to check credentials: %w", pinned, errdefs.ErrForbidden)
	}
	opts := up.WithAuth(auth)
	opts = opts.withDefaults()
	host := r.Context().RegistryStr()
	ep := opts.registryEndpoint(host)
	u, err := dial(ctx, r, ep, opts, transport.PullScope)
	if err == nil {
		_, err = remote.Head(r, u.opts...)
	}
	if err != nil {
		// Forbidden whatever the registry said: a not-found would leave
		// the image unpinned, for the cache to serve.
		return fmt.Errorf("image %q is private (pulled with pull secrets): the template's credentials do not reach it at %s (%v): %w", pinned, host, classify(err), errdefs.ErrForbidden)
	}
	return nil
}
