package scheduler_test

import (
	"reflect"
	"testing"

	"github.com/berth-dev/berth/internal/scheduler"
)

// FuzzParseConstraint: whatever parses prints back to a text that parses
// to the same constraint.
func FuzzParseConstraint(f *testing.F) {
	for _, s := range []string{"zone == a", "node.labels.disk in (ssd, nvme)", "x not in (a)", "node.name != n1", "a!=b", "in in (in)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := scheduler.ParseConstraint(s)
		if err != nil {
			return
		}
		again, err := scheduler.ParseConstraint(c.String())
		if err != nil {
			t.Fatalf("%q parsed to %+v, whose text %q does not parse: %v", s, c, c.String(), err)
		}
		if !reflect.DeepEqual(c, again) {
			t.Fatalf("%q: %+v prints as %q, which parses to %+v", s, c, c.String(), again)
		}
	})
}
