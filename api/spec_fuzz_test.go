package api

import (
	"bytes"
	"errors"
	"testing"

	"github.com/berth-dev/berth/api/errdefs"
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
	f.Add([]byte("kind: Service\nname: x\ntemplate: {image: a, resources: {disk: 1Gi, memory: 64Mi, pids: 10}}"))
	f.Add([]byte("kind: Service\nname: x\ntemplate: {image: a, resources: {disk: 4Ki}}"))
	f.Add([]byte("kind: Service\nname: x\ntemplate: {image: a, resources: {disk: -1Mi}}"))
	f.Add([]byte("kind: Service\nname: x\ntemplate: {image: a, resources: {disk: 99999999999999999999Gi}}"))
	f.Add([]byte("kind: Job\nname: j\ncompletions: 2\nparallelism: 1\nbackoffLimit: 0\ntemplate: {image: a, restart: never, resources: {disk: 8Mi}}"))
	f.Add([]byte("kind: Service\nname: x\nname: y\ntemplate: {image: a}"))
	f.Add([]byte("a: &a [*a, *a]\nkind: Service"))
	f.Add([]byte("kind: Service\nname: ../../etc\ntemplate: {image: a, env: {\"A=B\": c}}"))
	f.Add([]byte("kind: Service\nname: x\nsurprise: 1\ntemplate: {image: a}"))
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
			again, err := ParseSpecs("again.yaml", b)
			if err != nil {
				t.Fatalf("round trip of\n%s\nfailed: %v", b, err)
			}
			// The flat shape is canonical: writing what was read back
			// gives the same text.
			if len(again) != 1 {
				t.Fatalf("round trip of\n%s\ngave %d objects", b, len(again))
			}
			b2, err := MarshalSpec(again[0])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b, b2) {
				t.Fatalf("round trip changed the spec:\n%s\n---\n%s", b, b2)
			}
		}
	})
}
