package registry

// Pulls from the world's registries (Docker Hub, GHCR, Quay, private
// ones). The library does the distribution protocol and its auth (the
// bearer-token challenge, basic auth, tokens); berth fetches blobs itself
// so a broken download resumes with a Range request, and hands every layer
// to the store as it arrives, where it is verified and unpacked in the
// same pass (image.Store.FetchLayer). All layers are fetched at once.

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// Docker Hub's names: users write docker.io, the API lives at index.docker.io.
const (
	DockerHub         = "docker.io"
	dockerHubRegistry = name.DefaultRegistry
)

// ErrForeignLayer is wrapped when an image has a layer whose content is
// not in the registry (Windows base layers and other non-distributable ones).
var ErrForeignLayer = fmt.Errorf("foreign layer: its content is not in the registry, berth does not fetch it: %w", errdefs.ErrInvalidArgument)

// Normalize parses ref the way docker does: "nginx" is
// docker.io/library/nginx:latest, "o/r" is docker.io/o/r:latest, a first
// component with a dot or a port (or "localhost") names the registry.
func Normalize(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w: %w", ref, err, errdefs.ErrInvalidArgument)
	}
	return r, nil
}

// LocalName is the name a pulled image gets in the store:
// REGISTRY/REPOSITORY:TAG with Docker Hub written docker.io; "" for a
// reference by digest only.
func LocalName(r name.Reference) string {
	host := r.Context().RegistryStr()
	if host == dockerHubRegistry {
		host = DockerHub
	}
	switch t := r.(type) {
	case name.Tag:
		return host + "/" + t.RepositoryStr() + ":" + t.TagStr()
	}
	if before, _, ok := strings.Cut(r.String(), "@"); ok {
		// A reference with both keeps its tag as the name.
		if i := strings.LastIndexByte(before, ':'); i > strings.LastIndexByte(before, '/') {
			if t, err := name.NewTag(before); err == nil {
				return host + "/" + t.RepositoryStr() + ":" + t.TagStr()
			}
		}
	}
	return ""
}

// UpstreamOptions tune PullUpstream.
type UpstreamOptions struct {
	// Config holds credentials and per-registry TLS, insecure and mirror
	// settings; nil is an empty config.
	Config *Config
	// Keychain finds credentials; Config.Keychain() when nil.
	Keychain authn.Keychain
	// Insecure allows plain HTTP or unverified TLS for the reference's
	// registry (not its mirrors), on top of Config.
	Insecure bool
	// CAFile adds trusted certificates for the reference's registry.
	CAFile string
	// Platform picks from a multi-arch index; image.NodePlatform() when nil.
	Platform *v1.Platform
	// Progress hears about every layer, as PullOptions.Progress does.
	Progress func(Progress)
	// Transport is the innermost transport (dialing); a clone of
	// http.DefaultTransport when nil. TLS settings are applied to a clone.
	Transport *http.Transport
	// Backoff is the first wait after a 429 or 503 without Retry-After,
	// doubled on each retry; 1s when zero.
	Backoff time.Duration
}

// Pulled is the result of PullUpstream.
type Pulled struct {
	image.Image
	// Index is the digest of the multi-arch index the image was chosen
	// from, "" for a single-platform reference.
	Index string
	// Source is the registry (or mirror) the image came from.
	Source string
}

// maxBlobResumes bounds how many times one blob download resumes.
const maxBlobResumes = 5

