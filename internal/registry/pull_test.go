package registry_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// TestBusyboxPushPull pushes a busybox image built by the image store with
// go-containerregistry's client, pulls it into an empty store and runs the
// result through Prepare: the same digest, and a rootfs that works.
func TestBusyboxPushPull(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	src := openStore(t)
	built := imagetest.BusyboxImage(t, src)
	oimg, _, err := src.OCIImage(ctx, imagetest.BusyboxTag)
	if err != nil {
		t.Fatal(err)
	}

	srvStore := openStore(t)
	base, host := server(t, srvStore, registry.Options{}, nil)
	if d := push(t, host, imagetest.BusyboxTag, oimg); d.String() != built.Digest {
		t.Fatalf("pushed %s, built %s", d, built.Digest)
	}
	onServer, err := srvStore.Resolve(ctx, imagetest.BusyboxTag)
	if err != nil || onServer.Digest != built.Digest {
		t.Fatalf("server store has %+v, %v; want %s", onServer, err, built.Digest)
	}
	assertNoLeftovers(t, srvStore, blobCount(t, oimg))

	dst := openStore(t)
	img, err := registry.Pull(ctx, dst, base, imagetest.BusyboxTag, registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != built.Digest || img.Name != imagetest.BusyboxTag {
		t.Fatalf("pulled %s %s, want %s %s", img.Name, img.Digest, imagetest.BusyboxTag, built.Digest)
	}
	assertNoLeftovers(t, dst, blobCount(t, oimg))
	snap, err := dst.Prepare(ctx, imagetest.BusyboxTag, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink(filepath.Join(snap.LowerDirs[0], "bin/sh")); err != nil || l != "busybox" {
		t.Errorf("bin/sh -> %q, %v", l, err)
	}
	if b, err := os.ReadFile(filepath.Join(snap.LowerDirs[0], "www/index.html")); err != nil || string(b) != "hello from berth\n" {
		t.Errorf("www/index.html = %q, %v", b, err)
	}

	// By digest into another store: the image has no name there.
	dst2 := openStore(t)
	byDigest := "demo/busybox@" + built.Digest
	img, err = registry.Pull(ctx, dst2, base, byDigest, registry.PullOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != built.Digest || img.Name != "" {
		t.Fatalf("pulled %q %s, want unnamed %s", img.Name, img.Digest, built.Digest)
	}
	// Pulling what the store has asks the registry nothing.
	if _, err := registry.Pull(ctx, dst2, "http://127.0.0.1:1", byDigest, registry.PullOptions{}); err != nil {
		t.Fatalf("pull of a present digest: %v", err)
	}
}

// corruptBlob flips a byte in the body of GETs of the blob digest.
func corruptBlob(digest string) func(http.Handler) http.Handler {
	return func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest) {
				w = &flipWriter{ResponseWriter: w}
			}
			h.ServeHTTP(w, r)
		})
	}
}

type flipWriter struct {
	http.ResponseWriter
	flipped bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.flipped && len(p) > 0 {
		q := append([]byte(nil), p...)
		q[len(q)/2] ^= 0xff
		f.flipped = true
		return f.ResponseWriter.Write(q)
	}
	return f.ResponseWriter.Write(p)
}

