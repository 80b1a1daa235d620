package api

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/berth-dev/berth/api/errdefs"
)

// JoinTokenPrefix starts every join token (berth_<id>.<secret>), which
// tells one from an API bearer token.
const JoinTokenPrefix = "berth_"

// SocketPath is the path of a node's API socket under its data dir.
func SocketPath(dataDir string) string { return filepath.Join(dataDir, "berth.sock") }

// DashboardPrefix is where the API servers serve the web dashboard.
const DashboardPrefix = "/ui/"

// DashboardCodesPath is where the CLI asks for one-time dashboard
// sign-in codes.
const DashboardCodesPath = DashboardPrefix + "codes"

// ParseInitialCluster reads the servers of a cluster, "name=URL,name2=URL",
// into a map; the URLs are checked when a member is configured.
func ParseInitialCluster(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, u, ok := strings.Cut(part, "=")
		if !ok || name == "" || u == "" {
			return nil, fmt.Errorf("cluster member %q: %w: want NAME=HOST:PORT", part, errdefs.ErrInvalidArgument)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("cluster member %q: %w: named twice", name, errdefs.ErrInvalidArgument)
		}
		out[name] = u
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("cluster members: %w: none given", errdefs.ErrInvalidArgument)
	}
	return out, nil
}
