// Package registry moves images between berth's image stores over the OCI
// distribution API: New serves a store (pull, and push so users can send
// images from a workstation), Pull fetches an image into a node's store,
// Push sends one from a local store.
//
// The control plane mounts the handler at /v2/, outside any body-size
// limit of the JSON API (blobs are large; the handler bounds them itself):
//
//	reg := registry.New(images, registry.Options{
//		Authorize: func(r *http.Request, push bool) error { ... },
//	})
//	mux.Handle("/v2/", reg)
//
// An agent pulls what an instance needs before it starts it, reusing the
// transport (TLS, client certificate, token) it talks to the API with:
//
//	img, err := registry.Pull(ctx, images, "https://server:7443", "demo/busybox:1@sha256:…",
//		registry.PullOptions{Transport: tr, Progress: func(p registry.Progress) { … }})
//
// The servers of a cluster each serve their own store, and pull what
// theirs lacks through from the others' (Options.Peers, peer.go), found
// in a Directory in etcd.
//
// PullUpstream (upstream.go) fetches images from the world's registries
// (Docker Hub, GHCR, private ones) with their auth, TLS and mirror
// settings (Config, config.go); Ensure applies a pull policy; a Handler
// with Options.Upstream pins (PinImage) and pulls through such images for
// the cluster, under the cluster's registry settings (SetUpstream,
// settings.go) and a template's pull secrets (private.go).
// SaveAllPlatforms (save.go) writes a multi-arch image's whole index.
//
// Repository names are berth image names without the tag ("demo/busybox"
// for "demo/busybox:1"). The store is one content-addressed pool, so any
// repository can read any blob it holds, unless Options.Readable narrows
// a caller's reads to the images it names (access.go).
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sync/singleflight"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

// Defaults for Options' zero values.
const (
	DefaultMaxManifestSize = 4 << 20
	DefaultMaxBlobSize     = 32 << 30
	DefaultUploadTTL       = 24 * time.Hour
)

// Options configure a registry handler.
type Options struct {
	// Authorize is asked before every request; push is true for requests
	// that write (uploads, manifest PUTs). An error wrapping
	// errdefs.ErrForbidden is answered 403 DENIED, any other error 401
	// UNAUTHORIZED. nil allows everything.
	Authorize func(r *http.Request, push bool) error
	// MaxManifestSize bounds pushed manifests; DefaultMaxManifestSize when zero.
	MaxManifestSize int64
	// MaxBlobSize bounds pushed blobs; DefaultMaxBlobSize when zero.
	MaxBlobSize int64
	// UploadTTL is how long an upload may sit idle, and a pushed blob wait
	// for its manifest, before they are removed; DefaultUploadTTL when zero.
	UploadTTL time.Duration
	// Peers, when set, are the other servers' registries this one pulls
	// a missing manifest or blob through from (see peer.go); nil answers
	// a miss with 404 at once.
	Peers *Peers
	// Upstream, when set, is how a miss nobody in the cluster can fill is
	// pulled from the image's own registry (a repository whose first
	// component names one: docker.io/library/nginx), through the mirrors
	// its Config names; nil never leaves the cluster.
	Upstream *UpstreamOptions
	// Private, when set, records the repositories pulled with pull
	// secrets, whose images PinImage pins only for templates whose own
	// credentials reach them (private.go).
	Private *PrivateRepos
	// Readable, when set, narrows which manifests and blobs a caller may
	// read (after Authorize let it in): those of the images it names,
	// whatever repository name the request uses (access.go). An error
	// wrapping errdefs.ErrForbidden is answered 403 DENIED. nil allows
	// every read Authorize allows.
	Readable ReadableFunc
	Logger   *slog.Logger
}

// Handler serves one image store over the OCI distribution API.
type Handler struct {
	store     *image.Store
	opts      Options
	upstream  atomic.Pointer[UpstreamOptions] // Options.Upstream, or what SetUpstream set
	log       *slog.Logger
	lastPrune atomic.Int64 // unix nanoseconds

	flights singleflight.Group // pull-throughs under way, by what they fetch
	misses  pinMisses          // short names docker.io just failed to pin
	// peerMisses are the tags PinImage found at no peer just now.
	peerMisses pinMisses
}

