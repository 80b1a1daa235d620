package runtime_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
	"github.com/berth-dev/berth/internal/testing/testenv"
)

func TestConformanceBuiltin(t *testing.T) { runtimetest.Suite(t, "berth") }
func TestConformanceRunc(t *testing.T)    { requireBinary(t, "runc"); runtimetest.Suite(t, "runc") }
func TestConformanceCrun(t *testing.T)    { requireBinary(t, "crun"); runtimetest.Suite(t, "crun") }

// requireBinary skips a test whose program is not installed, except in
// CI, which installs it: testenv's rule.
func requireBinary(t *testing.T, name string) {
	t.Helper()
	testenv.RequireBinary(t, name)
}