// PullUpstream fetches ref (normalised as Normalize does) from its
// registry into store and returns it, named LocalName(ref). Every blob is
// checked against its digest and every layer unpacked on the way in; a
// pull that fails keeps nothing.
func PullUpstream(ctx context.Context, store *image.Store, ref string, opts UpstreamOptions) (Pulled, error) {
	r, err := Normalize(ref)
	if err != nil {
		return Pulled{}, err
	}
	opts = opts.withDefaults()
	host := r.Context().RegistryStr()
	rc := opts.Config.Registry(host)
	var errs []error
	for _, m := range rc.Mirrors {
		p, err := pullFromMirror(ctx, store, r, m, opts)
		if err == nil {
			return p, nil
		}
		errs = append(errs, fmt.Errorf("mirror %s: %w", m, err))
	}
	ep := opts.registryEndpoint(host)
	p, err := pullFrom(ctx, store, r, r, ep, opts)
	if err != nil {
		// A mirror's failure matters only when the registry fails too.
		return Pulled{}, errors.Join(append([]error{err}, errs...)...)
	}
	return p, nil
}

func pullFromMirror(ctx context.Context, store *image.Store, r name.Reference, mirror string, opts UpstreamOptions) (Pulled, error) {
	u, err := url.Parse(mirror)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Pulled{}, fmt.Errorf("want http(s)://host[:port]: %w", errdefs.ErrInvalidArgument)
	}
	repo, err := name.NewRepository(u.Host + "/" + r.Context().RepositoryStr())
	if err != nil {
		return Pulled{}, err
	}
	var mr name.Reference = repo.Tag(r.Identifier())
	if d, ok := r.(name.Digest); ok {
		mr = repo.Digest(d.DigestStr())
	}
	return pullFrom(ctx, store, r, mr, opts.mirrorEndpoint(u), opts)
}

// withDefaults is o with an empty Config when it has none, and that
// config's keychain when it names none.
func (o UpstreamOptions) withDefaults() UpstreamOptions {
	if o.Config == nil {
		o.Config = &Config{}
	}
	if o.Keychain == nil {
		o.Keychain = o.Config.Keychain()
	}
	return o
}

// registryEndpoint is how o reaches registry host: insecurely when o or
// the config says so, trusting o.CAFile, else the CA the config names for
// it.
func (o UpstreamOptions) registryEndpoint(host string) endpoint {
	rc := o.Config.Registry(host)
	ep := endpoint{host: host, insecure: o.Insecure || rc.Insecure, caFile: rc.CA, caPEM: rc.CAPEM}
	if o.CAFile != "" {
		ep.caFile = o.CAFile
	}
	return ep
}

// mirrorEndpoint is how o reaches the mirror at u (http(s)://host[:port]):
// by u's scheme, insecurely when that is http or the config says so.
func (o UpstreamOptions) mirrorEndpoint(u *url.URL) endpoint {
	rc := o.Config.Registry(u.Host)
	return endpoint{host: u.Host, insecure: u.Scheme == "http" || rc.Insecure, caFile: rc.CA, caPEM: rc.CAPEM, scheme: u.Scheme}
}

// endpoint is how to reach one registry.
type endpoint struct {
	host     string
	insecure bool
	caFile   string
	caPEM    string // trusted on top of caFile's
	scheme   string // "" to find out (https unless insecure and it fails)
}

