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
		child, err := choosePlatform(idx, opts.Platform)
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
	if err := image.CheckLayers(m); err != nil {
		return image.Image{}, fmt.Errorf("pull %s from %s: manifest %s: %w", r, base, digest, err)
	}
	p := &pull{staging: staging{ref: r.String(), store: store, report: opts.Progress}, puller: reg.puller, repo: repo}
	img, err := p.commit(ctx, func(ctx context.Context) error { return p.fetchAll(ctx, m, opts.Parallel) }, raw, mt, localName)
	if err != nil {
		return image.Image{}, errors.Join(fmt.Errorf("pull %s from %s: %w", r, base, classify(err)), p.unstage())
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

// choosePlatform picks the image of idx for platform, this node's when
// platform is nil.
func choosePlatform(idx *v1.IndexManifest, platform *v1.Platform) (v1.Descriptor, error) {
	want := image.NodePlatform()
	if platform != nil {
		want = *platform
	}
	return image.ChoosePlatform(idx, want)
}

// staging is what the fetches of one pull share: the blobs they staged,
// which a failed pull removes, and the progress reports.
type staging struct {
	ref    string
	store  *image.Store
	mu     sync.Mutex // serializes report calls; guards staged
	report func(Progress)
	staged []v1.Hash // blobs this pull fetched
}

func (s *staging) progress(pr Progress) {
	if s.report == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	pr.Image = s.ref
	s.report(pr)
}

// commit runs fetchAll and commits the manifest. A blob committed for
// another image can vanish with that image between the fetch and the
// commit; a second round fetches it again.
func (s *staging) commit(ctx context.Context, fetchAll func(context.Context) error, raw []byte, mt types.MediaType, localName string) (image.Image, error) {
	for attempt := 0; ; attempt++ {
		if err := fetchAll(ctx); err != nil {
			return image.Image{}, err
		}
		img, err := s.store.CommitManifest(ctx, raw, mt, localName)
		if err == nil || attempt > 0 || !errors.Is(err, errdefs.ErrNotFound) {
			return img, err
		}
	}
}

// unstage removes what a failed pull staged, which would otherwise only
// wait for PruneStaging.
func (s *staging) unstage() error {
	var errs []error
	for _, h := range s.staged {
		errs = append(errs, s.store.Unstage(h))
	}
	return errors.Join(errs...)
}

// blobFetch follows the fetch of one blob of a pull; a layer's is
// reported.
type blobFetch struct {
	s     *staging
	d     v1.Descriptor
	layer bool
	step  int64 // bytes between reports
	last  int64
}

func (s *staging) startFetch(d v1.Descriptor, layer bool, step int64) *blobFetch {
	return &blobFetch{s: s, d: d, layer: layer, step: step}
}

func (f *blobFetch) report(done int64, cached bool) {
	if f.layer {
		f.s.progress(Progress{Layer: f.d.Digest.String(), Done: done, Total: f.d.Size, Cached: cached})
	}
}

// onBytes hears of the bytes received so far.
func (f *blobFetch) onBytes(done int64) {
	if done-f.last >= f.step && done < f.d.Size {
		f.last = done
		f.report(done, false)
	}
}

// done records the blob as staged by this pull if it was fetched (the
// store may have had it), and reports it complete.
func (f *blobFetch) done(fetched bool) {
	if fetched {
		f.s.mu.Lock()
		f.s.staged = append(f.s.staged, f.d.Digest)
		f.s.mu.Unlock()
	}
	f.report(f.d.Size, !fetched)
}

// fetchLayers runs fetch for every layer, at most limit at once (all at
// once when limit is 0). The first failure cancels the others and is
// what it returns, not the cancellations it caused.
func fetchLayers(ctx context.Context, layers []v1.Descriptor, limit int, fetch func(ctx context.Context, i int, l v1.Descriptor) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var sem chan struct{}
	if limit > 0 {
		sem = make(chan struct{}, limit)
	}
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Go(func() {
			if sem != nil {
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-ctx.Done():
					errs[i] = ctx.Err()
					return
				}
			}
			if errs[i] = fetch(ctx, i, l); errs[i] != nil {
				cancel()
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
	}
	return errors.Join(errs...)
}

type pull struct {
	staging
	puller *remote.Puller
	repo   name.Repository
}

// fetchAll fetches the config and the layers, parallel at a time.
func (p *pull) fetchAll(ctx context.Context, m *v1.Manifest, parallel int) error {
	if parallel <= 0 {
		parallel = 3
	}
	if err := p.fetch(ctx, m.Config, false); err != nil {
		return err
	}
	return fetchLayers(ctx, m.Layers, parallel, func(ctx context.Context, _ int, l v1.Descriptor) error {
		return p.fetch(ctx, l, true)
	})
}

// fetch stores blob d unless the store has it; layers are reported.
func (p *pull) fetch(ctx context.Context, d v1.Descriptor, layer bool) error {
	f := p.startFetch(d, layer, progressStep)
	open := func(ctx context.Context) (io.ReadCloser, error) {
		f.report(0, false)
		l, err := p.puller.Layer(ctx, p.repo.Digest(d.Digest.String()))
		if err != nil {
			return nil, err
		}
		return l.Compressed()
	}
	fetched, err := p.store.FetchBlob(ctx, d, open, f.onBytes)
	if err != nil {
		return err
	}
	f.done(fetched)
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
