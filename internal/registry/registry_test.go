package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

// do sends a raw request: the path goes on the wire exactly as given.
func do(t *testing.T, base, method, path string, header http.Header, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, base, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Opaque = path // no cleaning, no escaping
	for k, v := range header {
		req.Header[k] = v
	}
	if body == nil {
		req.Body, req.ContentLength = nil, 0
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// errorCode reads the first code of an OCI error body.
func errorCode(t *testing.T, resp *http.Response) string {
	t.Helper()
	var body struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	data, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(data, &body); err != nil || len(body.Errors) == 0 {
		t.Errorf("%s %s: body %q is not an OCI error", resp.Request.Method, resp.Request.URL.Opaque, data)
		return ""
	}
	return body.Errors[0].Code
}

// upload pushes data as one monolithic blob and returns its digest.
func upload(t *testing.T, base, repo string, data []byte) v1.Hash {
	t.Helper()
	d := image.Digest(data)
	resp := do(t, base, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), nil, data)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %s", resp.Status)
	}
	return d
}

func manifestJSON(t *testing.T, mt types.MediaType, config v1.Descriptor, layers ...v1.Descriptor) []byte {
	t.Helper()
	b, err := json.Marshal(v1.Manifest{SchemaVersion: 2, MediaType: mt, Config: config, Layers: layers})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestHostileRequests(t *testing.T) {
	store := openStore(t)
	base, _ := server(t, store, registry.Options{MaxManifestSize: 4096, MaxBlobSize: 1 << 20}, nil)

	layer := []byte("not really a tar, but a blob all the same")
	ld := v1.Descriptor{MediaType: types.OCILayer, Digest: upload(t, base, "demo/x", layer), Size: int64(len(layer))}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("ab", 32) + `"]}}`)
	cd := v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: upload(t, base, "demo/x", cfg), Size: int64(len(cfg))}
	missing := v1.Descriptor{MediaType: types.OCILayer, Digest: image.Digest([]byte("absent")), Size: 6}
	good := manifestJSON(t, types.OCIManifestSchema1, cd, ld)
	oci := http.Header{"Content-Type": {string(types.OCIManifestSchema1)}}
	wrongLayerType := ld
	wrongLayerType.MediaType = "application/x-evil"
	wrongSize := ld
	wrongSize.Size++
	traversal := bytes.Replace(good, []byte(ld.Digest.String()), []byte("sha256:../../../../etc/passwd"), 1)
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)

	for _, tc := range []struct {
		method, path string
		header       http.Header
		body         []byte
		status       int
		code         string
	}{
		{"GET", "/v2/../../etc/passwd/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/demo/%2e%2e/%2e%2e/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/demo%2Fx/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/Demo/X/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/demo//x/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/" + strings.Repeat("a/", 200) + "a/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/manifests/latest", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/demo/x/manifests/.hidden", nil, nil, 400, "MANIFEST_INVALID"},
		{"GET", "/v2/demo/x/manifests/nope", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"HEAD", "/v2/demo/x/manifests/nope", nil, nil, 404, ""},
		{"GET", "/v2/demo/x/manifests/sha256:" + strings.Repeat("0", 64), nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"GET", "/v2/demo/x/blobs/sha256:../../../etc/passwd", nil, nil, 404, "UNSUPPORTED"},
		{"GET", "/v2/demo/x/blobs/sha256:..%2f..%2fetc%2fpasswd", nil, nil, 400, "NAME_INVALID"},
		{"GET", "/v2/demo/x/blobs/sha256:..", nil, nil, 400, "DIGEST_INVALID"},
		{"GET", "/v2/demo/x/blobs/sha512:" + strings.Repeat("0", 128), nil, nil, 400, "DIGEST_INVALID"},
		{"GET", "/v2/demo/x/blobs/sha256:" + strings.Repeat("A", 64), nil, nil, 400, "DIGEST_INVALID"},
		{"GET", "/v2/demo/x/blobs/" + missing.Digest.String(), nil, nil, 404, "BLOB_UNKNOWN"},
		{"DELETE", "/v2/demo/x/blobs/" + ld.Digest.String(), nil, nil, 405, "UNSUPPORTED"},
		{"GET", "/v2/demo/x/tags/list", nil, nil, 404, "NAME_UNKNOWN"},
		{"GET", "/v3/", nil, nil, 404, "UNSUPPORTED"},
		// Manifests berth cannot or must not store.
		{"PUT", "/v2/demo/x/manifests/1", oci, bytes.Repeat([]byte(" "), 5000), 413, "SIZE_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", http.Header{"Content-Type": {"application/x-evil"}}, good, 415, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", http.Header{"Content-Type": {string(types.OCIImageIndex)}}, index, 415, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", nil, index, 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", http.Header{"Content-Type": {string(types.DockerManifestSchema2)}}, good, 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", oci, []byte("{not json"), 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", oci, manifestJSON(t, types.OCIManifestSchema1, cd, missing), 400, "MANIFEST_BLOB_UNKNOWN"},
		{"PUT", "/v2/demo/x/manifests/1", oci, manifestJSON(t, types.OCIManifestSchema1, cd, wrongLayerType), 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", oci, manifestJSON(t, types.OCIManifestSchema1, cd, wrongSize), 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", oci, manifestJSON(t, types.OCIManifestSchema1, cd), 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/1", oci, traversal, 400, "MANIFEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/" + image.Digest([]byte("other")).String(), oci, good, 400, "DIGEST_INVALID"},
		{"PUT", "/v2/demo/x/manifests/bad:tag", oci, good, 400, "DIGEST_INVALID"},
		{"PUT", "/v2/../x/manifests/1", oci, good, 400, "NAME_INVALID"},
		// Uploads.
		{"POST", "/v2/demo/x/blobs/uploads/?digest=" + missing.Digest.String(), nil, []byte("not absent"), 400, "DIGEST_INVALID"},
		{"POST", "/v2/demo/x/blobs/uploads/?digest=sha256:nothex", nil, []byte("x"), 400, "DIGEST_INVALID"},
		{"POST", "/v2/demo/x/blobs/uploads/?digest=" + image.Digest(make([]byte, 2<<20)).String(), nil, make([]byte, 2<<20), 413, "SIZE_INVALID"},
		{"PATCH", "/v2/demo/x/blobs/uploads/..%2f..%2fetc", nil, []byte("x"), 400, "NAME_INVALID"},
		{"PATCH", "/v2/demo/x/blobs/uploads/../../../etc", nil, []byte("x"), 404, "UNSUPPORTED"},
		{"PATCH", "/v2/demo/x/blobs/uploads/0123456789abcdef0123456789abcdef", nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{"PUT", "/v2/demo/x/blobs/uploads/notanid?digest=" + ld.Digest.String(), nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"DELETE", "/v2/demo/x/manifests/1", nil, nil, 405, "UNSUPPORTED"},
	} {
		resp := do(t, base, tc.method, tc.path, tc.header, tc.body)
		if resp.StatusCode != tc.status {
			data, _ := io.ReadAll(resp.Body)
			t.Errorf("%s %.80s: %s %s, want %d %s", tc.method, tc.path, resp.Status, data, tc.status, tc.code)
			continue
		}
		if tc.code != "" {
			if got := errorCode(t, resp); got != tc.code {
				t.Errorf("%s %.80s: code %s, want %s", tc.method, tc.path, got, tc.code)
			}
		}
	}
	// Nothing hostile left anything behind; the two good blobs wait, staged.
	imgs, err := store.List(context.Background())
	if err != nil || len(imgs) != 0 {
		t.Fatalf("store lists %v, %v", imgs, err)
	}
	if err := store.PruneStaging(context.Background(), -1); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, store, 0)
}

// TestManifestPut commits a hand-made image: tags, catalog, HEAD and GET by
// tag and digest, and a retag.
func TestManifestPut(t *testing.T) {
	store := openStore(t)
	base, _ := server(t, store, registry.Options{}, nil)
	layer := []byte("layer")
	ld := v1.Descriptor{MediaType: types.OCILayer, Digest: upload(t, base, "demo/x", layer), Size: int64(len(layer))}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:` + strings.Repeat("ab", 32) + `"]}}`)
	cd := v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: upload(t, base, "demo/x", cfg), Size: int64(len(cfg))}
	raw := manifestJSON(t, types.OCIManifestSchema1, cd, ld)
	digest := image.Digest(raw)
	oci := http.Header{"Content-Type": {string(types.OCIManifestSchema1)}}

	for _, ref := range []string{"demo/x:1", "demo/x:2", "other/y:1"} {
		repo, tag, _ := strings.Cut(ref, ":")
		resp := do(t, base, "PUT", "/v2/"+repo+"/manifests/"+tag, oci, raw)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != digest.String() {
			t.Fatalf("PUT %s: %s, digest %q", ref, resp.Status, resp.Header.Get("Docker-Content-Digest"))
		}
	}
	// By digest: no new name.
	if resp := do(t, base, "PUT", "/v2/demo/x/manifests/"+digest.String(), nil, raw); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT by digest: %s", resp.Status)
	}
	names, err := store.Names(context.Background())
	if err != nil || strings.Join(names, " ") != "demo/x:1 demo/x:2 other/y:1" {
		t.Fatalf("names %v, %v", names, err)
	}
	for _, path := range []string{"/v2/demo/x/manifests/1", "/v2/demo/x/manifests/" + digest.String()} {
		for _, m := range []string{"GET", "HEAD"} {
			resp := do(t, base, m, path, nil, nil)
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != digest.String() ||
				resp.Header.Get("Content-Type") != string(types.OCIManifestSchema1) || resp.ContentLength != int64(len(raw)) {
				t.Errorf("%s %s: %s %v", m, path, resp.Status, resp.Header)
			}
			if want := map[string]string{"GET": string(raw), "HEAD": ""}[m]; string(body) != want {
				t.Errorf("%s %s: body %q", m, path, body)
			}
		}
	}
	var tags struct {
		Name string
		Tags []string
	}
	resp := do(t, base, "GET", "/v2/demo/x/tags/list?n=1", nil, nil)
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil || tags.Name != "demo/x" || fmt.Sprint(tags.Tags) != "[1]" || !strings.Contains(resp.Header.Get("Link"), "last=1") {
		t.Errorf("tags page 1: %+v %v, Link %q", tags, err, resp.Header.Get("Link"))
	}
	resp = do(t, base, "GET", "/v2/demo/x/tags/list?n=0", nil, nil)
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil || len(tags.Tags) != 0 || resp.Header.Get("Link") != "" {
		t.Errorf("tags n=0: %+v %v, Link %q", tags, err, resp.Header.Get("Link"))
	}
	resp = do(t, base, "GET", "/v2/demo/x/tags/list?last=1", nil, nil)
	if err := json.NewDecoder(resp.Body).Decode(&tags); err != nil || fmt.Sprint(tags.Tags) != "[2]" {
		t.Errorf("tags page 2: %+v %v", tags, err)
	}
	var cat struct{ Repositories []string }
	resp = do(t, base, "GET", "/v2/_catalog", nil, nil)
	if err := json.NewDecoder(resp.Body).Decode(&cat); err != nil || fmt.Sprint(cat.Repositories) != "[demo/x other/y]" {
		t.Errorf("catalog: %+v %v", cat, err)
	}
	// A blob by range, as resuming clients ask.
	resp = do(t, base, "GET", "/v2/demo/x/blobs/"+ld.Digest.String(), http.Header{"Range": {"bytes=1-3"}}, nil)
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusPartialContent || string(body) != "aye" {
		t.Errorf("range GET: %s %q", resp.Status, body)
	}
	assertNoLeftovers(t, store, 3)
}

