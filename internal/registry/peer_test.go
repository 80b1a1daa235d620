package registry_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

// requestLog records the requests a registry answers.
type requestLog struct {
	mu   sync.Mutex
	reqs []string // "METHOD PATH", with " local-only" when marked so
}

func (l *requestLog) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := r.Method + " " + r.URL.Path
		if r.Header.Get(registry.LocalOnlyHeader) != "" {
			s += " local-only"
		}
		l.mu.Lock()
		l.reqs = append(l.reqs, s)
		l.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (l *requestLog) take() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.reqs
	l.reqs = nil
	return out
}

// count is how many logged requests have method and a path ending in suffix.
func (l *requestLog) count(method, suffix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reqs {
		m, p, _ := strings.Cut(r, " ")
		p = strings.TrimSuffix(p, " local-only")
		if m == method && strings.HasSuffix(p, suffix) {
			n++
		}
	}
	return n
}

// peersOf lists the given base URLs, read when asked so that two
// registries can name each other.
func peersOf(bases ...*string) *registry.Peers {
	return &registry.Peers{List: func(context.Context) ([]string, error) {
		var out []string
		for _, b := range bases {
			out = append(out, *b)
		}
		return out, nil
	}}
}

// get requests base+path and returns the status, the digest header and the body.
func get(t *testing.T, method, url string, header http.Header) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), body
}

