package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// Reference is a parsed image reference: REPOSITORY[:TAG][@DIGEST].
type Reference struct {
	Repository string
	Tag        string // "" when only a digest is given
	Digest     string // "" when only a tag is given
}

// ParseReference parses ref, REPOSITORY[:TAG][@sha256:HEX]; a reference
// with neither tag nor digest means the tag "latest".
func ParseReference(ref string) (Reference, error) {
	var r Reference
	rest, digest, hasDigest := strings.Cut(ref, "@")
	if hasDigest {
		h, err := v1.NewHash(digest)
		if err == nil {
			err = image.CheckDigest(h)
		}
		if err != nil {
			return Reference{}, fmt.Errorf("image reference %q: digest: %w", ref, errdefs.ErrInvalidArgument)
		}
		r.Digest = h.String()
	}
	r.Repository = rest
	if i := strings.LastIndexByte(rest, ':'); i >= 0 && !strings.Contains(rest[i:], "/") {
		r.Repository, r.Tag = rest[:i], rest[i+1:]
		if !tagRe().MatchString(r.Tag) {
			return Reference{}, fmt.Errorf("image reference %q: tag %q: %w", ref, r.Tag, errdefs.ErrInvalidArgument)
		}
	}
	if len(r.Repository) > maxNameLen || !nameRe().MatchString(r.Repository) {
		return Reference{}, fmt.Errorf("image reference %q: repository %q: want lowercase path components [a-z0-9] joined by . _ __ - and /: %w", ref, r.Repository, errdefs.ErrInvalidArgument)
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	return r, nil
}

// String returns the reference in its parsed form.
func (r Reference) String() string {
	s := r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest
	}
	return s
}

// Progress reports how far one layer of a pull has come.
type Progress struct {
	Image  string // the reference being pulled
	Layer  string // the layer's digest
	Done   int64  // bytes received
	Total  int64  // the layer's size
	Cached bool   // the store had it: nothing was fetched
}

// PullOptions tune Pull.
type PullOptions struct {
	// Transport carries the requests (TLS, credentials); the default
	// transport when nil.
	Transport http.RoundTripper
	// Progress, when set, hears about every layer: once when it starts,
	// as bytes arrive (at most every 1 MiB), and once when it is done.
	// Calls never overlap.
	Progress func(Progress)
	// Parallel is how many layers are fetched at once; 3 when zero.
	Parallel int
	// Platform picks from a multi-arch index; image.NodePlatform() when nil.
	Platform *v1.Platform
}

// progressStep is how many bytes pass between progress reports of a layer.
const progressStep = 1 << 20