func TestChunkedUpload(t *testing.T) {
	store := openStore(t)
	base, _ := server(t, store, registry.Options{}, nil)
	data := bytes.Repeat([]byte("0123456789"), 10000)
	d := image.Digest(data)

	resp := do(t, base, "POST", "/v2/demo/x/blobs/uploads/", nil, nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusAccepted || !strings.HasPrefix(loc, "/v2/demo/x/blobs/uploads/") || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("POST: %s, Location %q, Range %q", resp.Status, loc, resp.Header.Get("Range"))
	}
	chunk := func(from, to int) *http.Response {
		return do(t, base, "PATCH", loc, http.Header{
			"Content-Range": {fmt.Sprintf("%d-%d", from, to-1)},
			"Content-Type":  {"application/octet-stream"},
		}, data[from:to])
	}
	if resp := chunk(0, 30000); resp.StatusCode != http.StatusAccepted || resp.Header.Get("Range") != "0-29999" {
		t.Fatalf("PATCH 1: %s, Range %q", resp.Status, resp.Header.Get("Range"))
	}
	// A chunk that does not start where the upload ends.
	if resp := chunk(40000, 50000); resp.StatusCode != http.StatusRequestedRangeNotSatisfiable || resp.Header.Get("Range") != "0-29999" {
		t.Fatalf("PATCH out of order: %s, Range %q", resp.Status, resp.Header.Get("Range"))
	}
	// A restarted server resumes from what the store kept.
	base, _ = server(t, store, registry.Options{}, nil)
	if resp := do(t, base, "GET", loc, nil, nil); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != "0-29999" {
		t.Fatalf("GET status: %s, Range %q", resp.Status, resp.Header.Get("Range"))
	}
	if resp := chunk(30000, 90000); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH 2: %s", resp.Status)
	}
	// The last chunk comes with the PUT.
	resp = do(t, base, "PUT", loc+"?digest="+d.String(), nil, data[90000:])
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Location") != "/v2/demo/x/blobs/"+d.String() {
		t.Fatalf("PUT: %s, Location %q", resp.Status, resp.Header.Get("Location"))
	}
	resp = do(t, base, "GET", "/v2/demo/x/blobs/"+d.String(), nil, nil)
	if body, _ := io.ReadAll(resp.Body); !bytes.Equal(body, data) {
		t.Fatalf("blob reads back %d bytes, want %d", len(body), len(data))
	}
	if resp := do(t, base, "GET", loc, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upload still there after PUT: %s", resp.Status)
	}
	// Mounting a blob the store has needs no upload.
	resp = do(t, base, "POST", "/v2/other/y/blobs/uploads/?mount="+d.String()+"&from=demo/x", nil, nil)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount: %s", resp.Status)
	}
}

