package version

import (
	"runtime"
	"testing"
)

func TestGetAndShort(t *testing.T) {
	i := Get()
	if i.Go != runtime.Version() || i.Platform != runtime.GOOS+"/"+runtime.GOARCH || i.Version == "" {
		t.Errorf("Get() = %+v, want this toolchain, platform and some version", i)
	}
	for _, tc := range []struct {
		in   Info
		want string
	}{
		{Info{Version: "v1.2.3"}, "v1.2.3"},
		{Info{Version: "(devel)", Revision: "0123456789abcdef0123"}, "(devel) 0123456789ab"},
		{Info{Version: "(devel)", Revision: "0123456789abcdef0123", Modified: true}, "(devel) 0123456789ab-dirty"},
		{Info{Version: "(devel)", Revision: "abc"}, "(devel) abc"},
		{Info{Version: "v0.0.0-20261123144435-b3335e79de48+dirty", Revision: "b3335e79de485b53", Modified: true}, "v0.0.0-20261123144435-b3335e79de48+dirty"},
	} {
		if got := tc.in.Short(); got != tc.want {
			t.Errorf("%+v.Short() = %q, want %q", tc.in, got, tc.want)
		}
	}
}
