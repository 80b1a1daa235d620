package registry_test

import (
	"errors"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
	"github.com/berth-dev/berth/internal/image"
	"github.com/berth-dev/berth/internal/registry"
)

func TestNormalizeLocalName(t *testing.T) {
	d := "sha256:" + strings.Repeat("ab", 32)
	for _, c := range []struct{ ref, want string }{
		{"nginx", "docker.io/library/nginx:latest"},
		{"nginx:1.27", "docker.io/library/nginx:1.27"},
		{"bitnami/redis:7", "docker.io/bitnami/redis:7"},
		{"docker.io/library/nginx", "docker.io/library/nginx:latest"},
		{"ghcr.io/o/r:v1", "ghcr.io/o/r:v1"},
		{"localhost:5000/app", "localhost:5000/app:latest"},
		{"ghcr.io/o/r@" + d, ""},
		{"ghcr.io/o/r:v1@" + d, "ghcr.io/o/r:v1"},
	} {
		r, err := registry.Normalize(c.ref)
		if err != nil {
			t.Fatalf("Normalize(%q): %v", c.ref, err)
		}
		if got := registry.LocalName(r); got != c.want {
			t.Errorf("LocalName(%q) = %q, want %q", c.ref, got, c.want)
		}
	}
	if _, err := registry.Normalize("Nginx"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Errorf("Normalize(Nginx): %v", err)
	}
	for ref, want := range map[string]bool{"nginx": false, "demo/busybox:1": false, "docker.io/x": true, "localhost/x": true, "h:5000/x": true} {
		if got := registry.IsUpstream(ref); got != want {
			t.Errorf("IsUpstream(%q) = %v", ref, got)
		}
	}
}

func TestChoosePlatform(t *testing.T) {
	desc := func(hex byte, os, arch, variant string) v1.Descriptor {
		return v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat(string(hex), 64)}, Platform: &v1.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	idx := &v1.IndexManifest{Manifests: []v1.Descriptor{
		desc('a', "linux", "amd64", ""),
		desc('b', "linux", "arm", "v6"),
		desc('c', "linux", "arm", "v7"),
		desc('d', "linux", "arm64", ""),
		desc('e', "unknown", "unknown", ""), // an attestation
	}}
	for _, c := range []struct {
		want v1.Platform
		hex  byte
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, 'a'},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, 'c'},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v6"}, 'b'},
		{v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, 'd'},
	} {
		got, err := image.ChoosePlatform(idx, c.want)
		if err != nil || got.Digest.Hex[0] != c.hex {
			t.Errorf("ChoosePlatform(%v) = %v, %v; want %c…", c.want, got.Digest, err, c.hex)
		}
	}
	_, err := image.ChoosePlatform(idx, v1.Platform{OS: "linux", Architecture: "riscv64"})
	if !errors.Is(err, errdefs.ErrNotFound) || !strings.Contains(err.Error(), "linux/arm/v7") {
		t.Errorf("absent platform: %v, want not found listing what the index has", err)
	}
}