// TestUploadsCleanedUp: a wrong digest ends the upload, DELETE cancels one,
// and PruneStaging removes the abandoned and the never committed.
func TestUploadsCleanedUp(t *testing.T) {
	store := openStore(t)
	base, _ := server(t, store, registry.Options{}, nil)
	start := func() string {
		resp := do(t, base, "POST", "/v2/demo/x/blobs/uploads/", nil, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST: %s", resp.Status)
		}
		loc := resp.Header.Get("Location")
		if resp := do(t, base, "PATCH", loc, nil, []byte("some bytes")); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH: %s", resp.Status)
		}
		return loc
	}

	loc := start()
	resp := do(t, base, "PUT", loc+"?digest="+image.Digest([]byte("other bytes")).String(), nil, nil)
	if resp.StatusCode != http.StatusBadRequest || errorCode(t, resp) != "DIGEST_INVALID" {
		t.Fatalf("PUT with a wrong digest: %s", resp.Status)
	}
	if resp := do(t, base, "GET", loc, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upload kept after a wrong digest: %s", resp.Status)
	}
	assertNoLeftovers(t, store, 0)

	loc = start()
	if resp := do(t, base, "DELETE", loc, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	assertNoLeftovers(t, store, 0)

	abandoned := start()
	upload(t, base, "demo/x", []byte("a blob no manifest names"))
	// Fresh ones stay...
	if err := store.PruneStaging(context.Background(), registry.DefaultUploadTTL); err != nil {
		t.Fatal(err)
	}
	if resp := do(t, base, "GET", abandoned, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("fresh upload pruned: %s", resp.Status)
	}
	// ...stale ones go (a negative age makes everything stale).
	if err := store.PruneStaging(context.Background(), -1); err != nil {
		t.Fatal(err)
	}
	if resp := do(t, base, "GET", abandoned, nil, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("stale upload kept: %s", resp.Status)
	}
	assertNoLeftovers(t, store, 0)
}

