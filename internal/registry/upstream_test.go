package registry_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/compression"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/unpack"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/registry/registrytest"
)

// httpsOnly sends every request over TLS: the library picks plain HTTP
// for loopback hosts.
type httpsOnly struct{ inner http.RoundTripper }

func (t httpsOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		r = r.Clone(r.Context())
		r.URL.Scheme = "https"
	}
	return t.inner.RoundTrip(r)
}

// remotePush writes img (a v1.Image or v1.ImageIndex) to ref as any OCI
// client would.
func remotePush(t testing.TB, ca *registrytest.CA, ref string, auth authn.Authenticator, img any) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithAuth(auth), remote.WithTransport(httpsOnly{ca.Client().Transport})}
	var d v1.Hash
	switch v := img.(type) {
	case v1.Image:
		err = remote.Write(r, v, opts...)
		if err == nil {
			d, err = v.Digest()
		}
	case v1.ImageIndex:
		err = remote.WriteIndex(r, v, opts...)
		if err == nil {
			d, err = v.Digest()
		}
	}
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return d
}

// configFor trusts ca for host and logs in as user.
func configFor(ca *registrytest.CA, host, user, password string) *registry.Config {
	cfg := &registry.Config{Registries: map[string]registry.RegistryConfig{host: {CA: ca.CAFile}}}
	if user != "" {
		cfg.SetAuth(host, user, password)
	}
	return cfg
}

// options pulls with cfg's credentials only, never the host's docker config.
func options(cfg *registry.Config) registry.UpstreamOptions {
	return registry.UpstreamOptions{Config: cfg, Keychain: cfg, Backoff: 50 * time.Millisecond}
}

// tarLayer is a layer holding one file.
func tarLayer(t testing.TB, path, content string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: path, Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(content))}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// mixedImage has a zstd layer and an uncompressed one.
func mixedImage(t testing.TB) v1.Image {
	t.Helper()
	zt := tarLayer(t, "etc/zstd.txt", "compressed with zstd\n")
	zl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(zt)), nil },
		tarball.WithCompression(compression.ZStd), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	ul := static.NewLayer(tarLayer(t, "etc/plain.txt", "not compressed\n"), types.OCIUncompressedLayer)
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: zl, MediaType: types.OCILayerZStd}, mutate.Addendum{Layer: ul, MediaType: types.OCIUncompressedLayer})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func diffIDs(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	return cf.RootFS.DiffIDs
}

