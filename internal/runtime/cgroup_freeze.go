package runtime

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// errNoFreezer: the host has no freezer for a container's cgroup.
var errNoFreezer = errors.New("no cgroup freezer")

// freezeTimeout bounds the wait for a cgroup's tasks to stop.
const freezeTimeout = 5 * time.Second

// freeze stops every task of the cgroup path and returns once the
// kernel says they all are stopped; thaw lets them run again. The v1
// freezer (which runc uses on a hybrid host) is preferred over
// cgroup.freeze, as the runtimes choose.
//
// CRIU freezes a container's cgroup itself, but it looks at the freezer
// again only every 100 ms, and a freeze is seldom done by its first
// look: a container frozen here, checked every millisecond, is handed
// to it frozen, which it takes as it is (and thaws once it holds the
// tasks).
func (c *cgroups) freeze(path string) (thaw func(), err error) {
	var dir, file, frozen, thawed, state string
	switch {
	case slices.Contains(c.v1, "freezer"):
		dir = filepath.Join(c.root, "freezer", path)
		file, frozen, thawed, state = "freezer.state", "FROZEN", "THAWED", "freezer.state"
	case c.v2:
		dir = filepath.Join(c.root, path)
		file, frozen, thawed, state = "cgroup.freeze", "1", "0", "cgroup.events"
	default:
		return nil, errNoFreezer
	}
	thaw = func() { _ = os.WriteFile(filepath.Join(dir, file), []byte(thawed), 0o644) }
	if err := writeCG(dir, file, frozen); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(freezeTimeout)
	for {
		b, err := os.ReadFile(filepath.Join(dir, state))
		if err != nil {
			thaw()
			return nil, fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if isFrozen(string(b), c.v2 && file == "cgroup.freeze") {
			return thaw, nil
		}
		if time.Now().After(deadline) {
			thaw()
			return nil, fmt.Errorf("cgroup %s: its tasks did not freeze within %v", dir, freezeTimeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// isFrozen reads freezer.state (v1) or cgroup.events (v2).
func isFrozen(s string, v2 bool) bool {
	if !v2 {
		return strings.TrimSpace(s) == "FROZEN"
	}
	for _, l := range strings.Split(s, "\n") {
		if l == "frozen 1" {
			return true
		}
	}
	return false
}