// httpTransport returns the transport for ep: its CA, and InsecureSkipVerify
// only when ep is insecure. Requests the library addresses with another
// scheme are sent with ep's (it guesses plain HTTP for loopback hosts).
func (ep *endpoint) httpTransport(ctx context.Context, base *http.Transport) (http.RoundTripper, error) {
	if base == nil {
		base = http.DefaultTransport.(*http.Transport)
	}
	tr := base.Clone()
	tlsConf := &tls.Config{MinVersion: tls.VersionTLS12}
	if tr.TLSClientConfig != nil {
		tlsConf = tr.TLSClientConfig.Clone()
	}
	if ep.caFile != "" || ep.caPEM != "" {
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if ep.caFile != "" {
			pem, err := os.ReadFile(ep.caFile)
			if err != nil {
				return nil, fmt.Errorf("registry %s: CA: %w", ep.host, err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry %s: CA file %s: no PEM certificate: %w", ep.host, ep.caFile, errdefs.ErrInvalidArgument)
			}
		}
		if ep.caPEM != "" && !pool.AppendCertsFromPEM([]byte(ep.caPEM)) {
			return nil, fmt.Errorf("registry %s: the cluster's CA for it: no PEM certificate: %w", ep.host, errdefs.ErrInvalidArgument)
		}
		tlsConf.RootCAs = pool
	}
	if ep.insecure {
		tlsConf.InsecureSkipVerify = true //nolint:gosec // asked for, for this registry only
	}
	tr.TLSClientConfig = tlsConf
	if ep.scheme == "" {
		ep.scheme = "https"
		if ep.insecure && !answersHTTPS(ctx, tr, ep.host) {
			ep.scheme = "http"
		}
	}
	return schemeTransport{scheme: ep.scheme, host: ep.host, inner: tr}, nil
}

// answersHTTPS reports whether host speaks TLS on its registry port.
func answersHTTPS(ctx context.Context, tr *http.Transport, host string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/v2/", nil)
	if err != nil {
		return false
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return true
}

// upstream is one pull's connection to a registry.
type upstream struct {
	ep     endpoint
	client *http.Client // authenticated; for blobs
	opts   []remote.Option
	repo   name.Repository
}

func dial(ctx context.Context, r name.Reference, ep endpoint, opts UpstreamOptions, scope string) (*upstream, error) {
	rt, err := ep.httpTransport(ctx, opts.Transport)
	if err != nil {
		return nil, err
	}
	rt = &backoffTransport{inner: rt, first: opts.Backoff, tries: 5}
	repo := r.Context()
	auth, err := authn.Resolve(ctx, opts.Keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo.RegistryStr(), err)
	}
	// It answers the registry's challenge: a bearer token (anonymous or
	// with the credentials) from the realm it names, or basic auth.
	tr, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, []string{repo.Scope(scope)})
	if err != nil {
		return nil, fmt.Errorf("registry %s: %w", repo.RegistryStr(), classify(err))
	}
	return &upstream{
		ep:     ep,
		client: &http.Client{Transport: tr},
		opts:   []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr)},
		repo:   repo,
	}, nil
}

// pullFrom pulls src from ep, naming the image after r.
func pullFrom(ctx context.Context, store *image.Store, r, src name.Reference, ep endpoint, opts UpstreamOptions) (Pulled, error) {
	fail := func(err error) (Pulled, error) {
		return Pulled{}, fmt.Errorf("pull %s: %w", r, classify(err))
	}
	up, err := dial(ctx, src, ep, opts, transport.PullScope)
	if err != nil {
		return fail(err)
	}
	desc, err := remote.Get(src, up.opts...)
	if err != nil {
		return fail(err)
	}
	if err := checkManifest(desc, src); err != nil {
		return fail(err)
	}
	out := Pulled{Source: up.ep.scheme + "://" + up.ep.host}
	raw, mt := desc.Manifest, desc.MediaType
	var rawIndex []byte
	if mt.IsIndex() {
		idx, err := v1.ParseIndexManifest(bytes.NewReader(raw))
		if err != nil {
			return fail(fmt.Errorf("index %s: %w: %w", desc.Digest, err, errdefs.ErrInvalidArgument))
		}
		child, err := choosePlatform(idx, opts.Platform)
		if err != nil {
			return fail(fmt.Errorf("index %s: %w", desc.Digest, err))
		}
		cref := up.repo.Digest(child.Digest.String())
		cdesc, err := remote.Get(cref, up.opts...)
		if err != nil {
			return fail(err)
		}
		if err := checkManifest(cdesc, cref); err != nil {
			return fail(err)
		}
		out.Index = desc.Digest.String()
		rawIndex = desc.Manifest
		raw, mt = cdesc.Manifest, cdesc.MediaType
	}
	if !image.IsManifestType(mt) {
		return fail(fmt.Errorf("%s is not an image manifest berth can run: %w", mt, errdefs.ErrInvalidArgument))
	}
	m, err := v1.ParseManifest(bytes.NewReader(raw))
	if err != nil {
		return fail(fmt.Errorf("manifest: %w: %w", err, errdefs.ErrInvalidArgument))
	}
	if err := image.CheckLayers(m); err != nil {
		return fail(fmt.Errorf("manifest: %w", err))
	}
	for i, l := range m.Layers {
		if l.MediaType == types.DockerForeignLayer || l.MediaType == types.OCIRestrictedLayer || l.MediaType == types.OCIUncompressedRestrictedLayer {
			return fail(fmt.Errorf("layer %d (%s, %s): %w", i, l.Digest, l.MediaType, ErrForeignLayer))
		}
	}
	p := &upstreamPull{staging: staging{ref: r.String(), store: store, report: opts.Progress}, up: up}
	img, err := p.commit(ctx, func(ctx context.Context) error { return p.fetchAll(ctx, m) }, raw, mt, LocalName(r))
	if err != nil {
		return Pulled{}, errors.Join(fmt.Errorf("pull %s from %s: %w", r, out.Source, classify(err)), p.unstage())
	}
	if rawIndex != nil {
		// Kept so that the index digest resolves here (a cluster pins it).
		if _, err := store.PutIndex(rawIndex); err != nil {
			return Pulled{}, fmt.Errorf("pull %s: %w", r, err)
		}
	}
	out.Image = img
	return out, nil
}