// TestPullUpstreamBasicAuth pulls from distribution behind TLS and
// htpasswd: gzip, zstd and uncompressed layers, by tag and by digest, each
// layer unpacked on the way in; a wrong password is a clear 401 and a
// missing tag "manifest unknown" naming the reference.
func TestPullUpstreamBasicAuth(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	alice := &authn.Basic{Username: "alice", Password: "s3cret"}
	gz := randomImage(t, 1, 2, 64<<10)
	gzDigest := remotePush(t, ca, host+"/test/app:1", alice, gz)
	mixed := mixedImage(t)
	mixedDigest := remotePush(t, ca, host+"/test/mixed:1", alice, mixed)
	cfg := configFor(ca, host, "alice", "s3cret")

	store := openStore(t)
	var layers []registry.Progress
	opts := options(cfg)
	opts.Progress = func(p registry.Progress) { layers = append(layers, p) }
	p, err := registry.PullUpstream(ctx, store, host+"/test/app:1", opts)
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != gzDigest.String() || p.Name != host+"/test/app:1" || p.Source != "https://"+host {
		t.Fatalf("pulled %s %s from %s, want %s %s from https://%s", p.Name, p.Digest, p.Source, host+"/test/app:1", gzDigest, host)
	}
	for i, id := range diffIDs(t, gz) {
		if _, err := os.Stat(filepath.Join(store.LayerDir(id.String()), "layer"+string(rune('0'+i)), "data")); err != nil {
			t.Errorf("layer %d not unpacked at pull: %v", i, err)
		}
	}
	if len(layers) == 0 || layers[len(layers)-1].Done != layers[len(layers)-1].Total {
		t.Errorf("progress %+v: want reports ending with a whole layer", layers)
	}

	p, err = registry.PullUpstream(ctx, store, host+"/test/mixed:1", options(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != mixedDigest.String() {
		t.Fatalf("pulled %s, want %s", p.Digest, mixedDigest)
	}
	ids := diffIDs(t, mixed)
	for i, f := range []string{"etc/zstd.txt", "etc/plain.txt"} {
		if _, err := os.Stat(filepath.Join(store.LayerDir(ids[i].String()), f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	// Docker's media types: a v2 schema 2 manifest with a gzip layer.
	dl, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(tarLayer(t, "etc/docker.txt", "docker media types\n"))), nil
	}, tarball.WithMediaType(types.DockerLayer))
	if err != nil {
		t.Fatal(err)
	}
	dimg, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.DockerManifestSchema2), types.DockerConfigJSON),
		mutate.Addendum{Layer: dl, MediaType: types.DockerLayer})
	if err != nil {
		t.Fatal(err)
	}
	dDigest := remotePush(t, ca, host+"/test/docker:1", alice, dimg)
	if p, err := registry.PullUpstream(ctx, store, host+"/test/docker:1", options(cfg)); err != nil || p.Digest != dDigest.String() {
		t.Fatalf("docker media types: %+v, %v; want %s", p.Image, err, dDigest)
	}
	if _, err := os.Stat(filepath.Join(store.LayerDir(diffIDs(t, dimg)[0].String()), "etc/docker.txt")); err != nil {
		t.Errorf("docker layer not unpacked: %v", err)
	}

	byDigest := openStore(t)
	p, err = registry.PullUpstream(ctx, byDigest, host+"/test/app@"+gzDigest.String(), options(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if p.Digest != gzDigest.String() || p.Name != "" {
		t.Fatalf("by digest: %q %s, want unnamed %s", p.Name, p.Digest, gzDigest)
	}

	_, err = registry.PullUpstream(ctx, openStore(t), host+"/test/app:1", options(configFor(ca, host, "alice", "wrong")))
	if !errors.Is(err, errdefs.ErrUnauthorized) || !strings.Contains(err.Error(), "401") && !strings.Contains(err.Error(), "UNAUTHORIZED") {
		t.Fatalf("wrong password: %v, want a 401 unauthorized", err)
	}
	_, err = registry.PullUpstream(ctx, openStore(t), host+"/test/app:nope", options(cfg))
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(strings.ToLower(err.Error()), "manifest unknown") || !strings.Contains(err.Error(), host+"/test/app:nope") {
		t.Fatalf("missing tag: %v, want manifest unknown naming the reference", err)
	}

	// A layer that would write through a symlink out of its root.
	var evil bytes.Buffer
	tw := tar.NewWriter(&evil)
	_ = tw.WriteHeader(&tar.Header{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: "/etc", Mode: 0o777})
	_ = tw.WriteHeader(&tar.Header{Name: "etc/berth-pwned", Typeflag: tar.TypeReg, Mode: 0o644})
	_ = tw.Close()
	evilImg, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
		mutate.Addendum{Layer: static.NewLayer(evil.Bytes(), types.OCIUncompressedLayer), MediaType: types.OCIUncompressedLayer})
	if err != nil {
		t.Fatal(err)
	}
	remotePush(t, ca, host+"/test/evil:1", alice, evilImg)
	evilStore := openStore(t)
	_, err = registry.PullUpstream(ctx, evilStore, host+"/test/evil:1", options(cfg))
	if !errors.Is(err, unpack.ErrUnsafe) || !strings.Contains(err.Error(), `entry "etc/berth-pwned"`) {
		t.Fatalf("hostile layer: %v, want it refused naming the entry", err)
	}
	assertNoLeftovers(t, evilStore, 0)
	if left, _ := os.ReadDir(filepath.Join(evilStore.Root(), "layers")); len(left) != 0 {
		t.Fatalf("layers left behind: %v", left)
	}

	if err := registry.CheckLogin(ctx, host, "alice", "wrong", options(cfg)); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("login with a wrong password: %v", err)
	}
	if err := registry.CheckLogin(ctx, host, "alice", "s3cret", options(cfg)); err != nil {
		t.Fatalf("login: %v", err)
	}
}

