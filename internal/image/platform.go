package image

// Platforms: which image of a multi-arch index a node runs.

import (
	"fmt"
	"runtime"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/api/errdefs"
)

// NodePlatform is the platform of this machine, the one pulled from a
// multi-arch index.
func NodePlatform() v1.Platform {
	p := v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
	}
	return p
}

// ParsePlatform parses OS/ARCH[/VARIANT].
func ParsePlatform(s string) (v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return v1.Platform{}, fmt.Errorf("platform %q: want OS/ARCH[/VARIANT]: %w", s, errdefs.ErrInvalidArgument)
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// ChoosePlatform picks want's manifest from an index: same OS and
// architecture, and the same variant when want has one (arm64's v8 also
// matches an entry without a variant). Attestations and other entries
// without a platform are skipped.
func ChoosePlatform(idx *v1.IndexManifest, want v1.Platform) (v1.Descriptor, error) {
	var have []string
	var loose *v1.Descriptor
	for i, d := range idx.Manifests {
		p := d.Platform
		if p == nil || p.OS == "unknown" {
			continue
		}
		have = append(have, platformString(*p))
		if p.OS != want.OS || p.Architecture != want.Architecture {
			continue
		}
		switch {
		case p.Variant == want.Variant:
			return d, nil
		case want.Variant == "" || (want.Architecture == "arm64" && p.Variant == "" && want.Variant == "v8"):
			if loose == nil {
				loose = &idx.Manifests[i]
			}
		}
	}
	if loose != nil {
		return *loose, nil
	}
	return v1.Descriptor{}, fmt.Errorf("no image for %s in the index (it has %s): %w", platformString(want), strings.Join(have, ", "), errdefs.ErrNotFound)
}

func platformString(p v1.Platform) string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}
