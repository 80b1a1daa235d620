package api

import (
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/errdefs"
)

// Whatever the input, ParseSpecs returns valid objects or an
// InvalidArgument error, never both, and what it accepts survives a round
// trip through the flat shape.
func FuzzParseSpecs(f *testing.F) {
	f.Add([]byte(goodService))
	f.Add([]byte(goodJob + "---\n" + goodService))
	f.Add([]byte("kind: Service\nname: x\ntemplate: {image: a, resources: {memory: 1.5Gi}}"))
	f.Add([]byte("---\n---\n"))
	f.Add([]byte("kind: [1, 2]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		objs, err := ParseSpecs("f.yaml", data)
		if err != nil {
			if objs != nil {
				t.Fatal("objects and an error")
			}
			if !errors.Is(err, errdefs.ErrInvalidArgument) {
				t.Fatalf("error outside InvalidArgument: %v", err)
			}
			return
		}
		for _, o := range objs {
			if err := o.Validate(); err != nil {
				t.Fatalf("accepted an invalid object: %v", err)
			}
			b, err := MarshalSpec(o)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ParseSpecs("again.yaml", b); err != nil {
				t.Fatalf("round trip of\n%s\nfailed: %v", b, err)
			}
		}
	})
}