// checkManifest checks a fetched manifest against its digest, and against
// the digest the reference names.
func checkManifest(desc *remote.Descriptor, r name.Reference) error {
	got := image.Digest(desc.Manifest)
	if got != desc.Digest {
		return fmt.Errorf("manifest content is %s, the registry says %s: %w", got, desc.Digest, errdefs.ErrInvalidArgument)
	}
	if d, ok := r.(name.Digest); ok && d.DigestStr() != got.String() {
		return fmt.Errorf("manifest content is %s, want %s: %w", got, d.DigestStr(), errdefs.ErrInvalidArgument)
	}
	return nil
}

type upstreamPull struct {
	staging
	up *upstream
}

// fetchAll fetches the config, then every layer at once.
func (p *upstreamPull) fetchAll(ctx context.Context, m *v1.Manifest) error {
	if err := p.fetch(ctx, m.Config, nil); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	f, err := p.store.OpenBlob(m.Config.Digest)
	if err != nil {
		return err
	}
	cf, err := v1.ParseConfigFile(io.LimitReader(f, m.Config.Size))
	f.Close()
	if err != nil {
		return fmt.Errorf("config %s: %w: %w", m.Config.Digest, err, errdefs.ErrInvalidArgument)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return fmt.Errorf("config %s: %d diff IDs for %d layers: %w", m.Config.Digest, len(cf.RootFS.DiffIDs), len(m.Layers), errdefs.ErrInvalidArgument)
	}
	return fetchLayers(ctx, m.Layers, 0, func(ctx context.Context, i int, l v1.Descriptor) error {
		if err := p.fetch(ctx, l, &cf.RootFS.DiffIDs[i]); err != nil {
			return fmt.Errorf("layer %s: %w", l.Digest, err)
		}
		return nil
	})
}

// fetch stores blob d, a layer unpacked on the way when diffID is set.
func (p *upstreamPull) fetch(ctx context.Context, d v1.Descriptor, diffID *v1.Hash) error {
	layer := diffID != nil
	f := p.startFetch(d, layer, progressStep/4)
	open := func(ctx context.Context) (io.ReadCloser, error) {
		f.report(0, false)
		return p.up.openBlob(ctx, d)
	}
	var fetched bool
	var err error
	if layer {
		fetched, err = p.store.FetchLayer(ctx, d, *diffID, open, f.onBytes)
	} else {
		fetched, err = p.store.FetchBlob(ctx, d, open, f.onBytes)
	}
	if err != nil {
		return err
	}
	f.done(fetched)
	return nil
}