func TestPullRefusesCorruptBlob(t *testing.T) {
	ctx := context.Background()
	srvStore := openStore(t)
	img := randomImage(t, 1, 3, 64<<10)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	bad := m.Layers[1].Digest.String()
	_, host := server(t, srvStore, registry.Options{}, nil)
	push(t, host, "demo/random:1", img)
	badBase, _ := server(t, srvStore, registry.Options{}, corruptBlob(bad))

	dst := openStore(t)
	_, err = registry.Pull(ctx, dst, badBase, "demo/random:1", registry.PullOptions{Parallel: 1})
	if err == nil {
		t.Fatal("pull of a corrupted layer succeeded")
	}
	if !strings.Contains(err.Error(), bad) {
		t.Errorf("error does not name the layer %s: %v", bad, err)
	}
	t.Logf("refused: %v", err)
	if imgs, err := dst.List(ctx); err != nil || len(imgs) != 0 {
		t.Errorf("store lists %v, %v after a failed pull", imgs, err)
	}
	assertNoLeftovers(t, dst, 0)

	// The same store pulls fine from an honest server.
	goodBase, _ := server(t, srvStore, registry.Options{}, nil)
	if _, err := registry.Pull(ctx, dst, goodBase, "demo/random:1", registry.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	assertNoLeftovers(t, dst, blobCount(t, img))
}

// TestPullRefusesWrongManifest: a registry answering a digest with another
// manifest is caught even when it claims the asked-for digest.
func TestPullRefusesWrongManifest(t *testing.T) {
	ctx := context.Background()
	srvStore := openStore(t)
	_, host := server(t, srvStore, registry.Options{}, nil)
	a := push(t, host, "demo/a:1", randomImage(t, 2, 1, 1024))
	push(t, host, "demo/b:1", randomImage(t, 3, 1, 1024))
	liar, _ := server(t, srvStore, registry.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/manifests/") {
				r2 := r.Clone(r.Context())
				r2.URL.Path = "/v2/demo/b/manifests/1"
				h.ServeHTTP(&digestLiar{ResponseWriter: w, digest: a.String()}, r2)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	dst := openStore(t)
	_, err := registry.Pull(ctx, dst, liar, "demo/a@"+a.String(), registry.PullOptions{})
	if err == nil {
		t.Fatal("pull accepted a manifest that does not match its digest")
	}
	t.Logf("refused: %v", err)
	assertNoLeftovers(t, dst, 0)
}

type digestLiar struct {
	http.ResponseWriter
	digest string
}

func (d *digestLiar) WriteHeader(code int) {
	d.Header().Set("Docker-Content-Digest", d.digest)
	d.ResponseWriter.WriteHeader(code)
}

func (d *digestLiar) Write(p []byte) (int, error) {
	d.Header().Set("Docker-Content-Digest", d.digest)
	return d.ResponseWriter.Write(p)
}

func TestConcurrentPulls(t *testing.T) {
	ctx := context.Background()
	srvStore := openStore(t)
	img := randomImage(t, 4, 4, 256<<10)
	var counter blobCounter
	base, host := server(t, srvStore, registry.Options{}, counter.wrap)
	want := push(t, host, "demo/random:1", img)
	counter.mu.Lock()
	counter.gets = nil // the push's own reads do not count
	counter.mu.Unlock()

	dst := openStore(t)
	const pullers = 6
	var wg sync.WaitGroup
	errs := make([]error, pullers)
	got := make([]image.Image, pullers)
	for i := range pullers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i], errs[i] = registry.Pull(ctx, dst, base, "demo/random:1", registry.PullOptions{})
		}()
	}
	wg.Wait()
	for i := range pullers {
		if errs[i] != nil {
			t.Fatalf("puller %d: %v", i, errs[i])
		}
		if got[i].Digest != want.String() {
			t.Errorf("puller %d got %s, want %s", i, got[i].Digest, want)
		}
	}
	counter.mu.Lock()
	defer counter.mu.Unlock()
	if len(counter.gets) != blobCount(t, img)-1 {
		t.Errorf("fetched %d distinct blobs, want %d (config and layers)", len(counter.gets), blobCount(t, img)-1)
	}
	for d, n := range counter.gets {
		if n != 1 {
			t.Errorf("blob %s fetched %d times, want once", d, n)
		}
	}
	imgs, err := dst.List(ctx)
	if err != nil || len(imgs) != 1 || imgs[0].Digest != want.String() {
		t.Fatalf("store lists %+v, %v", imgs, err)
	}
	assertNoLeftovers(t, dst, blobCount(t, img))
	// Every blob is whole: the library verifies what it reads from the store.
	oimg, _, err := dst.OCIImage(ctx, "demo/random:1")
	if err != nil {
		t.Fatal(err)
	}
	layers, err := oimg.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestPullProgress(t *testing.T) {
	ctx := context.Background()
	srvStore := openStore(t)
	img := randomImage(t, 5, 3, 3<<20)
	base, host := server(t, srvStore, registry.Options{}, nil)
	push(t, host, "demo/random:1", img)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}

	var reports []registry.Progress
	record := func(p registry.Progress) { reports = append(reports, p) }
	dst := openStore(t)
	if _, err := registry.Pull(ctx, dst, base, "demo/random:1", registry.PullOptions{Progress: record}); err != nil {
		t.Fatal(err)
	}
	byLayer := map[string][]registry.Progress{}
	for _, p := range reports {
		if p.Image != "demo/random:1" {
			t.Errorf("report for image %q", p.Image)
		}
		byLayer[p.Layer] = append(byLayer[p.Layer], p)
	}
	if len(byLayer) != len(m.Layers) {
		t.Fatalf("reports for %d layers, want %d: %+v", len(byLayer), len(m.Layers), reports)
	}
	for _, l := range m.Layers {
		ps := byLayer[l.Digest.String()]
		if len(ps) < 3 {
			t.Errorf("layer %s: %d reports for %d bytes, want a start, some progress and an end", l.Digest, len(ps), l.Size)
			continue
		}
		if first, last := ps[0], ps[len(ps)-1]; first.Done != 0 || last.Done != l.Size || last.Cached {
			t.Errorf("layer %s: first %+v, last %+v; want 0 then %d", l.Digest, first, last, l.Size)
		}
		for i, p := range ps {
			if p.Total != l.Size {
				t.Errorf("layer %s: total %d, want %d", l.Digest, p.Total, l.Size)
			}
			if i > 0 && p.Done < ps[i-1].Done {
				t.Errorf("layer %s: done went back from %d to %d", l.Digest, ps[i-1].Done, p.Done)
			}
		}
	}

	// Again into the same store: every layer is there already.
	reports = nil
	if _, err := registry.Pull(ctx, dst, base, "demo/random:1", registry.PullOptions{Progress: record}); err != nil {
		t.Fatal(err)
	}
	if len(reports) != len(m.Layers) {
		t.Fatalf("second pull: %d reports, want one per layer: %+v", len(reports), reports)
	}
	for _, p := range reports {
		if !p.Cached || p.Done != p.Total {
			t.Errorf("second pull: %+v, want cached and done", p)
		}
	}
}

