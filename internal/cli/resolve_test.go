package cli

import (
	"strings"
	"testing"

	"github.com/berth-dev/berth/api"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		ns, arg string
		want    objRef
		err     string
	}{
		{"", "web", objRef{"", "default", "web"}, ""},
		{"prod", "web", objRef{"", "prod", "web"}, ""},
		{"", "service/web", objRef{api.KindService, "default", "web"}, ""},
		{"", "svc/prod/web", objRef{api.KindService, "prod", "web"}, ""},
		{"", "prod/web", objRef{"", "prod", "web"}, ""},
		{"prod", "prod/web", objRef{"", "prod", "web"}, ""},
		{"", "node/n1", objRef{api.KindNode, "", "n1"}, ""},
		{"prod", "job/tests", objRef{api.KindJob, "prod", "tests"}, ""},
		{"prod", "default/web", objRef{}, "--namespace"},
		{"", "a/b/c/d", objRef{}, "[KIND/]"},
		{"", "service/", objRef{}, "no name"},
		{"Bad_NS", "web", objRef{}, "namespace"},
	} {
		g := &globals{namespace: tc.ns}
		got, err := g.parseRef(tc.arg)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("-n %q %q: %v, want an error with %q", tc.ns, tc.arg, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("-n %q %q: %+v, %v; want %+v", tc.ns, tc.arg, got, err, tc.want)
		}
	}
}

func TestListNamespace(t *testing.T) {
	for _, tc := range []struct {
		ns   string
		all  bool
		want string
		err  bool
	}{
		{"", false, "default", false},
		{"prod", false, "prod", false},
		{"", true, "", false},
		{"prod", true, "", true},
	} {
		g := &globals{namespace: tc.ns, allNamespaces: tc.all}
		got, err := g.listNamespace()
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("-n %q -A %v: %q, %v", tc.ns, tc.all, got, err)
		}
	}
}