// openBlob starts the download of blob d; the reader resumes it with a
// Range request when the connection breaks.
func (u *upstream) openBlob(ctx context.Context, d v1.Descriptor) (io.ReadCloser, error) {
	b := &blobBody{
		ctx:    ctx,
		client: u.client,
		url:    fmt.Sprintf("%s://%s/v2/%s/blobs/%s", u.ep.scheme, u.repo.RegistryStr(), u.repo.RepositoryStr(), d.Digest),
		size:   d.Size,
	}
	if err := b.open(); err != nil {
		return nil, err
	}
	return b, nil
}

// blobBody reads a blob, reopening it from where it broke off.
type blobBody struct {
	ctx     context.Context
	client  *http.Client
	url     string
	size    int64
	off     int64
	body    io.ReadCloser
	resumes int
}

func (b *blobBody) open() error {
	req, err := http.NewRequestWithContext(b.ctx, http.MethodGet, b.url, nil)
	if err != nil {
		return err
	}
	if b.off > 0 {
		req.Header.Set("Range", "bytes="+strconv.FormatInt(b.off, 10)+"-")
	}
	// The client follows redirects to blob storage; credentials stay
	// with the registry's host.
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	switch {
	case resp.StatusCode == http.StatusPartialContent && b.off > 0:
		var start int64 = -1
		if cr := resp.Header.Get("Content-Range"); cr != "" {
			fmt.Sscanf(cr, "bytes %d-", &start)
		}
		if start != b.off {
			resp.Body.Close()
			return fmt.Errorf("resume at byte %d: registry answered Content-Range %q", b.off, resp.Header.Get("Content-Range"))
		}
	case resp.StatusCode == http.StatusOK:
		if b.off > 0 {
			// No Range support: skip what we have.
			if _, err := io.CopyN(io.Discard, resp.Body, b.off); err != nil {
				resp.Body.Close()
				return fmt.Errorf("resume at byte %d: %w", b.off, err)
			}
		}
	default:
		defer resp.Body.Close()
		return transport.CheckError(resp, http.StatusOK)
	}
	b.body = resp.Body
	return nil
}

func (b *blobBody) Read(p []byte) (int, error) {
	for {
		if b.body == nil {
			if err := b.open(); err != nil {
				return 0, err
			}
		}
		n, err := b.body.Read(p)
		b.off += int64(n)
		if err == nil || (errors.Is(err, io.EOF) && b.off >= b.size) {
			return n, err
		}
		if b.ctx.Err() != nil || b.resumes >= maxBlobResumes {
			return n, err
		}
		// Broken off (a reset, a short body): resume from b.off.
		b.body.Close()
		b.body = nil
		b.resumes++
		if n > 0 {
			return n, nil
		}
	}
}

func (b *blobBody) Close() error {
	if b.body == nil {
		return nil
	}
	return b.body.Close()
}

// backoffTransport retries requests a registry refuses for now (429 Too
// Many Requests, 503), waiting as its Retry-After says, or first, then
// twice as long each time.
type backoffTransport struct {
	inner http.RoundTripper
	first time.Duration
	tries int
}

// maxRetryAfter caps the wait a registry may ask for.
const maxRetryAfter = time.Minute

func (t *backoffTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	wait := t.first
	if wait <= 0 {
		wait = time.Second
	}
	for i := 0; ; i++ {
		resp, err := t.inner.RoundTrip(req)
		if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) || i >= t.tries {
			return resp, err
		}
		if req.Body != nil && req.GetBody == nil {
			return resp, nil // the body cannot be sent again
		}
		d := wait
		if s := resp.Header.Get("Retry-After"); s != "" {
			if sec, err := strconv.Atoi(s); err == nil && sec >= 0 {
				d = time.Duration(sec) * time.Second
			} else if at, err := http.ParseTime(s); err == nil {
				d = time.Until(at)
			}
		}
		d = min(max(d, 0), maxRetryAfter)
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		resp.Body.Close()
		timer := time.NewTimer(d)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
		wait *= 2
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, err
			}
			req = req.Clone(req.Context())
			req.Body = body
		}
	}
}