// TestPullUpstreamTokenIndex pulls a two-arch index from distribution
// behind a token server (Docker Hub's flow): anonymously from a public
// repository, with a password from a private one; the platform picks the
// manifest.
func TestPullUpstreamTokenIndex(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	ts := registrytest.NewTokenServer(t, ca, "bob", "pw")
	host := registrytest.StartDistribution(t, ca, ts.AuthSection())
	bob := &authn.Basic{Username: "bob", Password: "pw"}

	amd := randomImage(t, 2, 1, 4<<10)
	arm := randomImage(t, 3, 1, 4<<10)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	idxDigest := remotePush(t, ca, host+"/public/multi:1", bob, idx)
	remotePush(t, ca, host+"/private/multi:1", bob, idx)
	amdDigest, _ := amd.Digest()
	armDigest, _ := arm.Digest()

	anon := configFor(ca, host, "", "")
	for _, c := range []struct {
		platform string
		want     v1.Hash
	}{{"linux/amd64", amdDigest}, {"linux/arm64/v8", armDigest}} {
		plat, err := image.ParsePlatform(c.platform)
		if err != nil {
			t.Fatal(err)
		}
		opts := options(anon)
		opts.Platform = &plat
		p, err := registry.PullUpstream(ctx, openStore(t), host+"/public/multi:1", opts)
		if err != nil {
			t.Fatalf("%s: %v", c.platform, err)
		}
		if p.Digest != c.want.String() || p.Index != idxDigest.String() {
			t.Fatalf("%s: pulled %s from index %s, want %s from %s", c.platform, p.Digest, p.Index, c.want, idxDigest)
		}
	}
	plat := v1.Platform{OS: "linux", Architecture: "s390x"}
	opts := options(anon)
	opts.Platform = &plat
	if _, err := registry.PullUpstream(ctx, openStore(t), host+"/public/multi:1", opts); err == nil || !strings.Contains(err.Error(), "linux/s390x") {
		t.Fatalf("absent platform: %v", err)
	}
	if _, err := registry.PullUpstream(ctx, openStore(t), host+"/private/multi:1", options(anon)); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("private repository, anonymously: %v, want unauthorized", err)
	}
	before := ts.Requests.Load()
	if _, err := registry.PullUpstream(ctx, openStore(t), host+"/private/multi:1@"+idxDigest.String(), options(configFor(ca, host, "bob", "pw"))); err != nil {
		t.Fatalf("private repository with a password, by digest: %v", err)
	}
	if ts.Requests.Load() == before {
		t.Fatal("the pull asked the token server for nothing")
	}
}

// faultProxy stands between berth and a registry and misbehaves on demand.
type faultProxy struct {
	corrupt  atomic.Value // digest whose blob body is altered
	cut      atomic.Value // digest whose first GET breaks off half way
	tooMany  atomic.Int64 // manifest requests still to refuse with 429
	refused  atomic.Int64
	ranges   atomic.Int64 // blob GETs with a Range header
	blobGets atomic.Int64
}