func TestAuthorize(t *testing.T) {
	ctx := context.Background()
	store := openStore(t)
	authorize := func(r *http.Request, push bool) error {
		switch r.Header.Get("Authorization") {
		case "Bearer admin":
			return nil
		case "Bearer reader":
			if push {
				return fmt.Errorf("token reader may not push: %w", errdefs.ErrForbidden)
			}
			return nil
		}
		return fmt.Errorf("no valid token: %w", errdefs.ErrUnauthorized)
	}
	base, host := server(t, store, registry.Options{Authorize: authorize}, nil)
	bearer := func(tok string) http.RoundTripper { return tokenTransport{tok} }

	resp := do(t, base, "GET", "/v2/", nil, nil)
	if resp.StatusCode != http.StatusUnauthorized || errorCode(t, resp) != "UNAUTHORIZED" || resp.Header.Get("WWW-Authenticate") == "" {
		t.Fatalf("anonymous /v2/: %s %v", resp.Status, resp.Header)
	}
	resp = do(t, base, "POST", "/v2/demo/x/blobs/uploads/", http.Header{"Authorization": {"Bearer reader"}}, nil)
	if resp.StatusCode != http.StatusForbidden || errorCode(t, resp) != "DENIED" {
		t.Fatalf("reader upload: %s", resp.Status)
	}

	src := openStore(t)
	pushed := pushRandom(t, src, "demo/random:1")
	if _, err := registry.Push(ctx, src, base, "demo/random:1", registry.PushOptions{Transport: bearer("reader")}); !errors.Is(err, errdefs.ErrForbidden) || !strings.Contains(fmt.Sprint(err), "DENIED") {
		t.Fatalf("push as reader: %v", err)
	}
	if _, err := registry.Push(ctx, src, base, "demo/random:1", registry.PushOptions{}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("anonymous push: %v", err)
	}
	var last, total int64
	if _, err := registry.Push(ctx, src, base, "demo/random:1", registry.PushOptions{Transport: bearer("admin"), Progress: func(d, tot int64) { last, total = d, tot }}); err != nil {
		t.Fatal(err)
	}
	if last == 0 || last != total {
		t.Errorf("push progress ended at %d of %d", last, total)
	}
	dst := openStore(t)
	if _, err := registry.Pull(ctx, dst, base, "demo/random:1", registry.PullOptions{}); !errors.Is(err, errdefs.ErrUnauthorized) {
		t.Fatalf("anonymous pull: %v", err)
	}
	assertNoLeftovers(t, dst, 0)
	img, err := registry.Pull(ctx, dst, "http://"+host, "demo/random:1", registry.PullOptions{Transport: bearer("reader")})
	if err != nil || img.Digest != pushed {
		t.Fatalf("pull as reader: %+v, %v", img, err)
	}
}