// CheckLogin asks the registry at host whether user and password are good:
// GET /v2/ with them, through the registry's challenge (basic auth, or a
// token from its realm).
func CheckLogin(ctx context.Context, host, user, password string, opts UpstreamOptions) error {
	if host == DockerHub {
		host = dockerHubRegistry
	}
	if opts.Config == nil {
		opts.Config = &Config{}
	}
	reg, err := name.NewRegistry(host)
	if err != nil {
		return fmt.Errorf("login %s: %w: %w", host, err, errdefs.ErrInvalidArgument)
	}
	ep := opts.registryEndpoint(host)
	rt, err := ep.httpTransport(ctx, opts.Transport)
	if err != nil {
		return fmt.Errorf("login %s: %w", host, err)
	}
	rt = &backoffTransport{inner: rt, first: opts.Backoff, tries: 5}
	auth := authn.FromConfig(authn.AuthConfig{Username: user, Password: password})
	tr, err := transport.NewWithContext(ctx, reg, auth, rt, nil)
	if err != nil {
		return fmt.Errorf("login %s: %w", host, classify(err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ep.scheme+"://"+host+"/v2/", nil)
	if err != nil {
		return err
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return fmt.Errorf("login %s as %s: %w", host, user, classify(err))
	}
	defer resp.Body.Close()
	if err := transport.CheckError(resp, http.StatusOK); err != nil {
		return fmt.Errorf("login %s as %s: %w", host, user, classify(err))
	}
	return nil
}

// IsUpstream reports whether ref names its registry (a first component
// with a dot or a port, or localhost), as opposed to a name in berth's own
// store and server ("demo/app:1").
func IsUpstream(ref string) bool {
	first, _, ok := strings.Cut(ref, "/")
	return ok && (strings.ContainsAny(first, ".:") || first == "localhost")
}

// PushUpstream sends the local image named ref (REGISTRY/REPOSITORY[:TAG])
// to its registry. Blobs the registry has are not sent again; progress,
// when set, hears the bytes sent of the bytes to send.
func PushUpstream(ctx context.Context, store *image.Store, ref string, opts UpstreamOptions, progress func(done, total int64)) (image.Image, error) {
	r, err := Normalize(ref)
	if err != nil {
		return image.Image{}, err
	}
	tag, ok := r.(name.Tag)
	if !ok {
		return image.Image{}, fmt.Errorf("push %s: name the image REGISTRY/REPOSITORY[:TAG], without a digest: %w", ref, errdefs.ErrInvalidArgument)
	}
	localName := LocalName(r)
	oimg, img, err := store.OCIImage(ctx, localName)
	if err == nil && img.Name != localName {
		err = fmt.Errorf("image %q: %w", localName, image.ErrNotFound)
	}
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s: %w", localName, err)
	}
	opts = opts.withDefaults()
	host := r.Context().RegistryStr()
	ep := opts.registryEndpoint(host)
	up, err := dial(ctx, r, ep, opts, transport.PushScope)
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s: %w", localName, err)
	}
	wopts := up.opts
	done := make(chan struct{})
	if progress != nil {
		updates := make(chan v1.Update, 16)
		go func() {
			defer close(done)
			for u := range updates {
				progress(u.Complete, u.Total)
			}
		}()
		wopts = append(wopts, remote.WithProgress(updates))
	} else {
		close(done)
	}
	err = remote.Write(tag, oimg, wopts...)
	<-done // the library closes updates when it returns
	if err != nil {
		return image.Image{}, fmt.Errorf("push %s to %s: %w", localName, host, classify(err))
	}
	return img, nil
}