func (f *faultProxy) handler(ca *registrytest.CA, upstream string) http.Handler {
	u, _ := url.Parse("https://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = ca.Client().Transport
	rp.ModifyResponse = func(resp *http.Response) error {
		path := resp.Request.URL.Path
		if !strings.Contains(path, "/blobs/sha256:") || resp.Request.Method != http.MethodGet || resp.StatusCode >= 300 {
			return nil
		}
		if d, _ := f.corrupt.Load().(string); d != "" && strings.HasSuffix(path, d) {
			data, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			data[len(data)/2] ^= 0xff
			resp.Body = io.NopCloser(bytes.NewReader(data))
		}
		if d, _ := f.cut.Load().(string); d != "" && strings.HasSuffix(path, d) && f.cut.CompareAndSwap(d, "") {
			half := resp.ContentLength / 2
			resp.Body = io.NopCloser(io.MultiReader(io.LimitReader(resp.Body, half), errReader{}))
		}
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") && f.tooMany.Add(-1) >= 0 {
			f.refused.Add(1)
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}`, http.StatusTooManyRequests)
			return
		}
		if strings.Contains(r.URL.Path, "/blobs/sha256:") && r.Method == http.MethodGet {
			f.blobGets.Add(1)
			if r.Header.Get("Range") != "" {
				f.ranges.Add(1)
			}
		}
		rp.ServeHTTP(w, r)
	})
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection cut") }

// TestPullUpstreamFaults: a blob whose content does not match its digest
// is refused and not stored; a connection cut in the middle of a blob is
// resumed with a Range request; a registry answering 429 is waited for
// (its Retry-After) and then pulled from.
func TestPullUpstreamFaults(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	upstream := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	img := randomImage(t, 4, 2, 256<<10)
	remotePush(t, ca, upstream+"/test/app:1", &authn.Basic{Username: "alice", Password: "s3cret"}, img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[1].Digest.String()
	f := &faultProxy{}
	host := ca.ServeTLS(t, f.handler(ca, upstream))
	cfg := configFor(ca, host, "alice", "s3cret")
	ref := host + "/test/app:1"

	f.corrupt.Store(layer)
	store := openStore(t)
	_, err = registry.PullUpstream(ctx, store, ref, options(cfg))
	if !errors.Is(err, errdefs.ErrInvalidArgument) || !strings.Contains(err.Error(), layer) {
		t.Fatalf("corrupt blob: %v, want it refused naming %s", err, layer)
	}
	if _, err := store.OpenBlob(m.Layers[1].Digest); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("the corrupt blob is in the store: %v", err)
	}
	assertNoLeftovers(t, store, 0)
	f.corrupt.Store("")

	f.cut.Store(layer)
	p, err := registry.PullUpstream(ctx, store, ref, options(cfg))
	if err != nil {
		t.Fatalf("pull through a cut connection: %v", err)
	}
	if want, _ := img.Digest(); p.Digest != want.String() {
		t.Fatalf("pulled %s, want %s", p.Digest, want)
	}
	if f.ranges.Load() != 1 {
		t.Fatalf("%d Range requests, want 1 resuming the cut blob", f.ranges.Load())
	}

	f.tooMany.Store(2)
	start := time.Now()
	if _, err := registry.PullUpstream(ctx, openStore(t), ref, options(cfg)); err != nil {
		t.Fatalf("pull from a registry answering 429: %v", err)
	}
	if f.refused.Load() != 2 {
		t.Fatalf("%d requests refused, want 2", f.refused.Load())
	}
	if waited := time.Since(start); waited < 2*time.Second {
		t.Fatalf("pulled in %v: Retry-After (1s, twice) was not honoured", waited)
	}
}

// TestPullUpstreamForeignLayer: an image with a foreign (non-distributable)
// layer is refused before anything is fetched, with an error saying so.
func TestPullUpstreamForeignLayer(t *testing.T) {
	ca := registrytest.NewCA(t)
	cfgBlob := []byte(`{"architecture":"amd64","os":"windows","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("1", 64) + `"]}}`)
	manifest := `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",` +
		`"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":` + strconv.Itoa(len(cfgBlob)) + `,"digest":"` + image.Digest(cfgBlob).String() + `"},` +
		`"layers":[{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","size":1000,"digest":"sha256:` + strings.Repeat("2", 64) + `","urls":["https://example.com/layer"]}]}`
	var blobGets atomic.Int64
	host := ca.ServeTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/1"):
			w.Header().Set("Content-Type", string(types.DockerManifestSchema2))
			w.Header().Set("Docker-Content-Digest", image.Digest([]byte(manifest)).String())
			_, _ = io.WriteString(w, manifest)
		default:
			blobGets.Add(1)
			http.NotFound(w, r)
		}
	}))
	store := openStore(t)
	_, err := registry.PullUpstream(context.Background(), store, host+"/win/app:1", options(configFor(ca, host, "", "")))
	if !errors.Is(err, registry.ErrForeignLayer) || !strings.Contains(err.Error(), "foreign layer") {
		t.Fatalf("pull of an image with a foreign layer: %v", err)
	}
	if blobGets.Load() != 0 {
		t.Fatalf("%d blob requests: want none", blobGets.Load())
	}
	assertNoLeftovers(t, store, 0)
}

