// Package version says which build of berth is running, from what the Go
// toolchain stamped into the binary: the module version and, for a build
// from a git checkout, the commit.
package version

import (
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/berth-dev/berth/api"
)

// Info describes one build.
type Info = api.Version

// Get is this binary's build.
var Get = sync.OnceValue(func() Info {
	i := Info{Version: "(unknown)", Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return i
	}
	if bi.Main.Version != "" {
		i.Version = bi.Main.Version
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			i.Revision = s.Value
		case "vcs.time":
			i.Time = s.Value
		case "vcs.modified":
			i.Modified = s.Value == "true"
		}
	}
	return i
})