func TestPullErrors(t *testing.T) {
	ctx := context.Background()
	base, _ := server(t, openStore(t), registry.Options{}, nil)
	dst := openStore(t)
	for _, tc := range []struct {
		base, ref string
		want      error
	}{
		{base, "../etc/passwd:1", errdefs.ErrInvalidArgument},
		{base, "Demo/busybox:1", errdefs.ErrInvalidArgument},
		{base, "demo/busybox@sha256:1234", errdefs.ErrInvalidArgument},
		{base, "demo/busybox:bad/tag", errdefs.ErrInvalidArgument},
		{"ftp://host", "demo/busybox:1", errdefs.ErrInvalidArgument},
		{base + "/v2/", "demo/busybox:1", errdefs.ErrInvalidArgument},
		{base, "demo/missing:1", errdefs.ErrNotFound},
	} {
		_, err := registry.Pull(ctx, dst, tc.base, tc.ref, registry.PullOptions{})
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("Pull(%s, %s) = %v, want %v", tc.base, tc.ref, err, tc.want)
		}
	}
	assertNoLeftovers(t, dst, 0)
}

// TestCancelledPullLeavesNothing stops a pull in the middle of a layer.
func TestCancelledPullLeavesNothing(t *testing.T) {
	srvStore := openStore(t)
	img := randomImage(t, 6, 2, 3<<20)
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	stall := m.Layers[1].Digest.String()
	_, host := server(t, srvStore, registry.Options{}, nil)
	push(t, host, "demo/random:1", img)
	// The stalled layer's body stops after 2 MiB until the client goes.
	base, _ := server(t, srvStore, registry.Options{}, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+stall) {
				w = &stallWriter{ResponseWriter: w, after: 2 << 20, done: r.Context().Done()}
			}
			h.ServeHTTP(w, r)
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dst := openStore(t)
	_, err = registry.Pull(ctx, dst, base, "demo/random:1", registry.PullOptions{Parallel: 1, Progress: func(p registry.Progress) {
		if p.Layer == stall && p.Done >= 1<<20 {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled pull: %v", err)
	}
	assertNoLeftovers(t, dst, 0)
}

type stallWriter struct {
	http.ResponseWriter
	after int
	done  <-chan struct{}
}

func (s *stallWriter) Write(p []byte) (int, error) {
	n := min(len(p), s.after)
	if _, err := s.ResponseWriter.Write(p[:n]); err != nil {
		return 0, err
	}
	if s.after -= n; s.after > 0 {
		return n, nil
	}
	s.ResponseWriter.(http.Flusher).Flush()
	<-s.done
	return n, errors.New("client gone")
}
