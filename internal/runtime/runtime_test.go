package runtime_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/runtime/runtimetest"
)

func TestConformanceBuiltin(t *testing.T) { runtimetest.Suite(t, "berth") }
func TestConformanceRunc(t *testing.T)    { runtimetest.Suite(t, "runc") }
func TestConformanceCrun(t *testing.T)    { runtimetest.Suite(t, "crun") }
