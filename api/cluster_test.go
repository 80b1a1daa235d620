package api

import (
	"testing"

	"github.com/berth-dev/berth/api/errdefs"
)

func TestParseInitialCluster(t *testing.T) {
	for _, bad := range []string{"", "a", "a=", "=http://x:1", "a=http://x:1,a=http://y:1"} {
		if _, err := ParseInitialCluster(bad); !errdefs.IsInvalidArgument(err) {
			t.Errorf("ParseInitialCluster(%q): got %v, want an invalid argument", bad, err)
		}
	}
	m, err := ParseInitialCluster("a=http://127.0.0.1:2380, b=http://127.0.0.2:2380")
	if err != nil || len(m) != 2 || m["b"] != "http://127.0.0.2:2380" {
		t.Errorf("ParseInitialCluster: %v, %v", m, err)
	}
}
