package runtime

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// cgroups manages per-container cgroups directly through cgroupfs. It
// works on a pure v2 host and on v1 (including hybrid hosts whose v2 mount
// has no controllers, which it ignores).
type cgroups struct {
	root string // /sys/fs/cgroup
	v2   bool
	// v1 hierarchies in use, by controller name.
	v1 []string
}

var v1Controllers = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer"}

func detectCgroups() *cgroups {
	c := &cgroups{root: "/sys/fs/cgroup", v2: cgroup2Only()}
	if c.v2 {
		return c
	}
	seen := map[string]bool{}
	for _, ctrl := range v1Controllers {
		p := filepath.Join(c.root, ctrl)
		real, err := filepath.EvalSymlinks(p)
		if err != nil || seen[real] {
			continue // missing, or co-mounted with one already listed (cpu,cpuacct)
		}
		if _, err := os.Stat(filepath.Join(real, "cgroup.procs")); err != nil {
			continue
		}
		seen[real] = true
		c.v1 = append(c.v1, ctrl)
	}
	return c
}

// dirs lists the container's cgroup directories: one on v2, one per hierarchy on v1.
func (c *cgroups) dirs(path string) []string {
	if c.v2 {
		return []string{filepath.Join(c.root, path)}
	}
	out := make([]string, 0, len(c.v1))
	for _, ctrl := range c.v1 {
		out = append(out, filepath.Join(c.root, ctrl, path))
	}
	return out
}

// procsFiles are the cgroup.procs files a process is written into to join.
func (c *cgroups) procsFiles(path string) []string {
	d := c.dirs(path)
	for i := range d {
		d[i] = filepath.Join(d[i], "cgroup.procs")
	}
	return d
}

func writeCG(dir, file, val string) error {
	if err := os.WriteFile(filepath.Join(dir, file), []byte(val), 0o644); err != nil {
		return fmt.Errorf("cgroup %s: write %q to %s: %w", dir, val, file, err)
	}
	return nil
}

// create makes the cgroup for path (such as /berth/web-1) and applies r.
func (c *cgroups) create(path string, r *specs.LinuxResources) error {
	if c.v2 {
		return c.createV2(path, r)
	}
	for _, ctrl := range c.v1 {
		base := filepath.Join(c.root, ctrl)
		dir := filepath.Join(base, path)
		err := os.MkdirAll(dir, 0o755)
		if errors.Is(err, os.ErrNotExist) {
			err = os.MkdirAll(dir, 0o755) // the parent was removed as it emptied, just now
		}
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		if ctrl == "cpuset" {
			// A v1 cpuset cgroup starts empty and refuses tasks until cpus and mems are set.
			if err := inheritCpuset(base, path); err != nil {
				return err
			}
		}
		if err := applyV1(ctrl, dir, r); err != nil {
			return err
		}
	}
	return nil
}

func inheritCpuset(base, path string) error {
	parent := base
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		dir := filepath.Join(parent, part)
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			cur, _ := os.ReadFile(filepath.Join(dir, f))
			if strings.TrimSpace(string(cur)) != "" {
				continue
			}
			v, err := os.ReadFile(filepath.Join(parent, f))
			if err != nil {
				return fmt.Errorf("cgroup %s: read %s: %w", parent, f, err)
			}
			if err := writeCG(dir, f, strings.TrimSpace(string(v))); err != nil {
				return err
			}
		}
		parent = dir
	}
	return nil
}

func applyV1(ctrl, dir string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	switch ctrl {
	case "cpu":
		if r.CPU == nil {
			return nil
		}
		if r.CPU.Shares != nil {
			if err := writeCG(dir, "cpu.shares", strconv.FormatUint(*r.CPU.Shares, 10)); err != nil {
				return err
			}
		}
		if r.CPU.Period != nil {
			if err := writeCG(dir, "cpu.cfs_period_us", strconv.FormatUint(*r.CPU.Period, 10)); err != nil {
				return err
			}
		}
		if r.CPU.Quota != nil {
			return writeCG(dir, "cpu.cfs_quota_us", strconv.FormatInt(*r.CPU.Quota, 10))
		}
	case "cpuset":
		if r.CPU != nil && r.CPU.Cpus != "" {
			return writeCG(dir, "cpuset.cpus", r.CPU.Cpus)
		}
	case "memory":
		if r.Memory != nil && r.Memory.Limit != nil {
			if err := writeCG(dir, "memory.limit_in_bytes", strconv.FormatInt(*r.Memory.Limit, 10)); err != nil {
				return err
			}
			if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil && r.Memory.Swap != nil {
				return writeCG(dir, "memory.memsw.limit_in_bytes", strconv.FormatInt(*r.Memory.Swap, 10))
			}
		}
	case "pids":
		if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
			return writeCG(dir, "pids.max", strconv.FormatInt(*r.Pids.Limit, 10))
		}
	case "devices":
		for _, d := range r.Devices {
			file := "devices.deny"
			if d.Allow {
				file = "devices.allow"
			}
			if err := writeCG(dir, file, deviceRule(d)); err != nil {
				return err
			}
		}
	}
	return nil
}