type tokenTransport struct{ token string }

func (t tokenTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+t.token)
	return http.DefaultTransport.RoundTrip(r)
}

// pushRandom stores a small random image in s under ref (through a
// registry of its own) and returns its digest.
func pushRandom(t *testing.T, s *image.Store, ref string) string {
	t.Helper()
	_, host := server(t, s, registry.Options{}, nil)
	return push(t, host, ref, randomImage(t, 9, 2, 100<<10)).String()
}

func TestPushSkipsBlobsTheRegistryHas(t *testing.T) {
	ctx := context.Background()
	src := openStore(t)
	pushRandom(t, src, "demo/random:1")
	var counter blobCounter
	srv := openStore(t)
	base, _ := server(t, srv, registry.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPatch || (r.Method == http.MethodPost && r.URL.Query().Get("digest") != "") {
				counter.mu.Lock()
				if counter.gets == nil {
					counter.gets = map[string]int{}
				}
				counter.gets["uploads"]++
				counter.mu.Unlock()
			}
			h.ServeHTTP(w, r)
		})
	})
	if _, err := registry.Push(ctx, src, base, "demo/random:1", registry.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	first := counter.gets["uploads"]
	if _, err := registry.Push(ctx, src, base, "demo/random:2", registry.PushOptions{}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("push of a missing image: %v", err)
	}
	if _, err := registry.Push(ctx, src, base, "demo/random:1", registry.PushOptions{}); err != nil {
		t.Fatal(err)
	}
	if first != 3 || counter.gets["uploads"] != first {
		t.Errorf("uploads: %d for the first push (want 3), %d after the second (want no more)", first, counter.gets["uploads"])
	}
}
