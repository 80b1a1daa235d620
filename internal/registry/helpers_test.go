package registry_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

func openStore(t testing.TB) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// server serves store over loopback HTTP, through wrap when given, and
// returns the base URL and host.
func server(t testing.TB, store *image.Store, opts registry.Options, wrap func(http.Handler) http.Handler) (base, host string) {
	t.Helper()
	var h http.Handler = registry.New(store, opts)
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv.URL, strings.TrimPrefix(srv.URL, "http://")
}

// blobCounter counts the blob GETs a registry answers, by digest.
type blobCounter struct {
	mu   sync.Mutex
	gets map[string]int
}

func (c *blobCounter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := strings.LastIndex(r.URL.Path, "/blobs/sha256:"); i >= 0 && r.Method == http.MethodGet {
			c.mu.Lock()
			if c.gets == nil {
				c.gets = map[string]int{}
			}
			c.gets[r.URL.Path[i+len("/blobs/"):]]++
			c.mu.Unlock()
		}
		h.ServeHTTP(w, r)
	})
}

// randomImage makes an OCI image of layers layers, each a tar holding one
// file of size random bytes (gzip-framed but stored, as random data does
// not compress).
func randomImage(t testing.TB, seed uint64, layers, size int) v1.Image {
	t.Helper()
	rnd := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	data := make([]byte, size)
	for i := range layers {
		var buf bytes.Buffer
		zw, err := gzip.NewWriterLevel(&buf, gzip.NoCompression)
		if err != nil {
			t.Fatal(err)
		}
		tw := tar.NewWriter(zw)
		_, _ = rnd.Read(data)
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("layer%d/data", i), Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(size)}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		b := buf.Bytes()
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

// push sends img to the registry at host as ref with go-containerregistry's
// own client, as any OCI tool would.
func push(t testing.TB, host, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(context.Background())); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// assertNoLeftovers fails unless the store holds no blob outside an
// indexed image, nothing staged, no upload and no temp file.
func assertNoLeftovers(t testing.TB, s *image.Store, wantBlobs int) {
	t.Helper()
	for dir, want := range map[string]int{"blobs/sha256": wantBlobs, "staged/sha256": 0, "uploads": 0, "tmp": 0} {
		entries, err := os.ReadDir(filepath.Join(s.Root(), dir))
		if err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
		if len(entries) != want {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s holds %d entries, want %d: %v", dir, len(entries), want, names)
		}
	}
}

// blobCount is how many blobs (manifest, config, layers) img has.
func blobCount(t testing.TB, img v1.Image) int {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return 2 + len(m.Layers)
}