func deviceRule(d specs.LinuxDeviceCgroup) string {
	typ := d.Type
	if typ == "" {
		typ = "a"
	}
	num := func(p *int64) string {
		if p == nil || *p < 0 {
			return "*"
		}
		return strconv.FormatInt(*p, 10)
	}
	if typ == "a" {
		return "a"
	}
	return fmt.Sprintf("%s %s:%s %s", typ, num(d.Major), num(d.Minor), d.Access)
}

func (c *cgroups) createV2(path string, r *specs.LinuxResources) error {
	// Controllers must be enabled in every ancestor's subtree_control.
	parent := c.root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		avail, _ := os.ReadFile(filepath.Join(parent, "cgroup.controllers"))
		var enable []string
		for _, ctrl := range strings.Fields(string(avail)) {
			if ctrl == "cpu" || ctrl == "memory" || ctrl == "pids" || ctrl == "cpuset" {
				enable = append(enable, "+"+ctrl)
			}
		}
		if len(enable) > 0 {
			_ = writeCG(parent, "cgroup.subtree_control", strings.Join(enable, " "))
		}
		parent = filepath.Join(parent, part)
		if err := os.Mkdir(parent, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("cgroup %s: %w", parent, err)
		}
	}
	dir := parent
	if r == nil {
		return nil
	}
	if r.CPU != nil {
		if r.CPU.Shares != nil {
			w := 1 + ((*r.CPU.Shares-2)*9999)/262142
			if err := writeCG(dir, "cpu.weight", strconv.FormatUint(w, 10)); err != nil {
				return err
			}
		}
		if r.CPU.Quota != nil && r.CPU.Period != nil {
			if err := writeCG(dir, "cpu.max", fmt.Sprintf("%d %d", *r.CPU.Quota, *r.CPU.Period)); err != nil {
				return err
			}
		}
		if r.CPU.Cpus != "" {
			if err := writeCG(dir, "cpuset.cpus", r.CPU.Cpus); err != nil {
				return err
			}
		}
	}
	if r.Memory != nil && r.Memory.Limit != nil {
		if err := writeCG(dir, "memory.max", strconv.FormatInt(*r.Memory.Limit, 10)); err != nil {
			return err
		}
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			if err := writeCG(dir, "memory.swap.max", "0"); err != nil {
				return err
			}
		}
	}
	if r.Pids != nil && r.Pids.Limit != nil && *r.Pids.Limit > 0 {
		if err := writeCG(dir, "pids.max", strconv.FormatInt(*r.Pids.Limit, 10)); err != nil {
			return err
		}
	}
	return nil
}

// oomKills reports how many processes the kernel OOM-killed in the cgroup.
func (c *cgroups) oomKills(path string) int {
	var file string
	if c.v2 {
		file = filepath.Join(c.root, path, "memory.events")
	} else {
		file = filepath.Join(c.root, "memory", path, "memory.oom_control")
	}
	f, err := os.Open(file)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), " ")
		if k == "oom_kill" {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}

// remove deletes the cgroup, killing whatever still runs in it.
func (c *cgroups) remove(path string) error {
	var errs []error
	for _, dir := range c.dirs(path) {
		if err := removeCgroupDir(dir); err != nil {
			errs = append(errs, err)
			continue
		}
		// The per-runtime parent goes too once empty; busy means others still use it.
		_ = syscall.Rmdir(filepath.Dir(dir))
	}
	return errors.Join(errs...)
}

func removeCgroupDir(dir string) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := syscall.Rmdir(dir)
		if err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if !errors.Is(err, syscall.EBUSY) || time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: remove: %w", dir, err)
		}
		killCgroup(dir)
		time.Sleep(10 * time.Millisecond)
	}
}

func killCgroup(dir string) {
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0o644); err == nil {
		return
	}
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}