// New returns the handler serving store. It has no side effects.
func New(store *image.Store, opts Options) *Handler {
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = DefaultMaxManifestSize
	}
	if opts.MaxBlobSize <= 0 {
		opts.MaxBlobSize = DefaultMaxBlobSize
	}
	if opts.UploadTTL <= 0 {
		opts.UploadTTL = DefaultUploadTTL
	}
	h := &Handler{store: store, opts: opts, log: opts.Logger}
	h.upstream.Store(opts.Upstream)
	if h.log == nil {
		h.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return h
}

// SetUpstream replaces how misses are pulled from the images' own
// registries (Options.Upstream): the servers follow the cluster's
// registry settings with it. nil never leaves the cluster.
func (h *Handler) SetUpstream(u *UpstreamOptions) { h.upstream.Store(u) }

// Upstream is how misses are pulled from the images' registries now.
func (h *Handler) Upstream() *UpstreamOptions { return h.upstream.Load() }

// Error codes of the distribution spec.
const (
	codeBlobUnknown         = "BLOB_UNKNOWN"
	codeBlobUploadInvalid   = "BLOB_UPLOAD_INVALID"
	codeBlobUploadUnknown   = "BLOB_UPLOAD_UNKNOWN"
	codeDigestInvalid       = "DIGEST_INVALID"
	codeManifestBlobUnknown = "MANIFEST_BLOB_UNKNOWN"
	codeManifestInvalid     = "MANIFEST_INVALID"
	codeManifestUnknown     = "MANIFEST_UNKNOWN"
	codeNameInvalid         = "NAME_INVALID"
	codeNameUnknown         = "NAME_UNKNOWN"
	codeSizeInvalid         = "SIZE_INVALID"
	codeUnauthorized        = "UNAUTHORIZED"
	codeDenied              = "DENIED"
	codeUnsupported         = "UNSUPPORTED"
	codeUnknown             = "UNKNOWN"
)

// regError is an error answered with a status and a spec error code.
type regError struct {
	status int
	code   string
	msg    string
}

func (e *regError) Error() string { return e.code + ": " + e.msg }

func fail(status int, code, format string, args ...any) *regError {
	return &regError{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// writeError answers err in the spec's JSON error form.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var re *regError
	if !errors.As(err, &re) {
		h.log.Error("registry request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		re = fail(http.StatusInternalServerError, codeUnknown, "%v", err)
	}
	if re.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="berth"`)
	}
	body, _ := json.Marshal(map[string]any{"errors": []map[string]string{{"code": re.code, "message": re.msg}}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(re.status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// storeError turns a store error into a regError: notFound is the code for
// a missing object, invalid the one for bad input.
func storeError(err error, notFound, invalid string) error {
	switch {
	case errors.Is(err, errdefs.ErrNotFound):
		status := http.StatusNotFound
		if notFound == codeManifestBlobUnknown {
			status = http.StatusBadRequest
		}
		return fail(status, notFound, "%v", err)
	case errors.Is(err, errdefs.ErrInvalidArgument):
		return fail(http.StatusBadRequest, invalid, "%v", err)
	case errors.Is(err, errdefs.ErrTooLarge):
		return fail(http.StatusRequestEntityTooLarge, codeSizeInvalid, "%v", err)
	case errors.Is(err, errdefs.ErrConflict):
		return fail(http.StatusConflict, codeBlobUploadInvalid, "%v", err)
	}
	return err
}

var (
	// Repository names as the distribution spec has them (path components
	// of lowercase alphanumerics joined by single separators), so no
	// component can be "." or ".." or empty.
	// The first component may carry a port: it names a registry host.
	// Compiled on first use: every command of the one binary (berth exec
	// too) would otherwise compile them at start, tagRe's {0,127} above all.
	nameRe = sync.OnceValue(func() *regexp.Regexp {
		return regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	})
	tagRe = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`) })
)

const maxNameLen = 255

