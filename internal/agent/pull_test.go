package agent

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/image/imagetest"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

// pullSetup opens an image store, src, served by a registry that counts
// the manifests fetched from it, and an empty store, dst, to pull into.
func pullSetup(t *testing.T) (src, dst *image.Store, ts *httptest.Server, manifests *atomic.Int32) {
	t.Helper()
	src, err := image.Open(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	dst, err = image.Open(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	manifests = new(atomic.Int32)
	reg := registry.New(src, registry.Options{})
	ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") && r.Method == http.MethodGet {
			manifests.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(ts.Close)
	return src, dst, ts, manifests
}

// TestPullingImagesPullsOnceForConcurrentStarts starts three containers
// of an image the node lacks at once: one pull fetches it, all three get
// its root filesystem, and the copy has the registry's digest.
func TestPullingImagesPullsOnceForConcurrentStarts(t *testing.T) {
	testenv.RequireRoot(t)
	src, dst, ts, manifests := pullSetup(t)
	want := imagetest.BusyboxImage(t, src)
	p := &PullingImages{StoreImages: StoreImages{dst}, Base: ts.URL, Transport: ts.Client().Transport, Node: "n1"}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i := range errs {
		wg.Go(func() {
			id := fmt.Sprintf("default.web-%d.abcdef01.0", i)
			rootfs, err := p.Prepare(context.Background(), imagetest.BusyboxTag, id)
			if err == nil && len(rootfs.LowerDirs) == 0 {
				err = fmt.Errorf("no lower dirs")
			}
			errs[i] = err
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("prepare %d: %v", i, err)
		}
	}
	if n := manifests.Load(); n != 1 {
		t.Errorf("%d manifest fetches, want 1 pull", n)
	}
	got, err := dst.Resolve(context.Background(), imagetest.BusyboxTag)
	if err != nil || got.Digest != want.Digest {
		t.Errorf("pulled %s (%v), want %s", got.Digest, err, want.Digest)
	}
	// By digest, with the copy at hand: nothing is fetched.
	if _, err := p.Prepare(context.Background(), "demo/busybox:1@"+want.Digest, "default.web-9.abcdef01.0"); err != nil {
		t.Errorf("prepare by digest: %v", err)
	}
	if n := manifests.Load(); n != 1 {
		t.Errorf("%d manifest fetches after a prepare by digest, want still 1", n)
	}
}

// TestPreparePinnedLocalImage prepares images built in the node's own
// store by pinned reference, as berth up's agent (StoreImages) and a pulling
// agent (PullingImages, with no registry to reach) get them from the
// API: the digest is found locally and wins over where the tag points
// now, so nothing is pulled.
func TestPreparePinnedLocalImage(t *testing.T) {
	testenv.RequireRoot(t)
	st, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	built := imagetest.BusyboxImage(t, st)
	pinned := imagetest.BusyboxTag + "@" + built.Digest
	unreachable := &PullingImages{StoreImages: StoreImages{st}, Base: "http://127.0.0.1:1", Node: "n1"}
	for i, p := range []Images{StoreImages{st}, unreachable} {
		id := fmt.Sprintf("default.web-%d.abcdef01.0", i)
		if rootfs, err := p.Prepare(t.Context(), pinned, id); err != nil || len(rootfs.Cmd) != 1 || rootfs.Cmd[0] != "sh" {
			t.Errorf("%T: prepare %s: %+v, %v", p, pinned, rootfs, err)
		}
	}

	// The tag moves to another image; the pinned digest is still the first.
	dir := imagetest.BusyboxRootfs(t)
	moved, err := st.Build(t.Context(), dir, image.BuildOptions{Tag: imagetest.BusyboxTag, Cmd: []string{"true"}})
	if err != nil || moved.Digest == built.Digest {
		t.Fatalf("retag: %v, digest %s (was %s)", err, moved.Digest, built.Digest)
	}
	if rootfs, err := (StoreImages{st}).Prepare(t.Context(), pinned, "default.web-2.abcdef01.0"); err != nil || len(rootfs.Cmd) != 1 || rootfs.Cmd[0] != "sh" {
		t.Errorf("prepare %s after the tag moved: %+v, %v; want the first image (cmd sh)", pinned, rootfs, err)
	}
	if rootfs, err := (StoreImages{st}).Prepare(t.Context(), imagetest.BusyboxTag+"@"+moved.Digest, "default.web-3.abcdef01.0"); err != nil || len(rootfs.Cmd) != 1 || rootfs.Cmd[0] != "true" {
		t.Errorf("prepare the moved tag by its digest: %+v, %v; want cmd true", rootfs, err)
	}
}

func TestPullEventObject(t *testing.T) {
	p := &PullingImages{Node: "n1"}
	if o := p.object("prod.web-x1.abcdef01.3"); o.Kind != "Instance" || o.Namespace != "prod" || o.Name != "web-x1" {
		t.Errorf("object of an instance's container: %+v", o)
	}
	if o := p.object("web.0123456789abcdef.3"); o.Kind != "Node" || o.Name != "n1" {
		t.Errorf("object of a hashed container id: %+v", o)
	}
}

func TestTransferredReportsQuarters(t *testing.T) {
	var tr transferred
	var got []int
	for done := int64(0); done <= 100; done += 10 {
		if pct, ok := tr.add(registry.Progress{Layer: "l1", Done: done, Total: 100}); ok {
			got = append(got, pct)
		}
	}
	if fmt.Sprint(got) != "[30 50 80]" {
		t.Errorf("reported %v, want [30 50 80]", got)
	}
}

// TestPullingImagesPolicies: Never fails on a node without the image and
// asks no registry; IfNotPresent fetches it once; Always asks the
// registry again though the node has it; IfNotPresent and Never then use
// the node's copy.
func TestPullingImagesPolicies(t *testing.T) {
	testenv.RequireRoot(t)
	src, dst, ts, manifests := pullSetup(t)
	imagetest.BusyboxImage(t, src)
	p := &PullingImages{StoreImages: StoreImages{Store: dst}, Base: ts.URL, Transport: ts.Client().Transport, Node: "n1"}
	steps := []struct {
		policy    api.PullPolicy
		fetches   int32
		wantError string
	}{
		{api.PullNever, 0, "pull policy is Never"},
		{api.PullIfNotPresent, 1, ""},
		{api.PullAlways, 2, ""},
		{api.PullIfNotPresent, 2, ""},
		{api.PullNever, 2, ""},
	}
	for i, s := range steps {
		_, err := p.PrepareFor(t.Context(), imagetest.BusyboxTag, fmt.Sprintf("default.web-%d.abcdef01.0", i), Pull{Policy: s.policy})
		switch {
		case s.wantError == "" && err != nil:
			t.Errorf("step %d (%s): %v", i, s.policy, err)
		case s.wantError != "" && (err == nil || !strings.Contains(err.Error(), s.wantError) || !errdefs.IsNotFound(err)):
			t.Errorf("step %d (%s): %v, want not found and %q", i, s.policy, err, s.wantError)
		}
		if n := manifests.Load(); n != s.fetches {
			t.Errorf("step %d (%s): %d manifest fetches so far, want %d", i, s.policy, n, s.fetches)
		}
	}
}

// TestPullingImagesDirectFallsBack lets agents pull directly: an image
// whose registry cannot be reached comes from the servers instead.
func TestPullingImagesDirectFallsBack(t *testing.T) {
	testenv.RequireRoot(t)
	src, dst, ts, manifests := pullSetup(t)
	imagetest.BusyboxImage(t, src)
	const ref = "127.0.0.1:1/demo/busybox:1" // nothing listens on port 1
	if _, err := src.Tag(t.Context(), imagetest.BusyboxTag, ref); err != nil {
		t.Fatal(err)
	}
	var asked atomic.Int32
	p := &PullingImages{StoreImages: StoreImages{Store: dst}, Base: ts.URL, Transport: ts.Client().Transport, Node: "n1",
		Settings: func(context.Context) (*api.RegistrySettings, error) {
			asked.Add(1)
			return &api.RegistrySettings{AgentsPullDirect: true}, nil
		}}
	if _, err := p.PrepareFor(t.Context(), ref, "default.web-0.abcdef01.0", Pull{Policy: api.PullIfNotPresent}); err != nil {
		t.Fatalf("prepare: %v", err)
	}
	if asked.Load() != 1 || manifests.Load() != 1 {
		t.Errorf("settings read %d times, %d manifest fetches from the server; want 1 and 1", asked.Load(), manifests.Load())
	}
}
