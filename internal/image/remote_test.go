package image_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
)

func openStore(t *testing.T) *image.Store {
	t.Helper()
	s, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func opener(data []byte, calls *int) func(context.Context) (io.ReadCloser, error) {
	return func(context.Context) (io.ReadCloser, error) {
		*calls++
		return io.NopCloser(bytes.NewReader(data)), nil
	}
}

// entries lists a directory under the store root ("" when it is absent).
func entries(t *testing.T, s *image.Store, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(filepath.Join(s.Root(), dir))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestFetchBlobVerifies(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	data := []byte("the real content")
	d := v1.Descriptor{Digest: image.Digest(data), Size: int64(len(data))}
	var calls int
	for _, bad := range [][]byte{
		[]byte("the fake content"), // same size, other digest
		[]byte("the real content, and more"),
		[]byte("the real"),
	} {
		if _, err := s.FetchBlob(ctx, d, opener(bad, &calls), nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("FetchBlob of %q: %v, want an invalid-argument error", bad, err)
		}
	}
	if got := append(entries(t, s, "staged/sha256"), entries(t, s, "tmp")...); len(got) != 0 {
		t.Fatalf("refused content left %v", got)
	}
	var done int64
	fetched, err := s.FetchBlob(ctx, d, opener(data, &calls), func(n int64) { done = n })
	if err != nil || !fetched || done != d.Size {
		t.Fatalf("FetchBlob: fetched %v, progress %d, %v", fetched, done, err)
	}
	calls = 0
	if fetched, err := s.FetchBlob(ctx, d, opener(data, &calls), nil); err != nil || fetched || calls != 0 {
		t.Fatalf("second FetchBlob: fetched %v, %d opens, %v", fetched, calls, err)
	}
	f, err := s.OpenBlob(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatalf("staged blob reads %q", got)
	}
	if err := s.Unstage(d.Digest); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenBlob(d.Digest); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("OpenBlob after Unstage: %v", err)
	}
	for _, h := range []v1.Hash{{}, {Algorithm: "sha256", Hex: "../../etc/passwd"}, {Algorithm: "md5", Hex: strings.Repeat("0", 32)}} {
		if _, err := s.FetchBlob(ctx, v1.Descriptor{Digest: h}, opener(nil, &calls), nil); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("FetchBlob(%q): %v", h, err)
		}
		if _, err := s.OpenBlob(h); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("OpenBlob(%q): %v", h, err)
		}
	}
}

// TestFetchBlobWaitIsCancellable: a fetch waiting for another fetch of the
// same blob gives up with its context.
func TestFetchBlobWaitIsCancellable(t *testing.T) {
	s := openStore(t)
	data := []byte("slow")
	d := v1.Descriptor{Digest: image.Digest(data), Size: int64(len(data))}
	opened, release := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		_, err := s.FetchBlob(context.Background(), d, func(context.Context) (io.ReadCloser, error) {
			close(opened)
			<-release
			return io.NopCloser(bytes.NewReader(data)), nil
		}, nil)
		first <- err
	}()
	<-opened
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var calls int
	if _, err := s.FetchBlob(ctx, d, opener(data, &calls), nil); !errors.Is(err, context.Canceled) || calls != 0 {
		t.Fatalf("waiting FetchBlob: %v after %d opens", err, calls)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
}