// checkName validates a repository name.
func checkName(name string) error {
	if len(name) > maxNameLen || !nameRe().MatchString(name) {
		return fail(http.StatusBadRequest, codeNameInvalid, "repository name %q: want lowercase path components [a-z0-9] joined by . _ __ - and /, at most %d characters", truncate(name), maxNameLen)
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

// parseDigest parses a digest from the wire.
func parseDigest(s string) (v1.Hash, error) {
	h, err := v1.NewHash(s)
	if err == nil {
		err = image.CheckDigest(h)
	}
	if err != nil {
		return v1.Hash{}, fail(http.StatusBadRequest, codeDigestInvalid, "digest %q: want sha256:<64 lowercase hex digits>", truncate(s))
	}
	return h, nil
}

// route is a parsed request path.
type route struct {
	kind string // "base", "catalog", "manifest", "blob", "upload", "tags"
	name string
	ref  string // tag or digest, blob digest, or upload id ("" starts one)
}

// parseRoute splits /v2/<name>/<rest>. Names contain slashes, so the
// operation is read from the end.
func parseRoute(p string) (route, error) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok && p != "/v2" {
		return route{}, fail(http.StatusNotFound, codeUnsupported, "not a registry path: %q", truncate(p))
	}
	if rest == "" {
		return route{kind: "base"}, nil
	}
	if rest == "_catalog" {
		return route{kind: "catalog"}, nil
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	at := func(i int) string { // segment i from the end, 1-based
		if i > n {
			return "\x00"
		}
		return segs[n-i]
	}
	var r route
	var k int // segments after the name
	switch {
	case at(2) == "tags" && at(1) == "list":
		r, k = route{kind: "tags"}, 2
	case at(2) == "manifests":
		r, k = route{kind: "manifest", ref: at(1)}, 2
	case at(2) == "blobs" && at(1) == "uploads":
		r, k = route{kind: "upload"}, 2
	case at(3) == "blobs" && at(2) == "uploads":
		r, k = route{kind: "upload", ref: at(1)}, 3
	case at(2) == "blobs":
		r, k = route{kind: "blob", ref: at(1)}, 2
	default:
		return route{}, fail(http.StatusNotFound, codeUnsupported, "not a registry path: %q", truncate(p))
	}
	if n <= k {
		return route{}, fail(http.StatusBadRequest, codeNameInvalid, "no repository name in %q", truncate(p))
	}
	r.name = strings.Join(segs[:n-k], "/")
	if err := checkName(r.name); err != nil {
		return route{}, err
	}
	return r, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if err := h.serve(w, r); err != nil {
		h.writeError(w, r, err)
	}
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) error {
	// Nothing legitimate is escaped; "%2F" in a name would change how it splits.
	if r.URL.RawPath != "" {
		return fail(http.StatusBadRequest, codeNameInvalid, "escaped characters in path %q", truncate(r.URL.RawPath))
	}
	rt, err := parseRoute(r.URL.Path)
	if err != nil {
		return err
	}
	push := r.Method != http.MethodGet && r.Method != http.MethodHead
	if h.opts.Authorize != nil {
		if err := h.opts.Authorize(r, push); err != nil {
			if errors.Is(err, errdefs.ErrForbidden) {
				return fail(http.StatusForbidden, codeDenied, "%v", err)
			}
			return fail(http.StatusUnauthorized, codeUnauthorized, "%v", err)
		}
	}
	if !push {
		if err := h.checkRead(r, rt); err != nil {
			return err
		}
	}
	ctx := r.Context()
	switch m := r.Method; {
	case rt.kind == "base" && !push:
		w.Header().Set("Content-Type", "application/json")
		if m == http.MethodGet {
			_, _ = io.WriteString(w, "{}")
		}
		return nil
	case rt.kind == "catalog" && m == http.MethodGet:
		return h.catalog(ctx, w, r)
	case rt.kind == "tags" && m == http.MethodGet:
		return h.tags(ctx, w, r, rt.name)
	case rt.kind == "manifest" && !push:
		return h.getManifest(ctx, w, r, rt)
	case rt.kind == "manifest" && m == http.MethodPut:
		return h.putManifest(ctx, w, r, rt)
	case rt.kind == "blob" && !push:
		return h.getBlob(w, r, rt)
	case rt.kind == "upload" && rt.ref == "" && m == http.MethodPost:
		return h.startUpload(ctx, w, r, rt)
	case rt.kind == "upload" && rt.ref != "":
		switch m {
		case http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete:
			return h.upload(ctx, w, r, rt)
		}
	}
	return fail(http.StatusMethodNotAllowed, codeUnsupported, "%s is not supported on %s", r.Method, truncate(r.URL.Path))
}

func (h *Handler) getManifest(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route) error {
	ref, tag := rt.ref, ""
	var byDigest v1.Hash
	if strings.Contains(ref, ":") {
		d, err := parseDigest(ref)
		if err != nil {
			return err
		}
		byDigest = d
	} else {
		if !tagRe().MatchString(ref) {
			return fail(http.StatusBadRequest, codeManifestInvalid, "tag %q: want [A-Za-z0-9_][A-Za-z0-9._-]{0,127}", truncate(ref))
		}
		tag, ref = ref, rt.name+":"+ref
	}
	raw, mt, digest, err := h.manifestOrIndex(ctx, ref, byDigest)
	if errors.Is(err, errdefs.ErrNotFound) && h.pullsThrough(r) {
		if err = h.pullManifest(ctx, rt.name, tag, byDigest); err == nil {
			raw, mt, digest, err = h.manifestOrIndex(ctx, ref, byDigest)
		}
	}
	if err != nil {
		return storeError(err, codeManifestUnknown, codeManifestInvalid)
	}
	w.Header().Set("Content-Type", string(mt))
	w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
	w.Header().Set("Docker-Content-Digest", digest.String())
	w.Header().Set("ETag", `"`+digest.String()+`"`)
	if r.Method == http.MethodHead {
		return nil
	}
	_, _ = w.Write(raw)
	return nil
}

// manifestOrIndex is the image manifest ref names, or for a digest the
// multi-arch index the store keeps under it (image.Store.PutIndex).
func (h *Handler) manifestOrIndex(ctx context.Context, ref string, byDigest v1.Hash) ([]byte, types.MediaType, v1.Hash, error) {
	raw, mt, digest, err := h.store.Manifest(ctx, ref)
	if !errors.Is(err, errdefs.ErrNotFound) || byDigest.Hex == "" {
		return raw, mt, digest, err
	}
	ir, ierr := h.store.Index(byDigest)
	if ierr != nil {
		return raw, mt, digest, err
	}
	var probe struct {
		MediaType types.MediaType `json:"mediaType"`
	}
	if json.Unmarshal(ir, &probe) != nil || probe.MediaType == "" {
		probe.MediaType = types.OCIImageIndex
	}
	return ir, probe.MediaType, byDigest, nil
}

func (h *Handler) putManifest(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route) error {
	var byDigest v1.Hash
	name := ""
	if strings.Contains(rt.ref, ":") {
		d, err := parseDigest(rt.ref)
		if err != nil {
			return err
		}
		byDigest = d
	} else {
		if !tagRe().MatchString(rt.ref) {
			return fail(http.StatusBadRequest, codeManifestInvalid, "tag %q: want [A-Za-z0-9_][A-Za-z0-9._-]{0,127}", truncate(rt.ref))
		}
		name = rt.name + ":" + rt.ref
	}
	mt := types.MediaType(r.Header.Get("Content-Type"))
	if i := strings.IndexByte(string(mt), ';'); i >= 0 {
		mt = types.MediaType(strings.TrimSpace(string(mt[:i])))
	}
	if mt != "" && !image.IsManifestType(mt) {
		return fail(http.StatusUnsupportedMediaType, codeManifestInvalid, "media type %q: berth stores single-platform image manifests (%s, %s)", truncate(string(mt)), types.OCIManifestSchema1, types.DockerManifestSchema2)
	}
	if r.ContentLength > h.opts.MaxManifestSize {
		return fail(http.StatusRequestEntityTooLarge, codeSizeInvalid, "manifest of %d bytes: the limit is %d", r.ContentLength, h.opts.MaxManifestSize)
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, h.opts.MaxManifestSize+1))
	if err != nil {
		return fmt.Errorf("manifest %s:%s: %w", rt.name, rt.ref, err)
	}
	if int64(len(raw)) > h.opts.MaxManifestSize {
		return fail(http.StatusRequestEntityTooLarge, codeSizeInvalid, "manifest larger than %d bytes", h.opts.MaxManifestSize)
	}
	digest := image.Digest(raw)
	if byDigest.Hex != "" && byDigest != digest {
		return fail(http.StatusBadRequest, codeDigestInvalid, "manifest content is %s, not %s", digest, byDigest)
	}
	if _, err := h.store.CommitManifest(ctx, raw, mt, name); err != nil {
		return storeError(err, codeManifestBlobUnknown, codeManifestInvalid)
	}
	w.Header().Set("Location", "/v2/"+rt.name+"/manifests/"+digest.String())
	w.Header().Set("Docker-Content-Digest", digest.String())
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (h *Handler) getBlob(w http.ResponseWriter, r *http.Request, rt route) error {
	d, err := parseDigest(rt.ref)
	if err != nil {
		return err
	}
	f, err := h.store.OpenBlob(d)
	if errors.Is(err, errdefs.ErrNotFound) && h.pullsThrough(r) {
		if err = h.pullBlob(r.Context(), rt.name, d); err == nil {
			f, err = h.store.OpenBlob(d)
		}
	}
	if err != nil {
		return storeError(err, codeBlobUnknown, codeDigestInvalid)
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("ETag", `"`+d.String()+`"`)
	w.Header().Set("Cache-Control", "max-age=31536000, immutable")
	// ServeContent answers HEAD and Range requests; a zero time sends no Last-Modified.
	http.ServeContent(w, r, "", time.Time{}, f)
	return nil
}

func (h *Handler) uploadLocation(w http.ResponseWriter, name string, u *image.Upload) {
	w.Header().Set("Location", "/v2/"+name+"/blobs/uploads/"+u.ID())
	w.Header().Set("Docker-Upload-UUID", u.ID())
	// Range is inclusive; an empty upload still says "0-0", as registries do.
	end := u.Size() - 1
	if end < 0 {
		end = 0
	}
	w.Header().Set("Range", fmt.Sprintf("0-%d", end))
	w.Header().Set("Content-Length", "0")
}

func (h *Handler) blobCreated(w http.ResponseWriter, name string, d v1.Hash) {
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+d.String())
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
}

func (h *Handler) startUpload(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route) error {
	h.maybePrune(ctx)
	q := r.URL.Query()
	if m := q.Get("mount"); m != "" {
		// One pool of blobs: a mount succeeds whenever the store has it.
		d, err := parseDigest(m)
		if err != nil {
			return err
		}
		if f, err := h.store.OpenBlob(d); err == nil {
			f.Close()
			h.blobCreated(w, rt.name, d)
			return nil
		}
	}
	u, err := h.store.NewUpload()
	if err != nil {
		return err
	}
	if ds := q.Get("digest"); ds != "" {
		// Monolithic: the whole blob is this request's body.
		d, err := parseDigest(ds)
		if err != nil {
			return errors.Join(err, u.Cancel())
		}
		return h.finish(ctx, w, r, rt, u, d, true)
	}
	defer u.Close()
	h.uploadLocation(w, rt.name, u)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// upload serves requests on an upload session.
func (h *Handler) upload(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route) error {
	u, err := h.store.OpenUpload(rt.ref)
	if err != nil {
		return storeError(err, codeBlobUploadUnknown, codeBlobUploadInvalid)
	}
	switch r.Method {
	case http.MethodGet:
		defer u.Close()
		h.uploadLocation(w, rt.name, u)
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodDelete:
		if err := u.Cancel(); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	case http.MethodPut:
		ds := r.URL.Query().Get("digest")
		if ds == "" {
			defer u.Close()
			return fail(http.StatusBadRequest, codeDigestInvalid, "upload %s: PUT needs ?digest=", u.ID())
		}
		d, err := parseDigest(ds)
		if err != nil {
			return errors.Join(err, u.Cancel())
		}
		return h.finish(ctx, w, r, rt, u, d, false)
	}
	// PATCH: a chunk, placed by Content-Range when the client says where.
	defer u.Close()
	if err := h.checkRange(r, u); err != nil {
		h.uploadLocation(w, rt.name, u)
		return err
	}
	if _, err := u.Append(ctx, r.Body, h.opts.MaxBlobSize); err != nil {
		if errors.Is(err, errdefs.ErrTooLarge) {
			return errors.Join(storeError(err, "", ""), u.Cancel())
		}
		return storeError(err, codeBlobUploadUnknown, codeBlobUploadInvalid)
	}
	h.uploadLocation(w, rt.name, u)
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// checkRange refuses a chunk that does not start where the upload ends.
func (h *Handler) checkRange(r *http.Request, u *image.Upload) error {
	cr := r.Header.Get("Content-Range")
	if cr == "" {
		return nil
	}
	cr = strings.TrimPrefix(cr, "bytes ")
	startS, endS, ok := strings.Cut(cr, "-")
	start, err1 := strconv.ParseInt(startS, 10, 64)
	end, err2 := strconv.ParseInt(strings.SplitN(endS, "/", 2)[0], 10, 64)
	if !ok || err1 != nil || err2 != nil || end < start {
		return fail(http.StatusBadRequest, codeBlobUploadInvalid, "Content-Range %q: want <start>-<end>", truncate(cr))
	}
	if start != u.Size() {
		return fail(http.StatusRequestedRangeNotSatisfiable, codeBlobUploadInvalid, "chunk starts at %d but the upload has %d bytes", start, u.Size())
	}
	if r.ContentLength >= 0 && r.ContentLength != end-start+1 {
		return fail(http.StatusBadRequest, codeSizeInvalid, "Content-Range %q does not match Content-Length %d", cr, r.ContentLength)
	}
	return nil
}

// finish appends the request's body (the last chunk, maybe empty) and
// commits the upload as blob d. A wrong digest ends the upload, and so
// does any failure of a monolithic one, which no client can resume.
func (h *Handler) finish(ctx context.Context, w http.ResponseWriter, r *http.Request, rt route, u *image.Upload, d v1.Hash, monolithic bool) error {
	if _, err := u.Append(ctx, r.Body, h.opts.MaxBlobSize); err != nil {
		if monolithic || errors.Is(err, errdefs.ErrTooLarge) {
			return errors.Join(storeError(err, codeBlobUploadUnknown, codeBlobUploadInvalid), u.Cancel())
		}
		defer u.Close()
		return storeError(err, codeBlobUploadUnknown, codeBlobUploadInvalid)
	}
	if err := u.Commit(d); err != nil {
		return storeError(err, codeBlobUploadUnknown, codeDigestInvalid)
	}
	h.blobCreated(w, rt.name, d)
	return nil
}

// maybePrune removes stale uploads and staged blobs, at most every ten
// minutes, on the way into a new upload.
func (h *Handler) maybePrune(ctx context.Context) {
	now := time.Now().UnixNano()
	last := h.lastPrune.Load()
	if now-last < int64(10*time.Minute) || !h.lastPrune.CompareAndSwap(last, now) {
		return
	}
	if err := h.store.PruneStaging(ctx, h.opts.UploadTTL); err != nil {
		h.log.Warn("registry: pruning stale uploads", "err", err)
	}
}

// paginate applies the spec's n and last parameters to the sorted list,
// setting a Link header when more follow.
func paginate(w http.ResponseWriter, r *http.Request, all []string) ([]string, error) {
	q := r.URL.Query()
	if last := q.Get("last"); last != "" {
		i := sort.SearchStrings(all, last)
		if i < len(all) && all[i] == last {
			i++
		}
		all = all[i:]
	}
	if ns := q.Get("n"); ns != "" {
		n, err := strconv.Atoi(ns)
		if err != nil || n < 0 {
			return nil, fail(http.StatusBadRequest, codeUnsupported, "n=%q: want a count", truncate(ns))
		}
		if n < len(all) {
			all = all[:n]
			if n > 0 {
				next := url.Values{"n": {ns}, "last": {all[n-1]}}
				w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, next.Encode()))
			}
		}
	}
	if all == nil {
		all = []string{}
	}
	return all, nil
}

func (h *Handler) tags(ctx context.Context, w http.ResponseWriter, r *http.Request, name string) error {
	names, err := h.store.Names(ctx)
	if err != nil {
		return err
	}
	var tags []string
	for _, n := range names {
		if repo, tag, ok := cutTag(n); ok && repo == name {
			tags = append(tags, tag)
		}
	}
	if len(tags) == 0 {
		return fail(http.StatusNotFound, codeNameUnknown, "repository %q has no tagged images", name)
	}
	sort.Strings(tags)
	if tags, err = paginate(w, r, tags); err != nil {
		return err
	}
	return writeJSON(w, map[string]any{"name": name, "tags": tags})
}

func (h *Handler) catalog(ctx context.Context, w http.ResponseWriter, r *http.Request) error {
	names, err := h.store.Names(ctx)
	if err != nil {
		return err
	}
	var repos []string
	for _, n := range names {
		if repo, _, ok := cutTag(n); ok && nameRe().MatchString(repo) {
			if len(repos) == 0 || repos[len(repos)-1] != repo {
				repos = append(repos, repo)
			}
		}
	}
	sort.Strings(repos)
	if repos, err = paginate(w, r, repos); err != nil {
		return err
	}
	return writeJSON(w, map[string]any{"repositories": repos})
}

// cutTag splits "repository:tag".
func cutTag(name string) (repo, tag string, ok bool) {
	i := strings.LastIndexByte(name, ':')
	if i < 0 || strings.Contains(name[i:], "/") {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}

func writeJSON(w http.ResponseWriter, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = w.Write(body)
	return nil
}
