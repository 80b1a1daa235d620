package apiserver_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
	"github.com/berth-dev/berth/internal/apiserver"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

var _ apiserver.ImagePinner = (*registry.Handler)(nil)

// buildImage stores a one-file image under tag and returns its digest;
// content decides the digest.
func buildImage(t *testing.T, imgs *image.Store, tag, content string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "hello"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	img, err := imgs.Build(t.Context(), dir, image.BuildOptions{Tag: tag})
	if err != nil {
		t.Fatal(err)
	}
	return img.Digest
}

// TestApplyPinsImageTags applies services and jobs on a server with the
// registry mounted: a tag its store has is pinned to the digest /v2/
// serves for it, anything else is stored as given, re-applying the same
// spec leaves the template alone, and re-applying it after the tag moved
// pins the new digest (a rollout). Actions that are not applies (scale)
// keep the digest the last apply pinned.
func TestApplyPinsImageTags(t *testing.T) {
	imgs, err := image.Open(filepath.Join(t.TempDir(), "images"))
	if err != nil {
		t.Fatal(err)
	}
	first := buildImage(t, imgs, "demo/app:1", "one")
	e := start(t, func(s *apiserver.Server) {
		s.Mount("/v2/", registry.New(imgs, registry.Options{Authorize: apiserver.AuthorizeImages}))
	})
	ctx := t.Context()
	service := func(name, img string) *api.Service {
		return &api.Service{Metadata: api.Metadata{Name: name}, Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: img}}}
	}
	other := "sha256:" + strings.Repeat("ab", 32)

	for _, c := range []struct {
		name, image, want string
	}{
		{"tagged", "demo/app:1", "demo/app:1@" + first},
		{"not-in-store", "demo/elsewhere:2", "demo/elsewhere:2"},
		{"latest-not-in-store", "demo/app", "demo/app"},
		{"pinned", "demo/app:1@" + other, "demo/app:1@" + other},
		{"digest-only", "demo/app@" + other, "demo/app@" + other},
		{"host-prefixed", "localhost:5000/demo/app:1", "localhost:5000/demo/app:1"},
	} {
		got, err := e.client.Services().Apply(ctx, service(c.name, c.image))
		if err != nil {
			t.Fatalf("apply %s: %v", c.name, err)
		}
		stored, err := e.client.Services().Get(ctx, "default", c.name)
		if err != nil {
			t.Fatal(err)
		}
		if got.Spec.Template.Image != c.want || stored.Spec.Template.Image != c.want {
			t.Errorf("%s: applied %q, answered %q and stored %q, want %q", c.name, c.image, got.Spec.Template.Image, stored.Spec.Template.Image, c.want)
		}
	}

	// Jobs are pinned too, and `berth run`'s service goes the same way.
	job := &api.Job{Metadata: api.Metadata{Name: "batch"}, Spec: api.JobSpec{Completions: 1, Template: api.Template{Image: "demo/app:1"}}}
	if got, err := e.client.Jobs().Apply(ctx, job); err != nil || got.Spec.Template.Image != "demo/app:1@"+first {
		t.Errorf("job: %v, image %q, want it pinned to %s", err, got.Spec.Template.Image, first)
	}
	if got, err := e.client.Services().Apply(ctx, api.RunService("", "demo/app:1", []string{"sleep", "1d"})); err != nil || got.Spec.Template.Image != "demo/app:1@"+first {
		t.Errorf("berth run's service: %v, image %q, want it pinned to %s", err, got.Spec.Template.Image, first)
	}

	// Every container's image is pinned: a sidecar's and an init
	// container's own; one that names none runs the main one's.
	side := buildImage(t, imgs, "demo/side:1", "side")
	pod := service("pod", "demo/app:1")
	pod.Spec.Template.Containers = []api.Container{
		{Name: "setup", Init: true, Image: "demo/side:1", Command: []string{"true"}},
		{Name: "log", Sidecar: true, Command: []string{"sleep", "1d"}},
		{Name: "away", Sidecar: true, Image: "demo/elsewhere:2", Command: []string{"sleep", "1d"}},
	}
	if _, err := e.client.Services().Apply(ctx, pod); err != nil {
		t.Fatal(err)
	}
	stored, err := e.client.Services().Get(ctx, "default", "pod")
	if err != nil {
		t.Fatal(err)
	}
	tpl := stored.Spec.Template
	if cs := tpl.Containers; tpl.Image != "demo/app:1@"+first || cs[0].Image != "demo/side:1@"+side || cs[1].Image != "" ||
		cs[2].Image != "demo/elsewhere:2" || tpl.ContainerImage(&cs[1]) != "demo/app:1@"+first {
		t.Errorf("containers' images stored as %q, %q, %q, %q; want the main and init ones pinned, the sidecar without one running the main's, one not in the registry as given",
			tpl.Image, cs[0].Image, cs[1].Image, cs[2].Image)
	}

	// A malformed digest is refused, not passed over.
	if code, eb := e.call(t, "PUT", "/v1/namespaces/default/services/bad",
		`{"spec":{"replicas":1,"template":{"image":"demo/app:1@sha256:abc"}}}`); code != 422 || eb.Field != "spec.template.image" {
		t.Errorf("a short digest: %d %+v, want 422 on spec.template.image", code, eb)
	}

	// The same spec again: the same template, so no rollout.
	before, err := e.client.Services().Get(ctx, "default", "tagged")
	if err != nil {
		t.Fatal(err)
	}
	again, err := e.client.Services().Apply(ctx, service("tagged", "demo/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	if again.Spec.Template.Hash() != before.Spec.Template.Hash() || again.Spec.Template.Image != before.Spec.Template.Image {
		t.Errorf("re-applied unchanged: template %s (%s), was %s (%s)", again.Spec.Template.Hash(), again.Spec.Template.Image,
			before.Spec.Template.Hash(), before.Spec.Template.Image)
	}

	// The tag moves to a new image: the same spec now pins the new digest.
	second := buildImage(t, imgs, "demo/app:1", "two")
	if second == first {
		t.Fatal("the rebuilt image has the old digest")
	}
	moved, err := e.client.Services().Apply(ctx, service("tagged", "demo/app:1"))
	if err != nil {
		t.Fatal(err)
	}
	if moved.Spec.Template.Image != "demo/app:1@"+second || moved.Spec.Template.Hash() == before.Spec.Template.Hash() {
		t.Errorf("re-applied after a retag: %q (template %s), want demo/app:1@%s and a new template", moved.Spec.Template.Image,
			moved.Spec.Template.Hash(), second)
	}

	// Scaling is no apply: the tag moving again does not change the image.
	buildImage(t, imgs, "demo/app:1", "three")
	scaled, err := e.client.Services().Scale(ctx, "default", "tagged", 3)
	if err != nil {
		t.Fatal(err)
	}
	if scaled.Spec.Template.Image != "demo/app:1@"+second {
		t.Errorf("scaled: image %q, want it still demo/app:1@%s", scaled.Spec.Template.Image, second)
	}
}

// TestApplyWithoutRegistryKeepsTags checks that a server with no registry
// mounted stores images as given.
func TestApplyWithoutRegistryKeepsTags(t *testing.T) {
	e := start(t)
	svc := &api.Service{Metadata: api.Metadata{Name: "web"}, Spec: api.ServiceSpec{Replicas: 1, Template: api.Template{Image: "demo/app:1"}}}
	got, err := e.client.Services().Apply(t.Context(), svc)
	if err != nil || got.Spec.Template.Image != "demo/app:1" {
		t.Fatalf("apply: %v, image %q, want demo/app:1", err, got.Spec.Template.Image)
	}
}