// Pull fetches the image ref (REPOSITORY[:TAG][@DIGEST]) from the registry
// at base (scheme://host[:port], serving /v2/) into store, and returns it.
// Only what the store lacks is fetched, every blob is checked against its
// digest before it is kept, and a pull that fails removes what it fetched,
// so an interrupted or tampered pull leaves nothing behind. With a digest
// the manifest must have it; with a tag the image is stored under
// REPOSITORY:TAG. Concurrent pulls (in any process) fetch each blob once.
// Errors carry the registry's answer as an errdefs category (ErrNotFound,
// ErrUnauthorized, ErrForbidden, ...); ctx bounds the whole pull, a stalled
// connection included.
//
// Long because a pull's steps (resolve, manifest, config, layers, store)
// share one staging directory that every failure removes.
func Pull(ctx context.Context, store *image.Store, base, ref string, opts PullOptions) (image.Image, error) {
	r, err := ParseReference(ref)
	if err != nil {
		return image.Image{}, err
	}
	localName := ""
	if r.Tag != "" {
		localName = r.Repository + ":" + r.Tag
	}
	if r.Digest != "" {
		// By digest the content cannot have changed: done if the store has it.
		if img, err := store.Resolve(ctx, r.Digest); err == nil && (img.Digest == r.Digest || isIndex(store, r.Digest)) && (localName == "" || img.Name == localName) {
			return img, nil
		}
	}
	reg, err := newRemote(ctx, base, opts.Transport)
	if err != nil {
		return image.Image{}, fmt.Errorf("pull %s: %w", r, err)
	}
	repo := reg.registry.Repo(r.Repository)
	var nref name.Reference = repo.Tag(r.Tag)
	if r.Digest != "" {
		nref = repo.Digest(r.Digest)
	}
	desc, err := reg.puller.Get(ctx, nref)
	if err != nil {
		return image.Image{}, fmt.Errorf("pull %s from %s: %w", r, base, classify(err))
	}
	raw := desc.Manifest
	digest := image.Digest(raw)
	if digest != desc.Digest || (r.Digest != "" && digest.String() != r.Digest) {
		return image.Image{}, fmt.Errorf("pull %s from %s: manifest content is %s, want %s: %w", r, base, digest, desc.Digest, errdefs.ErrInvalidArgument)
	}
	mt := desc.MediaType
	var rawIndex []byte
	if mt.IsIndex() {
		// A multi-arch index (a cluster pins one): this node's image of it.
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return image.Image{}, fmt.Errorf("pull %s from %s: index %s: %w: %w", r, base, digest, err, errdefs.ErrInvalidArgument)
		}
		want := image.NodePlatform()
		if opts.Platform != nil {
			want = *opts.Platform
		}
		child, err := image.ChoosePlatform(idx, want)
		if err != nil {
			return image.Image{}, fmt.Errorf("pull %s from %s: index %s: %w", r, base, digest, err)
		}
		cdesc, err := reg.puller.Get(ctx, repo.Digest(child.Digest.String()))
		if err != nil {
			return image.Image{}, fmt.Errorf("pull %s from %s: %w", r, base, classify(err))
		}
		if got := image.Digest(cdesc.Manifest); got != child.Digest {
			return image.Image{}, fmt.Errorf("pull %s from %s: manifest content is %s, the index says %s: %w", r, base, got, child.Digest, errdefs.ErrInvalidArgument)
		}
		rawIndex, raw, mt, digest = raw, cdesc.Manifest, cdesc.MediaType, child.Digest
	}
	if !image.IsManifestType(mt) {
		return image.Image{}, fmt.Errorf("pull %s from %s: %s is not a single-platform image manifest: %w", r, base, mt, errdefs.ErrInvalidArgument)
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return image.Image{}, fmt.Errorf("pull %s from %s: manifest %s: %w: %w", r, base, digest, err, errdefs.ErrInvalidArgument)
	}
	p := &pull{ref: r.String(), store: store, puller: reg.puller, repo: repo, report: opts.Progress}
	img, err := p.run(ctx, m, raw, mt, localName, opts.Parallel)
	if err != nil {
		// What this pull staged would only wait for PruneStaging.
		var errs []error
		for _, h := range p.staged {
			errs = append(errs, store.Unstage(h))
		}
		return image.Image{}, errors.Join(fmt.Errorf("pull %s from %s: %w", r, base, classify(err)), errors.Join(errs...))
	}
	if rawIndex != nil {
		if _, err := store.PutIndex(rawIndex); err != nil {
			return image.Image{}, fmt.Errorf("pull %s from %s: %w", r, base, err)
		}
	}
	return img, nil
}

// isIndex reports whether the store keeps an index of digest d.
func isIndex(store *image.Store, d string) bool {
	h, err := v1.NewHash(d)
	if err != nil {
		return false
	}
	_, err = store.Index(h)
	return err == nil
}

func (p *pull) run(ctx context.Context, m *v1.Manifest, raw []byte, mt types.MediaType, localName string, parallel int) (image.Image, error) {
	// A blob committed for another image can vanish with that image between
	// the fetch and the commit; a second round fetches it again.
	for attempt := 0; ; attempt++ {
		if err := p.fetchAll(ctx, m, parallel); err != nil {
			return image.Image{}, err
		}
		img, err := p.store.CommitManifest(ctx, raw, mt, localName)
		if err == nil || attempt > 0 || !errors.Is(err, errdefs.ErrNotFound) {
			return img, err
		}
	}
}

type pull struct {
	ref    string
	store  *image.Store
	puller *remote.Puller
	repo   name.Repository
	mu     sync.Mutex // serializes report calls; guards staged
	report func(Progress)
	staged []v1.Hash // blobs this pull fetched
}

