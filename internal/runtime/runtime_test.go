package runtime_test

import (
	"os"
	"os/exec"
	"testing"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func TestConformanceBuiltin(t *testing.T) { runtimetest.Suite(t, "berth") }
func TestConformanceRunc(t *testing.T)    { requireBinary(t, "runc"); runtimetest.Suite(t, "runc") }
func TestConformanceCrun(t *testing.T)    { requireBinary(t, "crun"); runtimetest.Suite(t, "crun") }

// requireBinary skips a peer runtime's suite where it is not installed,
// except in CI, which installs it.
func requireBinary(t *testing.T, name string) {
	if _, err := exec.LookPath(name); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI: %v", name, err)
		}
		t.Skipf("%s is not installed", name)
	}
}
