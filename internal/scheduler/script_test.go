package scheduler_test

import (
	"testing"

	"github.com/cockroachdb/datadriven"

	"github.com/berth-dev/berth/internal/scheduler/schedtest"
)

// TestScripts runs testdata/scripts/*.txt; go test -rewrite regenerates the
// expected output.
func TestScripts(t *testing.T) {
	datadriven.Walk(t, "testdata/scripts", func(t *testing.T, path string) {
		r := schedtest.NewRunner()
		datadriven.RunTest(t, path, r.Handle)
	})
}