// TestPinIndexAcrossArchitectures: a server applying a service of a
// two-arch upstream image pins the index digest; an amd64 node's pull of
// the pinned reference gets the amd64 image, an arm64 node's the arm64
// one (which the server pulls through from upstream by digest), and both
// stores resolve the index digest to their own image.
func TestPinIndexAcrossArchitectures(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	host := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	amd, arm := randomImage(t, 5, 1, 4<<10), randomImage(t, 6, 1, 4<<10)
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
	)
	idxDigest := remotePush(t, ca, host+"/library/multi:1", &authn.Basic{Username: "alice", Password: "s3cret"}, idx)
	amdDigest, _ := amd.Digest()
	armDigest, _ := arm.Digest()
	up := options(configFor(ca, host, "alice", "s3cret"))
	up.Platform = &v1.Platform{OS: "linux", Architecture: "amd64"} // the server's

	srvStore := openStore(t)
	h := registry.New(srvStore, registry.Options{Upstream: &up})
	ref := host + "/library/multi:1"
	pinned, err := h.PinImage(ctx, ref, api.PullIfNotPresent, nil)
	if err != nil || pinned != ref+"@"+idxDigest.String() {
		t.Fatalf("PinImage = %q, %v; want the index digest %s", pinned, err, idxDigest)
	}
	if again, err := h.PinImage(ctx, ref, api.PullIfNotPresent, nil); again != pinned || err != nil {
		t.Fatalf("PinImage again (the store has it) = %q, %v; want %q", again, err, pinned)
	}
	base, _ := server(t, srvStore, registry.Options{Upstream: &up}, nil)
	for _, c := range []struct {
		arch string
		want v1.Hash
	}{{"amd64", amdDigest}, {"arm64", armDigest}} {
		node := openStore(t)
		img, err := registry.Pull(ctx, node, base, pinned, registry.PullOptions{Platform: &v1.Platform{OS: "linux", Architecture: c.arch}})
		if err != nil || img.Digest != c.want.String() {
			t.Fatalf("%s node pulls %s: %s, %v; want %s", c.arch, pinned, img.Digest, err, c.want)
		}
		if c.arch == runtime.GOARCH {
			// This machine's platform: the index digest resolves to its image.
			got, err := node.Resolve(ctx, idxDigest.String())
			if err != nil || got.Digest != c.want.String() {
				t.Fatalf("the node resolves the index to %s, %v; want %s", got.Digest, err, c.want)
			}
		}
	}
}

