package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"golang.org/x/sys/unix"

	"github.com/berth-dev/berth/internal/image/unpack"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// file is one tar entry of a generated layer.
type file struct {
	name, body, link string
	typ              byte
}

func tarLayer(t *testing.T, files ...file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Linkname: f.link, Mode: 0o644, ModTime: time.Unix(1_700_000_000, 0)}
		switch {
		case h.Typeflag == 0:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.body))
		case h.Typeflag == tar.TypeDir:
			h.Mode = 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	data := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testImage makes an OCI image from layers (bottom first) with cmd.
func testImage(t *testing.T, cmd []string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, l := range layers {
		var err error
		if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: types.OCILayer}); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = cmd
	cf.Config.Env = []string{"A=1"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	return img
}

func twoLayerImage(t *testing.T) v1.Image {
	return testImage(t, []string{"/bin/app"},
		tarLayer(t, file{name: "etc/", typ: tar.TypeDir}, file{name: "etc/one", body: "1"}, file{name: "etc/shared", body: "bottom"}),
		tarLayer(t, file{name: "etc/", typ: tar.TypeDir}, file{name: "etc/two", body: "2"}, file{name: "etc/shared", body: "top"}),
	)
}

func writeLayout(t *testing.T, dir string, img v1.Image, ref string) {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{annotationRefName: ref})); err != nil {
		t.Fatal(err)
	}
}

