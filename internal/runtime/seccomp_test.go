package runtime

import (
	"bytes"
	"runtime"
	"testing"
	"time"
	"weak"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// An exec compiles its container's profile by the profile's pointer, so
// a profile met again is not rendered again; another profile, even at a
// reused address, gets its own program; and the entry goes with the
// profile.
func TestCompileSeccompByProfile(t *testing.T) {
	spec := &specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}}
	p, err := DefaultSeccomp(spec)
	if err != nil {
		t.Fatal(err)
	}
	first, err := compileSeccomp(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := compileSeccomp(p)
	if err != nil {
		t.Fatal(err)
	}
	if &first[0] != &again[0] {
		t.Error("the same profile was compiled again")
	}
	other := *p
	other.DefaultAction = specs.ActKillProcess
	prog, err := compileSeccomp(&other)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(prog, first) {
		t.Error("a different profile got the first one's program")
	}

	wp := weak.Make(p)
	p = nil
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		if _, ok := bpfByProfile.Load(wp); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the entry outlived its profile")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
