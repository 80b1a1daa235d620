package image

import (
	"context"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// An image of more than MaxLayers layers is refused, naming the limit,
// whether it is imported (or built) or its manifest arrives by a push or
// a pull: a hostile manifest of thousands of layers costs a fetch, a
// directory and an overlay lower layer each, and no runtime mounts it.
func TestTooManyLayersRefused(t *testing.T) {
	layers := make([]v1.Layer, MaxLayers+1)
	for i := range layers {
		layers[i] = tarLayer(t, file{name: fmt.Sprint(i), body: "x"})
	}
	img := testImage(t, []string{"/bin/app"}, layers...)
	s := openStore(t)
	if _, err := s.put(context.Background(), img, []string{"demo/deep:1"}, nil); err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxLayers)) {
		t.Fatalf("put of %d layers: %v, want a refusal naming the limit %d", len(layers), err, MaxLayers)
	}
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := parseImageManifest(raw, ""); err == nil || !strings.Contains(err.Error(), fmt.Sprint(MaxLayers)) {
		t.Fatalf("manifest of %d layers: %v, want a refusal naming the limit %d", len(layers), err, MaxLayers)
	}
}