// TestStagedBlobOutlivesItsImage: a blob found committed is pinned, so an
// image removed meanwhile does not take it from the commit that needs it.
func TestStagedBlobOutlivesItsImage(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "file"), []byte("shared layer"), 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := s.Build(ctx, dir, image.BuildOptions{Tag: "a:1", Cmd: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Build(ctx, dir, image.BuildOptions{Tag: "b:1", Cmd: []string{"b"}})
	if err != nil {
		t.Fatal(err)
	}
	if a.Layers[0].Digest != b.Layers[0].Digest {
		t.Fatal("the two builds do not share their layer")
	}
	rawB, mtB, _, err := s.Manifest(ctx, "b:1")
	if err != nil {
		t.Fatal(err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(rawB))
	if err != nil {
		t.Fatal(err)
	}
	f, err := s.OpenBlob(m.Config.Digest)
	if err != nil {
		t.Fatal(err)
	}
	cfgB, _ := io.ReadAll(f)
	f.Close()
	if err := s.Remove(ctx, "b:1", false); err != nil {
		t.Fatal(err)
	}

	// b comes back as a pull would bring it: config fetched, layer found.
	var calls int
	if fetched, err := s.FetchBlob(ctx, m.Config, opener(cfgB, &calls), nil); err != nil || !fetched {
		t.Fatalf("config: fetched %v, %v", fetched, err)
	}
	if fetched, err := s.FetchBlob(ctx, m.Layers[0], opener(nil, &calls), nil); err != nil || fetched {
		t.Fatalf("layer: fetched %v, %v", fetched, err)
	}
	if err := s.Remove(ctx, "a:1", false); err != nil {
		t.Fatal(err)
	}
	img, err := s.CommitManifest(ctx, rawB, mtB, "b:1")
	if err != nil {
		t.Fatal(err)
	}
	if img.Digest != b.Digest || img.Name != "b:1" {
		t.Fatalf("committed %s %s, want b:1 %s", img.Name, img.Digest, b.Digest)
	}
	if got := entries(t, s, "staged/sha256"); len(got) != 0 {
		t.Fatalf("staged after the commit: %v", got)
	}
	if got := entries(t, s, "blobs/sha256"); len(got) != 3 {
		t.Fatalf("blobs: %v, want manifest, config and layer", got)
	}
}

func TestUploadResumes(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	data := bytes.Repeat([]byte("berth "), 50000)
	d := image.Digest(data)

	u, err := s.NewUpload()
	if err != nil {
		t.Fatal(err)
	}
	id := u.ID()
	if _, err := u.Append(ctx, bytes.NewReader(data[:1000]), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenUpload(id); !errors.Is(err, errdefs.ErrConflict) {
		t.Fatalf("OpenUpload of an open upload: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	// A state file behind the data (a crash between the writes) means hashing again.
	if err := os.WriteFile(filepath.Join(s.Root(), "uploads", id+".state"), []byte(`{"size":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	u, err = s.OpenUpload(id)
	if err != nil {
		t.Fatal(err)
	}
	if u.Size() != 1000 {
		t.Fatalf("resumed at %d, want 1000", u.Size())
	}
	if _, err := u.Append(ctx, bytes.NewReader(data[1000:]), int64(len(data))-1); !errors.Is(err, errdefs.ErrTooLarge) {
		t.Fatalf("Append past the limit: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}

	u, err = s.NewUpload()
	if err != nil {
		t.Fatal(err)
	}
	for _, part := range [][]byte{data[:7], data[7:200000], data[200000:]} {
		if _, err := u.Append(ctx, bytes.NewReader(part), int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
		if u, err = s.OpenUpload(u.ID()); err != nil {
			t.Fatal(err)
		}
	}
	if err := u.Commit(d); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenUpload(u.ID()); !errors.Is(err, image.ErrNotFound) {
		t.Fatalf("OpenUpload after Commit: %v", err)
	}
	f, err := s.OpenBlob(d)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(f)
	f.Close()
	if !bytes.Equal(got, data) {
		t.Fatal("committed upload reads back different")
	}
	for _, id := range []string{"", "../../etc/passwd", strings.Repeat("0", 31)} {
		if _, err := s.OpenUpload(id); !errors.Is(err, image.ErrNotFound) {
			t.Errorf("OpenUpload(%q): %v", id, err)
		}
	}
	if err := s.PruneStaging(ctx, -1); err != nil {
		t.Fatal(err)
	}
	if got := append(entries(t, s, "uploads"), entries(t, s, "staged/sha256")...); len(got) != 0 {
		t.Fatalf("after pruning: %v", got)
	}
}
