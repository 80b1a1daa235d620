package runtime

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Reaped is what ReapLost did about a container whose shim was lost.
type Reaped struct {
	// Killed is how many processes still ran in the container's cgroup
	// and were killed; 0 means nothing was left.
	Killed int
	// How names the means: "cgroup.kill" (cgroup v2), "freeze+kill"
	// (cgroup v1's freezer), or "kill" when neither was there.
	How string
}

// ReapLost makes sure nothing of a container whose shim was lost still
// runs. Its processes outlive the shim (they are reparented, not killed),
// and a replacement started beside them would be a duplicate holding the
// same data and ports. Re-adopting them is not possible: their stdio
// pipes and their exit status belonged to the dead shim. So every process
// left in the container's cgroup is killed, and ReapLost returns once the
// cgroup is empty. It does nothing for a container whose shim lives.
func (r *Runtime) ReapLost(ctx context.Context, id string) (Reaped, error) {
	bd, m, err := r.load(id)
	if err != nil {
		return Reaped{}, err
	}
	if st := r.status(bd, m); st.State != Unknown {
		return Reaped{}, nil
	}
	rp, err := r.cg.killAll(ctx, r.containerCgroup(bd))
	if err != nil {
		return rp, fmt.Errorf("container %q: reap after its shim was lost: %w", id, err)
	}
	return rp, nil
}

// containerCgroup is the cgroup the container was given when it started
// (the driver then in use decided it), else where this driver puts it.
func (r *Runtime) containerCgroup(bd *bundle) string {
	if s := r.spec(bd); s != nil && s.Linux != nil && s.Linux.CgroupsPath != "" {
		return s.Linux.CgroupsPath
	}
	return r.CgroupPath(bd.id)
}

// cgroupPids lists the processes in one cgroup directory.
func cgroupPids(dir string) []int {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

// killAll kills every process in the cgroup at path, in each hierarchy,
// and waits until none is left. On v2 cgroup.kill does it atomically; on
// v1 the freezer holds the processes still while each is sent SIGKILL, so
// none can fork a child that escapes the sweep.
func (c *cgroups) killAll(ctx context.Context, path string) (Reaped, error) {
	dirs := c.dirs(path)
	found := map[int]bool{}
	for _, d := range dirs {
		for _, pid := range cgroupPids(d) {
			found[pid] = true
		}
	}
	if len(found) == 0 {
		return Reaped{}, nil
	}
	rp := Reaped{Killed: len(found), How: "kill"}
	deadline := time.Now().Add(10 * time.Second)
	for {
		switch {
		case c.v2 && writeCG(dirs[0], "cgroup.kill", "1") == nil:
			rp.How = "cgroup.kill"
		case !c.v2 && c.has("freezer"):
			rp.How = "freeze+kill"
			if err := freezeKill(ctx, filepath.Join(c.root, "freezer", path), dirs); err != nil {
				return rp, err
			}
		default:
			for _, d := range dirs {
				for _, pid := range cgroupPids(d) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		empty := true
		for _, d := range dirs {
			if len(cgroupPids(d)) > 0 {
				empty = false
			}
		}
		if empty {
			return rp, nil
		}
		if time.Now().After(deadline) {
			return rp, fmt.Errorf("cgroup %s: processes remain after SIGKILL", path)
		}
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return rp, err
		}
	}
}

func (c *cgroups) has(ctrl string) bool {
	for _, x := range c.v1 {
		if x == ctrl {
			return true
		}
	}
	return false
}

// freezeKill freezes the v1 freezer cgroup fdir, sends SIGKILL to every
// process in dirs, and thaws it so the signals are delivered.
func freezeKill(ctx context.Context, fdir string, dirs []string) error {
	if err := writeCG(fdir, "freezer.state", "FROZEN"); err != nil {
		return err
	}
	defer func() { _ = writeCG(fdir, "freezer.state", "THAWED") }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile(filepath.Join(fdir, "freezer.state"))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", fdir, err)
		}
		if strings.TrimSpace(string(b)) == "FROZEN" || time.Now().After(deadline) {
			break // a cgroup that will not settle is killed anyway
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return err
		}
		_ = writeCG(fdir, "freezer.state", "FROZEN")
	}
	var errs []error
	for _, d := range dirs {
		for _, pid := range cgroupPids(d) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				errs = append(errs, fmt.Errorf("kill %d: %w", pid, err))
			}
		}
	}
	return errors.Join(errs...)
}