// bodyCode is the first code of an OCI error body.
func bodyCode(body []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	_ = json.Unmarshal(body, &e)
	if len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// TestPullThroughFromPeer: registry B, whose store is empty, answers for
// images only its peer A has, as if it had them, and keeps them: a
// manifest by tag (kept under the tag), one by digest (as an agent
// pulls a pinned image, with registry.Pull through B), a blob alone, and
// a tag PinImage looks up. A is asked with the local-only mark, and what
// neither has is a 404.
func TestPullThroughFromPeer(t *testing.T) {
	ctx := context.Background()
	storeA := openStore(t)
	var logA requestLog
	baseA, hostA := server(t, storeA, registry.Options{}, logA.wrap)
	imgs := map[string]v1.Image{}
	digests := map[string]v1.Hash{}
	for i, ref := range []string{"demo/random:1", "demo/random:2", "demo/random:3", "demo/random:4"} {
		imgs[ref] = randomImage(t, uint64(10+i), 2, 32<<10)
		digests[ref] = push(t, hostA, ref, imgs[ref])
	}
	logA.take()

	storeB := openStore(t)
	hB := registry.New(storeB, registry.Options{Peers: peersOf(&baseA)})
	baseB, _ := server(t, storeB, registry.Options{Peers: peersOf(&baseA)}, nil)

	// By tag: the same digest, and B keeps it under the tag.
	code, digest, _ := get(t, http.MethodGet, baseB+"/v2/demo/random/manifests/1", nil)
	if code != http.StatusOK || digest != digests["demo/random:1"].String() {
		t.Fatalf("B: GET demo/random:1: %d, digest %q; want 200, %s", code, digest, digests["demo/random:1"])
	}
	if img, err := storeB.Resolve(ctx, "demo/random:1"); err != nil || img.Digest != digest || img.Name != "demo/random:1" {
		t.Errorf("B's store has demo/random:1 as %+v, %v; want %s", img, err, digest)
	}
	for _, r := range logA.take() {
		if !strings.HasSuffix(r, " local-only") {
			t.Errorf("B asked A %q without the local-only mark", r)
		}
	}
	// Now B answers from its own store.
	if code, _, _ := get(t, http.MethodHead, baseB+"/v2/demo/random/manifests/1", nil); code != http.StatusOK {
		t.Errorf("B: HEAD demo/random:1: %d", code)
	}
	if reqs := logA.take(); len(reqs) != 0 {
		t.Errorf("B asked A %v for what it has", reqs)
	}

	// By digest, as an agent pulls a pinned image: unnamed in B.
	d2 := digests["demo/random:2"].String()
	agent := openStore(t)
	got, err := registry.Pull(ctx, agent, baseB, "demo/random:2@"+d2, registry.PullOptions{})
	if err != nil || got.Digest != d2 {
		t.Fatalf("pull demo/random:2@%s through B: %+v, %v", d2, got, err)
	}
	if img, err := storeB.Resolve(ctx, d2); err != nil || img.Digest != d2 || img.Name != "" {
		t.Errorf("B's store has %s as %+v, %v; want it unnamed", d2, img, err)
	}
	assertNoLeftovers(t, agent, blobCount(t, imgs["demo/random:2"]))

	// A blob alone.
	m3, err := imgs["demo/random:3"].Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := m3.Layers[1].Digest
	code, _, body := get(t, http.MethodGet, baseB+"/v2/demo/other/blobs/"+layer.String(), nil)
	sum := sha256.Sum256(body)
	if code != http.StatusOK || "sha256:"+hex.EncodeToString(sum[:]) != layer.String() {
		t.Fatalf("B: GET blob %s: %d, %d bytes of sha256:%x", layer, code, len(body), sum)
	}
	if f, err := storeB.OpenBlob(layer); err != nil {
		t.Errorf("B's store lacks the blob it served: %v", err)
	} else {
		f.Close()
	}

	// PinImage of a tag only A has.
	pinned, err := hB.PinImage(ctx, "demo/random:4", "", nil)
	if want := "demo/random:4@" + digests["demo/random:4"].String(); err != nil || pinned != want {
		t.Errorf("B: PinImage(demo/random:4) = %q, %v; want %s", pinned, err, want)
	}
	if img, err := storeB.Resolve(ctx, "demo/random:4"); err != nil || img.Digest != digests["demo/random:4"].String() {
		t.Errorf("B's store has demo/random:4 as %+v, %v", img, err)
	}

	// What neither has.
	logA.take()
	code, _, body = get(t, http.MethodGet, baseB+"/v2/demo/random/manifests/5", nil)
	if code != http.StatusNotFound || bodyCode(body) != "MANIFEST_UNKNOWN" {
		t.Errorf("B: GET demo/random:5: %d %s, want 404 MANIFEST_UNKNOWN", code, body)
	}
	if n := logA.count(http.MethodGet, "/manifests/5"); n != 1 {
		t.Errorf("B asked A %d times for demo/random:5, want once", n)
	}
	if _, err := hB.PinImage(ctx, "demo/random:5", "", nil); !errors.Is(err, errdefs.ErrNotFound) {
		t.Errorf("B: PinImage(demo/random:5): %v, want not found", err)
	}
	missing := image.Digest([]byte("nowhere")).String()
	if code, _, _ := get(t, http.MethodGet, baseB+"/v2/demo/random/blobs/"+missing, nil); code != http.StatusNotFound {
		t.Errorf("B: GET a blob nobody has: %d, want 404", code)
	}
	// Marked local-only, B does not ask A.
	logA.take()
	d1 := digests["demo/random:3"].String()
	code, _, _ = get(t, http.MethodGet, baseB+"/v2/demo/random/manifests/"+d1, http.Header{registry.LocalOnlyHeader: {"1"}})
	if reqs := logA.take(); code != http.StatusNotFound || len(reqs) != 0 {
		t.Errorf("B: local-only GET of what only A has: %d, asked A %v; want 404, nothing asked", code, reqs)
	}
}

// TestPullThroughRefusesLyingPeer: a peer that answers a digest with other
// content (a manifest, a blob) is refused, nothing of what it sent stays,
// and the next peer is asked.
func TestPullThroughRefusesLyingPeer(t *testing.T) {
	storeA := openStore(t)
	baseA, hostA := server(t, storeA, registry.Options{}, nil)
	img := randomImage(t, 20, 2, 32<<10)
	want := push(t, hostA, "demo/a:1", img)
	other := push(t, hostA, "demo/b:1", randomImage(t, 21, 1, 1024))
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	// One liar sends demo/b's manifest for any manifest asked for, under
	// the digest asked for; the other flips a byte of a layer.
	manifestLiar, _ := server(t, storeA, registry.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if i := strings.Index(r.URL.Path, "/manifests/"); i >= 0 {
				asked := r.URL.Path[i+len("/manifests/"):]
				r2 := r.Clone(r.Context())
				r2.URL.Path = "/v2/demo/b/manifests/" + other.String()
				h.ServeHTTP(&digestLiar{ResponseWriter: w, digest: asked}, r2)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	blobLiar, _ := server(t, storeA, registry.Options{}, corruptBlob(m.Layers[1].Digest.String()))

	for _, c := range []struct {
		name  string
		peers []*string
		ok    bool
	}{
		{"manifest liar", []*string{&manifestLiar}, false},
		{"blob liar", []*string{&blobLiar}, false},
		{"both liars, then A", []*string{&manifestLiar, &blobLiar, &baseA}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			storeB := openStore(t)
			baseB, _ := server(t, storeB, registry.Options{Peers: peersOf(c.peers...)}, nil)
			code, digest, body := get(t, http.MethodGet, baseB+"/v2/demo/a/manifests/"+want.String(), nil)
			if !c.ok {
				if code != http.StatusNotFound {
					t.Fatalf("B: GET demo/a@%s: %d %q, want 404", want, code, body)
				}
				t.Logf("refused: %s", body)
				assertNoLeftovers(t, storeB, 0)
				// Nor does a blob come through a liar.
				code, _, _ := get(t, http.MethodGet, baseB+"/v2/demo/a/blobs/"+m.Layers[1].Digest.String(), nil)
				if wantCode := map[string]int{"manifest liar": 200, "blob liar": 404}[c.name]; code != wantCode {
					t.Errorf("B: GET the layer: %d, want %d", code, wantCode)
				}
				return
			}
			if code != http.StatusOK || digest != want.String() {
				t.Fatalf("B: GET demo/a@%s: %d, digest %q", want, code, digest)
			}
			assertNoLeftovers(t, storeB, blobCount(t, img))
		})
	}
}

// TestPullThroughLoopEndsWith404: two registries that name each other as
// peers and both lack an image answer 404 at once, not a hang: a request
// from a peer is answered locally.
func TestPullThroughLoopEndsWith404(t *testing.T) {
	var baseA, baseB string
	var logA, logB requestLog
	baseA, _ = server(t, openStore(t), registry.Options{Peers: peersOf(&baseB)}, logA.wrap)
	baseB, _ = server(t, openStore(t), registry.Options{Peers: peersOf(&baseA)}, logB.wrap)
	missing := image.Digest([]byte("nowhere")).String()
	for _, path := range []string{
		"/v2/demo/x/manifests/1",
		"/v2/demo/x/manifests/" + missing,
		"/v2/demo/x/blobs/" + missing,
	} {
		start := time.Now()
		code, _, body := get(t, http.MethodGet, baseA+path, nil)
		if code != http.StatusNotFound {
			t.Errorf("A: GET %s: %d %s, want 404", path, code, body)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("A: GET %s took %v", path, took)
		}
		a, b := logA.take(), logB.take()
		if len(a) != 1 || len(b) == 0 {
			t.Errorf("GET %s: A answered %v, B %v; want A once, B (asked by A) at least once", path, a, b)
		}
	}
}

// TestConcurrentPullThroughsShareOneFetch: many requests missing one
// image at once make one pull-through: the peer is asked for the manifest
// once and for each blob once.
func TestConcurrentPullThroughsShareOneFetch(t *testing.T) {
	storeA := openStore(t)
	var logA requestLog
	slow := func(h http.Handler) http.Handler {
		return logA.wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") && r.Header.Get(registry.LocalOnlyHeader) != "" {
				time.Sleep(200 * time.Millisecond) // so that every request misses before the first is done
			}
			h.ServeHTTP(w, r)
		}))
	}
	baseA, hostA := server(t, storeA, registry.Options{}, slow)
	img := randomImage(t, 30, 3, 64<<10)
	want := push(t, hostA, "demo/random:1", img)
	logA.take()

	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, ref := range []string{want.String(), "1"} {
		storeB := openStore(t)
		baseB, _ := server(t, storeB, registry.Options{Peers: peersOf(&baseA)}, nil)
		const clients = 8
		var wg sync.WaitGroup
		codes := make([]int, clients)
		for i := range clients {
			wg.Go(func() { codes[i], _, _ = get(t, http.MethodGet, baseB+"/v2/demo/random/manifests/"+ref, nil) })
		}
		wg.Wait()
		for i, c := range codes {
			if c != http.StatusOK {
				t.Errorf("%s: client %d: %d", ref, i, c)
			}
		}
		if n := logA.count(http.MethodGet, "/manifests/"+ref); n != 1 {
			t.Errorf("%s: A was asked for the manifest %d times, want once", ref, n)
		}
		for _, d := range append([]v1.Descriptor{m.Config}, m.Layers...) {
			if n := logA.count(http.MethodGet, "/blobs/"+d.Digest.String()); n != 1 {
				t.Errorf("%s: A was asked for blob %s %d times, want once", ref, d.Digest, n)
			}
		}
		assertNoLeftovers(t, storeB, blobCount(t, img))
		logA.take()
	}
}