func (p *pull) progress(pr Progress) {
	if p.report == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	pr.Image = p.ref
	p.report(pr)
}

// fetchAll fetches the config and the layers, parallel at a time.
func (p *pull) fetchAll(ctx context.Context, m *v1.Manifest, parallel int) error {
	if parallel <= 0 {
		parallel = 3
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := p.fetch(ctx, m.Config, false); err != nil {
		return err
	}
	sem := make(chan struct{}, parallel)
	errs := make([]error, len(m.Layers))
	var wg sync.WaitGroup
	for i, l := range m.Layers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
				defer func() { <-sem }()
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			if errs[i] = p.fetch(ctx, l, true); errs[i] != nil {
				cancel() // one failure ends the pull
			}
		}()
	}
	wg.Wait()
	// The first failure, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

// fetch stores blob d unless the store has it; layers are reported.
func (p *pull) fetch(ctx context.Context, d v1.Descriptor, layer bool) error {
	report := func(done int64, cached bool) {
		if layer {
			p.progress(Progress{Layer: d.Digest.String(), Done: done, Total: d.Size, Cached: cached})
		}
	}
	var last int64
	onBytes := func(done int64) {
		if done-last >= progressStep && done < d.Size {
			last = done
			report(done, false)
		}
	}
	open := func(ctx context.Context) (io.ReadCloser, error) {
		report(0, false)
		l, err := p.puller.Layer(ctx, p.repo.Digest(d.Digest.String()))
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	fetched, err := p.store.FetchBlob(ctx, d, open, onBytes)
	if err != nil {
		return err
	}
	if fetched {
		p.mu.Lock()
		p.staged = append(p.staged, d.Digest)
		p.mu.Unlock()
	}
	report(d.Size, !fetched)
	return nil
}

// classify adds the category of a registry's answer to err, so callers can
// tell a missing image or a refused credential from a broken network.
func classify(err error) error {
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	for _, c := range []struct {
		status int
		cat    error
	}{
		{http.StatusUnauthorized, errdefs.ErrUnauthorized},
		{http.StatusForbidden, errdefs.ErrForbidden},
		{http.StatusNotFound, errdefs.ErrNotFound},
		{http.StatusBadRequest, errdefs.ErrInvalidArgument},
		{http.StatusRequestEntityTooLarge, errdefs.ErrTooLarge},
	} {
		if te.StatusCode == c.status && !errors.Is(err, c.cat) {
			return fmt.Errorf("%w: %w", err, c.cat)
		}
	}
	return err
}

// remoteRegistry is a registry reached through a caller's transport.
type remoteRegistry struct {
	registry name.Registry
	puller   *remote.Puller
	options  []remote.Option
}

// newRemote prepares to talk to the registry at base with rt.
func newRemote(ctx context.Context, base string, rt http.RoundTripper) (*remoteRegistry, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w: %w", base, err, errdefs.ErrInvalidArgument)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return nil, fmt.Errorf("registry %q: want http(s)://host[:port]: %w", base, errdefs.ErrInvalidArgument)
	}
	if rt == nil {
		rt = http.DefaultTransport
	}
	var nopts []name.Option
	if u.Scheme == "http" {
		nopts = append(nopts, name.Insecure)
	}
	reg, err := name.NewRegistry(u.Host, nopts...)
	if err != nil {
		return nil, fmt.Errorf("registry %q: %w: %w", base, err, errdefs.ErrInvalidArgument)
	}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(authn.Anonymous), // the caller's transport carries credentials
		remote.WithTransport(schemeTransport{scheme: u.Scheme, host: u.Host, inner: rt}),
		remote.WithUserAgent("berth"),
	}
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", base, err)
	}
	return &remoteRegistry{registry: reg, puller: puller, options: ropts}, nil
}

// schemeTransport sends requests for host with the scheme the caller's
// base URL names: the library guesses it from the host name (plain HTTP for
// loopback and private addresses), and the caller knows better.
type schemeTransport struct {
	scheme, host string
	inner        http.RoundTripper
}

func (t schemeTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Host == t.host && r.URL.Scheme != t.scheme {
		r = r.Clone(r.Context())
		r.URL.Scheme = t.scheme
	}
	return t.inner.RoundTrip(r)
}