// tarDir writes the tree at dir as a tar file at dst.
func tarDir(t *testing.T, dir, dst string) {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(out)
	if err := tw.AddFS(os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// buildTiny builds, in s, an image of one small file as opts say.
func buildTiny(t *testing.T, s *Store, opts BuildOptions) Image {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := s.Build(context.Background(), dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func readLayered(t *testing.T, snap Snapshot, name string) string {
	t.Helper()
	for _, d := range snap.LowerDirs { // top first
		if b, err := os.ReadFile(filepath.Join(d, name)); err == nil {
			return string(b)
		}
	}
	t.Fatalf("%s in no layer of %v", name, snap.LowerDirs)
	return ""
}

func TestImportFormats(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	img := twoLayerImage(t)
	src := t.TempDir()

	layoutDir := filepath.Join(src, "layout")
	writeLayout(t, layoutDir, img, "example/app:1")
	archive := filepath.Join(src, "app.oci.tar")
	tarDir(t, layoutDir, archive)
	archiveGz := archive + ".gz"
	gzipFile(t, archive, archiveGz)
	dockerSave := filepath.Join(src, "app.docker.tar")
	tag, err := name.NewTag("example/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := tarball.WriteToFile(dockerSave, tag, img); err != nil {
		t.Fatal(err)
	}
	wantDigest, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name, path string
		sameDigest bool // docker-save stores uncompressed layers: a new manifest
	}{
		{"layout dir", layoutDir, true},
		{"oci archive", archive, true},
		{"gzipped oci archive", archiveGz, true},
		{"docker save", dockerSave, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openStore(t)
			var last int64
			imgs, err := s.Import(ctx, tc.path, ImportOptions{Progress: func(done, total int64) { last = done }})
			if err != nil {
				t.Fatal(err)
			}
			if len(imgs) != 1 || imgs[0].Name != "example/app:1" || len(imgs[0].Layers) != 2 {
				t.Fatalf("imported %+v", imgs)
			}
			if last != imgs[0].Size {
				t.Errorf("progress ended at %d of %d bytes", last, imgs[0].Size)
			}
			if tc.sameDigest && imgs[0].Digest != wantDigest.String() {
				t.Errorf("digest %s, want %s", imgs[0].Digest, wantDigest)
			}
			got, err := s.Resolve(ctx, "example/app:1")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(got.Config.Cmd, " ") != "/bin/app" || strings.Join(got.Config.Env, " ") != "A=1" {
				t.Errorf("config %+v", got.Config)
			}
			snap, err := s.Prepare(ctx, "example/app:1", "c1")
			if err != nil {
				t.Fatal(err)
			}
			if len(snap.LowerDirs) != 2 {
				t.Fatalf("lower dirs %v", snap.LowerDirs)
			}
			for f, want := range map[string]string{"etc/one": "1", "etc/two": "2", "etc/shared": "top"} {
				if got := readLayered(t, snap, f); got != want {
					t.Errorf("%s = %q, want %q", f, got, want)
				}
			}
			// The temporary files of the import are gone.
			if tmp, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(tmp) != 0 {
				t.Errorf("tmp not cleaned: %v", tmp)
			}
		})
	}

	t.Run("tag override and errors", func(t *testing.T) {
		s := openStore(t)
		imgs, err := s.Import(ctx, archive, ImportOptions{Tag: "other/name"})
		if err != nil {
			t.Fatal(err)
		}
		if imgs[0].Name != "other/name:latest" {
			t.Errorf("name %q", imgs[0].Name)
		}
		notTar := filepath.Join(src, "junk")
		if err := os.WriteFile(notTar, []byte("hello"), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Import(ctx, notTar, ImportOptions{}); err == nil || !strings.Contains(err.Error(), notTar) {
			t.Errorf("import of junk: %v", err)
		}
	})
}

func TestResolve(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	img := buildTiny(t, s, BuildOptions{Tag: "app"})
	if img.Name != "app:latest" {
		t.Errorf("name %q", img.Name)
	}
	hex := strings.TrimPrefix(img.Digest, "sha256:")
	for _, ref := range []string{"app", "app:latest", img.Digest, hex[:12], "sha256:" + hex[:8]} {
		got, err := s.Resolve(ctx, ref)
		if err != nil || got.Digest != img.Digest {
			t.Errorf("Resolve(%q) = %s, %v", ref, got.Digest, err)
		}
	}
	for _, ref := range []string{"app:2", "other", "abcdef0123"} {
		if _, err := s.Resolve(ctx, ref); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), ref) {
			t.Errorf("Resolve(%q) = %v, want not found naming it", ref, err)
		}
	}
}

func TestBuildDeterministic(t *testing.T) {
	ctx := context.Background()
	mk := func(mtime time.Time) string {
		dir := t.TempDir()
		must := func(err error) {
			if err != nil {
				t.Fatal(err)
			}
		}
		must(os.MkdirAll(filepath.Join(dir, "bin"), 0o755))
		must(os.MkdirAll(filepath.Join(dir, "etc/sub"), 0o700))
		must(os.WriteFile(filepath.Join(dir, "bin/tool"), []byte("#!/bin/sh\n"), 0o755))
		must(os.WriteFile(filepath.Join(dir, "etc/sub/conf"), []byte("k=v\n"), 0o600))
		must(os.Link(filepath.Join(dir, "bin/tool"), filepath.Join(dir, "bin/tool2")))
		must(os.Symlink("tool", filepath.Join(dir, "bin/alias")))
		for _, p := range []string{"bin/tool", "etc/sub/conf", "etc/sub", "etc", "bin"} {
			must(os.Chtimes(filepath.Join(dir, p), mtime, mtime))
		}
		return dir
	}
	a, b := mk(time.Unix(1000, 0)), mk(time.Now())
	opts := BuildOptions{Tag: "det:1", Cmd: []string{"sh"}, Env: []string{"X=1"}}
	img1, err := openStore(t).Build(ctx, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	img2, err := openStore(t).Build(ctx, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if img1.Digest != img2.Digest {
		t.Fatalf("same content, different digests: %s %s", img1.Digest, img2.Digest)
	}
	if img1.OS != "linux" || img1.Architecture == "" || strings.Join(img1.Config.Env, " ") != defaultPath+" X=1" {
		t.Errorf("config %+v", img1)
	}
	if err := os.WriteFile(filepath.Join(b, "etc/sub/conf"), []byte("k=w\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	img3, err := openStore(t).Build(ctx, b, opts)
	if err != nil {
		t.Fatal(err)
	}
	if img3.Digest == img1.Digest {
		t.Fatal("changed content, same digest")
	}

	// The built layer round-trips: hard link kept, symlink kept.
	if os.Geteuid() == 0 {
		s := openStore(t)
		if _, err := s.Build(ctx, a, opts); err != nil {
			t.Fatal(err)
		}
		snap, err := s.Prepare(ctx, "det:1", "c")
		if err != nil {
			t.Fatal(err)
		}
		st1, _ := os.Stat(filepath.Join(snap.LowerDirs[0], "bin/tool"))
		st2, _ := os.Stat(filepath.Join(snap.LowerDirs[0], "bin/tool2"))
		if !os.SameFile(st1, st2) {
			t.Error("hard link not kept")
		}
		if l, _ := os.Readlink(filepath.Join(snap.LowerDirs[0], "bin/alias")); l != "tool" {
			t.Errorf("symlink -> %q", l)
		}
	}
}

func TestBuildRefusesDevices(t *testing.T) {
	testenv.RequireRoot(t)
	dir := t.TempDir()
	if err := mknodNull(filepath.Join(dir, "null")); err != nil {
		t.Fatal(err)
	}
	_, err := openStore(t).Build(context.Background(), dir, BuildOptions{Tag: "dev:1"})
	if err == nil || !strings.Contains(err.Error(), "device node") || !strings.Contains(err.Error(), "null") {
		t.Fatalf("Build = %v, want a device node error", err)
	}
}

// TestBuildDebootstrapDev builds a tree with the /dev a debootstrap
// --variant=minbase rootfs has (character devices, the fd symlinks, pts
// and shm dirs): the device nodes are left out with a warning naming them,
// the rest is kept.
func TestBuildDebootstrapDev(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	dir := t.TempDir()
	for _, d := range []string{"dev/pts", "dev/shm", "bin"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	devs := map[string][2]uint32{"console": {5, 1}, "full": {1, 7}, "null": {1, 3}, "ptmx": {5, 2}, "random": {1, 8}, "tty": {5, 0}, "urandom": {1, 9}, "zero": {1, 5}}
	for n, mm := range devs {
		if err := unix.Mknod(filepath.Join(dir, "dev", n), unix.S_IFCHR|0o666, int(unix.Mkdev(mm[0], mm[1]))); err != nil {
			t.Fatal(err)
		}
	}
	for n, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, filepath.Join(dir, "dev", n)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "bin", "true"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	var warnings []string
	img, err := s.Build(ctx, dir, BuildOptions{Tag: "debian:minbase", Warn: func(m string) { warnings = append(warnings, m) }})
	if err != nil {
		t.Fatalf("Build of a debootstrap-like tree: %v", err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "dev/console") || !strings.Contains(warnings[0], "8 device nodes") {
		t.Fatalf("warnings %q, want one naming the 8 device nodes", warnings)
	}
	snap, err := s.Prepare(ctx, img.Name, "deb1")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Release(ctx, "deb1") })
	root := snap.LowerDirs[0]
	if _, err := os.Lstat(filepath.Join(root, "dev", "console")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dev/console is in the image: %v", err)
	}
	for _, p := range []string{"dev/pts", "dev/shm", "dev/fd", "bin/true"} {
		if _, err := os.Lstat(filepath.Join(root, p)); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestRemoveInUse(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	img := buildTiny(t, s, BuildOptions{Tag: "app:1"})
	snap, err := s.Prepare(ctx, "app:1", "web-1")
	if err != nil {
		t.Fatal(err)
	}
	// A restarted process (a new Store) still knows about the use.
	s2, err := Open(s.Root())
	if err != nil {
		t.Fatal(err)
	}
	err = s2.Remove(ctx, "app:1", false)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "web-1") {
		t.Fatalf("Remove while in use = %v, want ErrInUse naming web-1", err)
	}
	if _, err := s2.Resolve(ctx, img.Digest); err != nil {
		t.Fatalf("refused Remove still removed the image: %v", err)
	}
	// A second name can go: the image stays.
	if again := buildTiny(t, s, BuildOptions{Tag: "app:2"}); again.Digest != img.Digest {
		t.Fatalf("the same file built again is %s, want %s", again.Digest, img.Digest)
	}
	if err := s.Remove(ctx, "app:2", false); err != nil {
		t.Fatalf("untag while another name remains: %v", err)
	}
	if err := s2.Remove(ctx, "app:1", true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Resolve(ctx, "app:1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after forced Remove: %v", err)
	}
	// The container's layers outlive the forced removal until released.
	if _, err := os.Stat(snap.LowerDirs[0]); err != nil {
		t.Fatalf("layer of a running container removed: %v", err)
	}
	if err := s.Release(ctx, "web-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(snap.LowerDirs[0]); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("layer left after release: %v", err)
	}
	blobs, _ := os.ReadDir(filepath.Join(s.Root(), "blobs", "sha256"))
	if len(blobs) != 0 {
		t.Errorf("%d blobs left", len(blobs))
	}
	if err := s.Release(ctx, "web-1"); err != nil {
		t.Errorf("second Release: %v", err)
	}
}

func TestConcurrentPrepareUnpacksOnce(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	src := t.TempDir()
	writeLayout(t, src, twoLayerImage(t), "example/app:1")
	if _, err := s.Import(ctx, src, ImportOptions{}); err != nil {
		t.Fatal(err)
	}
	const n = 8
	snaps := make([]Snapshot, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			snaps[i], errs[i] = s.Prepare(ctx, "example/app:1", "c"+string(rune('a'+i)))
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if strings.Join(snaps[i].LowerDirs, ":") != strings.Join(snaps[0].LowerDirs, ":") {
			t.Fatalf("different lower dirs: %v %v", snaps[i].LowerDirs, snaps[0].LowerDirs)
		}
	}
	if got := s.unpacks.Load(); got != 2 {
		t.Fatalf("%d layer unpacks for 2 layers", got)
	}
	users, err := s.Users(ctx, "example/app:1")
	if err != nil || len(users) != n {
		t.Fatalf("users %v, %v", users, err)
	}
}

// TestHostileLayerThroughStore: an image whose layer writes through a
// symlink out of its root is refused at import, naming the entry, and
// nothing of it enters the store.
func TestHostileLayerThroughStore(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	src := t.TempDir()
	img := testImage(t, nil, tarLayer(t,
		file{name: "etc", typ: tar.TypeSymlink, link: "/etc"},
		file{name: "etc/berth-pwned", body: "x"}))
	writeLayout(t, src, img, "evil/app:1")
	_, err := s.Import(ctx, src, ImportOptions{})
	if !errors.Is(err, unpack.ErrUnsafe) || !strings.Contains(err.Error(), `entry "etc/berth-pwned"`) || !strings.Contains(err.Error(), `goes through symlink "etc"`) {
		t.Fatalf("Import = %v, want the bad entry named", err)
	}
	if _, err := os.Lstat("/etc/berth-pwned"); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("host /etc written")
	}
	if _, err := s.Resolve(ctx, "evil/app:1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the hostile image is in the store: %v", err)
	}
	for _, dir := range []string{"layers", "blobs/sha256"} {
		if left, _ := os.ReadDir(filepath.Join(s.Root(), dir)); len(left) != 0 {
			t.Errorf("%s left behind: %v", dir, left)
		}
	}
}

func mknodNull(p string) error {
	return unix.Mknod(p, unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3)))
}

// writeTar writes files (name → content) as a tar at dst, in order.
func writeTar(t *testing.T, dst string, files ...file) {
	t.Helper()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(out)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Linkname: f.link, Mode: 0o644, Size: int64(len(f.body))}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(f.body)); err != nil && h.Size > 0 {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestImportLegacyDockerSave reads the old docker-save form: uncompressed
// <id>/layer.tar files named by manifest.json.
func TestImportLegacyDockerSave(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	var layerBuf bytes.Buffer
	tw := tar.NewWriter(&layerBuf)
	body := "legacy\n"
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(body))
	tw.Close()
	h := newHasher()
	h.Write(layerBuf.Bytes())
	diffID := h.sum()
	cfg := `{"architecture":"amd64","os":"linux","config":{"Cmd":["cat","/hello.txt"]},"rootfs":{"type":"layers","diff_ids":["` + diffID.String() + `"]}}`
	ch := newHasher()
	ch.Write([]byte(cfg))
	cfgName := ch.sum().Hex + ".json"
	manifest := `[{"Config":"` + cfgName + `","RepoTags":["legacy/app:2"],"Layers":["abc123/layer.tar"]}]`
	p := filepath.Join(t.TempDir(), "legacy.tar")
	writeTar(t, p,
		file{name: "abc123/", typ: tar.TypeDir},
		file{name: "abc123/VERSION", body: "1.0"},
		file{name: "abc123/layer.tar", body: layerBuf.String()},
		file{name: cfgName, body: cfg},
		file{name: "manifest.json", body: manifest},
		file{name: "repositories", body: `{"legacy/app":{"2":"abc123"}}`})
	s := openStore(t)
	imgs, err := s.Import(ctx, p, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Name != "legacy/app:2" || imgs[0].Layers[0].DiffID != diffID.String() {
		t.Fatalf("imported %+v", imgs)
	}
	snap, err := s.Prepare(ctx, "legacy/app:2", "c")
	if err != nil {
		t.Fatal(err)
	}
	if got := readLayered(t, snap, "hello.txt"); got != body {
		t.Errorf("hello.txt = %q", got)
	}
}

// TestImportInterrupted cancels an import halfway: no image appears and
// no temporary file is left.
func TestImportInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	src := t.TempDir()
	writeLayout(t, src, twoLayerImage(t), "example/app:1")
	s := openStore(t)
	_, err := s.Import(ctx, src, ImportOptions{Progress: func(done, total int64) { cancel() }})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Import = %v, want canceled", err)
	}
	imgs, err := s.List(context.Background())
	if err != nil || len(imgs) != 0 {
		t.Fatalf("after an interrupted import: %v, %v", imgs, err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(s.Root(), "tmp")); len(tmp) != 0 {
		t.Errorf("tmp not cleaned: %v", tmp)
	}
}

// TestImportHostileArchive refuses an OCI archive whose entries climb out
// of the extraction directory, and writes nothing outside it.
func TestImportHostileArchive(t *testing.T) {
	base := t.TempDir()
	canary := filepath.Join(base, "canary")
	if err := os.Mkdir(canary, 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := Open(filepath.Join(base, "store"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files []file
		want  string
	}{
		{"dotdot", []file{{name: "oci-layout", body: "{}"}, {name: "../../../canary/pwned", body: "x"}}, "escapes the archive"},
		{"absolute", []file{{name: "oci-layout", body: "{}"}, {name: canary + "/pwned", body: "x"}}, "escapes the archive"},
		{"symlink", []file{{name: "oci-layout", body: "{}"}, {name: "blobs", typ: tar.TypeSymlink, link: canary}, {name: "blobs/pwned", body: "x"}}, "does not belong in an OCI layout"},
	} {
		p := filepath.Join(base, tc.name+".tar")
		writeTar(t, p, tc.files...)
		_, err := s.Import(context.Background(), p, ImportOptions{})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: Import = %v, want an error naming %s and saying %q", tc.name, err, p, tc.want)
		}
		if entries, _ := os.ReadDir(canary); len(entries) != 0 {
			t.Fatalf("%s: canary written: %v", tc.name, entries)
		}
	}
}

// TestRetag moves a name to a new build: the old image stays (unnamed)
// while a container uses it, and is collected when nothing does.
func TestRetag(t *testing.T) {
	testenv.RequireRoot(t)
	ctx := context.Background()
	s := openStore(t)
	build := func(content string) Image {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		img, err := s.Build(ctx, dir, BuildOptions{Tag: "app:1", ExposedPorts: []string{"80", "53/udp"}})
		if err != nil {
			t.Fatal(err)
		}
		return img
	}
	v1img := build("v1")
	if strings.Join(v1img.Config.ExposedPorts, " ") != "53/udp 80/tcp" {
		t.Errorf("exposed ports %v", v1img.Config.ExposedPorts)
	}
	if _, err := s.Prepare(ctx, "app:1", "old-user"); err != nil {
		t.Fatal(err)
	}
	v2img := build("v2")
	imgs, err := s.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 2 || imgs[0].Name != "" || imgs[0].Digest != v1img.Digest || imgs[1].Digest != v2img.Digest {
		t.Fatalf("after retag while in use: %+v", imgs)
	}
	if users, err := s.Users(ctx, v1img.Digest); err != nil || strings.Join(users, ",") != "old-user" {
		t.Fatalf("users of the old image: %v, %v", users, err)
	}
	if err := s.Release(ctx, "old-user"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, v1img.Digest, false); err != nil {
		t.Fatal(err)
	}
	build("v3")
	if imgs, _ := s.List(ctx); len(imgs) != 1 {
		t.Fatalf("unused old images kept: %+v", imgs)
	}
}

// TestStaleUnpackCleaned: a staging dir left by a crashed unpack is removed
// by the next collection, but not while its layer lock is held.
func TestStaleUnpackCleaned(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	stale := filepath.Join(s.Root(), "layers", ".tmp-aaaa-123")
	busy := filepath.Join(s.Root(), "layers", ".tmp-bbbb-456")
	for _, d := range []string{stale, busy} {
		if err := os.MkdirAll(filepath.Join(d, "etc"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	unlock, err := flock(s.layerLockPath("bbbb"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	unlockStore, err := s.lock()
	if err != nil {
		t.Fatal(err)
	}
	err = s.gc(ctx)
	unlockStore()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale staging dir kept: %v", err)
	}
	if _, err := os.Stat(busy); err != nil {
		t.Errorf("staging dir of a running unpack removed: %v", err)
	}
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestImportIndex imports an OCI layout whose image is a two-platform
// index: this machine's image is stored under the index's name, and the
// index digest resolves to it.
func TestImportIndex(t *testing.T) {
	ctx := context.Background()
	mine := testImage(t, []string{"/bin/mine"}, tarLayer(t, file{name: "mine", body: "1"}))
	other := testImage(t, []string{"/bin/other"}, tarLayer(t, file{name: "other", body: "2"}))
	otherArch := "arm64"
	if runtime.GOARCH == "arm64" {
		otherArch = "amd64"
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: other, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: otherArch}}},
		mutate.IndexAddendum{Add: mine, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: runtime.GOARCH}}},
	)
	dir := t.TempDir()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{annotationRefName: "multi/app:1"})); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	imgs, err := s.Import(ctx, dir, ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := mine.Digest()
	if len(imgs) != 1 || imgs[0].Digest != want.String() || imgs[0].Name != "multi/app:1" {
		t.Fatalf("imported %+v, want this platform's %s as multi/app:1", imgs, want)
	}
	idxDigest, _ := idx.Digest()
	got, err := s.Resolve(ctx, idxDigest.String())
	if err != nil || got.Digest != want.String() {
		t.Fatalf("the index digest resolves to %s, %v; want %s", got.Digest, err, want)
	}
}
