package runtime

import (
	"os"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A container's spec is parsed once while its config.json stays the
// same file, and read afresh once the file is another: a container
// removed and made again under its id, or the bundle rewritten.
func TestSpecCachedPerFile(t *testing.T) {
	r := &Runtime{root: t.TempDir()}
	bd, _ := r.bundle("c1")
	if err := os.Mkdir(bd.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(hostname string) {
		t.Helper()
		if err := writeJSON(bd.path("config.json"), &specs.Spec{Hostname: hostname}); err != nil {
			t.Fatal(err)
		}
	}
	if r.spec(bd) != nil {
		t.Fatal("a spec for a bundle with no config.json")
	}
	write("first")
	s1 := r.spec(bd)
	if s1 == nil || s1.Hostname != "first" {
		t.Fatalf("spec %+v, want hostname first", s1)
	}
	if s2 := r.spec(bd); s2 != s1 {
		t.Error("the unchanged file was parsed again")
	}
	write("second")
	if s := r.spec(bd); s == nil || s.Hostname != "second" {
		t.Fatalf("after the file was replaced: %+v, want hostname second", s)
	}
	// Removed and made again with the same content: read afresh, not kept.
	if err := os.RemoveAll(bd.dir); err != nil {
		t.Fatal(err)
	}
	r.forgetSpec(bd)
	if len(r.specs) != 0 {
		t.Errorf("%d specs cached after the container was forgotten", len(r.specs))
	}
	if r.spec(bd) != nil {
		t.Error("a spec for a removed container")
	}
}