// TestPullUpstreamRedirectInsecureDockerConfig: a registry that redirects
// blob downloads to another host (blob storage) is followed there without
// the registry's credentials; a plain-HTTP registry is refused unless
// insecure is asked for it; credentials come from ~/.docker/config.json,
// its credHelpers programs included.
func TestPullUpstreamRedirectInsecureDockerConfig(t *testing.T) {
	ctx := context.Background()
	ca := registrytest.NewCA(t)
	upstream := registrytest.StartDistribution(t, ca, registrytest.HtpasswdAuth(t, "alice", "s3cret"))
	img := randomImage(t, 7, 2, 8<<10)
	remotePush(t, ca, upstream+"/test/app:1", &authn.Basic{Username: "alice", Password: "s3cret"}, img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var leaked, served atomic.Int64
	storage := ca.ServeTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		for _, l := range layers {
			if d, _ := l.Digest(); strings.HasSuffix(r.URL.Path, d.String()) {
				rc, err := l.Compressed()
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				defer rc.Close()
				served.Add(1)
				_, _ = io.Copy(w, rc)
				return
			}
		}
		http.NotFound(w, r)
	}))
	u, _ := url.Parse("https://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.Transport = ca.Client().Transport
	redirecting := ca.ServeTLS(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.Index(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet && r.Header.Get("Authorization") != "" {
			for _, l := range layers {
				if d, _ := l.Digest(); strings.HasSuffix(r.URL.Path, d.String()) {
					http.Redirect(w, r, "https://"+storage+"/store/"+d.String()+"?sig=x", http.StatusTemporaryRedirect)
					return
				}
			}
		}
		rp.ServeHTTP(w, r)
	}))
	if _, err := registry.PullUpstream(ctx, openStore(t), redirecting+"/test/app:1", options(configFor(ca, redirecting, "alice", "s3cret"))); err != nil {
		t.Fatalf("pull with blobs redirected to storage: %v", err)
	}
	if served.Load() != 2 || leaked.Load() != 0 {
		t.Fatalf("storage served %d layers and saw credentials %d times; want 2 and 0", served.Load(), leaked.Load())
	}

	// Plain HTTP: berth's own registry handler on an httptest server.
	plainStore := openStore(t)
	_, plain := server(t, plainStore, registry.Options{}, nil)
	push(t, plain, "test/app:1", img)
	noCA := &registry.Config{}
	if _, err := registry.PullUpstream(ctx, openStore(t), plain+"/test/app:1", options(noCA)); err == nil {
		t.Fatal("pulled from a plain-HTTP registry without insecure")
	}
	opts := options(noCA)
	opts.Insecure = true
	if _, err := registry.PullUpstream(ctx, openStore(t), plain+"/test/app:1", opts); err != nil {
		t.Fatalf("insecure pull over plain HTTP: %v", err)
	}
	// The TLS registry without its CA: refused, then accepted when insecure.
	if _, err := registry.PullUpstream(ctx, openStore(t), upstream+"/test/app:1", registry.UpstreamOptions{Config: noCA, Keychain: configFor(ca, upstream, "alice", "s3cret")}); err == nil {
		t.Fatal("pulled over TLS from an unknown CA")
	}
	if _, err := registry.PullUpstream(ctx, openStore(t), upstream+"/test/app:1", registry.UpstreamOptions{Config: noCA, Insecure: true, Keychain: configFor(ca, upstream, "alice", "s3cret")}); err != nil {
		t.Fatalf("insecure pull over TLS from an unknown CA: %v", err)
	}

	// docker's config: a credential helper program answers for the registry.
	home := t.TempDir()
	bin := filepath.Join(home, "bin")
	if err := os.MkdirAll(filepath.Join(home, ".docker"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	helper := "#!/bin/sh\nread host\necho '{\"ServerURL\":\"'$host'\",\"Username\":\"alice\",\"Secret\":\"s3cret\"}'\n"
	if err := os.WriteFile(filepath.Join(bin, "docker-credential-berthtest"), []byte(helper), 0o755); err != nil {
		t.Fatal(err)
	}
	dockerCfg := `{"credHelpers": {"` + upstream + `": "berthtest"}}`
	if err := os.WriteFile(filepath.Join(home, ".docker", "config.json"), []byte(dockerCfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HOME", home)
	t.Setenv("DOCKER_CONFIG", filepath.Join(home, ".docker"))
	t.Setenv("PATH", bin+":"+os.Getenv("PATH"))
	cfg := configFor(ca, upstream, "", "")
	if _, err := registry.PullUpstream(ctx, openStore(t), upstream+"/test/app:1", registry.UpstreamOptions{Config: cfg}); err != nil {
		t.Fatalf("pull with docker's credential helper: %v", err)
	}
}
