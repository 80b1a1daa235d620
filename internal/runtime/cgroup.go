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
	"golang.org/x/sys/unix"
)

// cgroups manages per-container cgroups directly through cgroupfs. It
// works on a pure v2 host and on v1, hybrid hosts included. A container
// joins every hierarchy the host has, so that no controller (blkio, a
// named hierarchy, the unified one of a hybrid host) leaves it counted in
// the launcher's cgroup.
type cgroups struct {
	root string // /sys/fs/cgroup
	v2   bool
	// v1 hierarchies, each by the name of its directory under root: a
	// controller's name for those berth configures (cpu, memory...), the
	// mount's own name for the rest (blkio, systemd, net_cls,net_prio...).
	v1 []string
	// unified is the cgroup2 mount of a hybrid host ("unified"), if any.
	unified string
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
	mountinfo, _ := os.ReadFile("/proc/self/mountinfo")
	c.addHierarchies(string(mountinfo), func(p string) string {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return p
		}
		return real
	}, seen)
	return c
}

// addHierarchies adds the cgroup mounts directly under root that are not
// in seen (by their real path, as resolve gives it): further v1
// hierarchies, and a hybrid host's cgroup2 mount.
func (c *cgroups) addHierarchies(mountinfo string, resolve func(string) string, seen map[string]bool) {
	for _, line := range strings.Split(mountinfo, "\n") {
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || len(g) < 1 || (g[0] != "cgroup" && g[0] != "cgroup2") {
			continue
		}
		point := unescapeMountinfo(f[4])
		if filepath.Dir(point) != c.root || seen[resolve(point)] {
			continue
		}
		seen[resolve(point)] = true
		if g[0] == "cgroup2" {
			c.unified = filepath.Base(point)
		} else {
			c.v1 = append(c.v1, filepath.Base(point))
		}
	}
}

// dirs lists the container's cgroup directories: one on v2, one per hierarchy on v1.
func (c *cgroups) dirs(path string) []string {
	if c.v2 {
		return []string{filepath.Join(c.root, path)}
	}
	out := make([]string, 0, len(c.v1)+1)
	for _, ctrl := range c.v1 {
		out = append(out, filepath.Join(c.root, ctrl, path))
	}
	if c.unified != "" {
		out = append(out, filepath.Join(c.root, c.unified, path))
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
		return createV2(c.root, path, r)
	}
	if c.unified != "" {
		// Joined for its controllers (hugetlb on some hosts); the limits are set in v1.
		if err := createV2(filepath.Join(c.root, c.unified), path, nil); err != nil {
			return err
		}
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

func createV2(root, path string, r *specs.LinuxResources) error {
	// Every controller the host offers is enabled in each ancestor's
	// subtree_control, so the container has them all.
	parent := root
	for _, part := range strings.Split(strings.Trim(path, "/"), "/") {
		enableControllers(parent)
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

// enableControllers enables in dir's subtree_control the controllers dir
// has and does not enable yet: in one write, else (one refused, such as a
// controller the kernel will not enable here) one by one.
func enableControllers(dir string) {
	avail, _ := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	on, _ := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	enabled := map[string]bool{}
	for _, ctrl := range strings.Fields(string(on)) {
		enabled[strings.TrimPrefix(ctrl, "+")] = true
	}
	var enable []string
	for _, ctrl := range strings.Fields(string(avail)) {
		if !enabled[ctrl] {
			enable = append(enable, "+"+ctrl)
		}
	}
	if len(enable) == 0 || writeCG(dir, "cgroup.subtree_control", strings.Join(enable, " ")) == nil {
		return
	}
	for _, e := range enable {
		_ = writeCG(dir, "cgroup.subtree_control", e)
	}
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

// FavorDynMods sets the cgroup2 mount option favordynmods, keeping the
// options already set. It returns the mount point it chose and whether it
// changed the mount (not when the option was already set). Callers should
// only log its error: the kernel refuses the option before Linux 6.0.
//
// Each container start writes the new process into cgroup.procs, and each
// such move takes the kernel's global cgroup_threadgroup_rwsem for writing.
// That rwsem is percpu: its writer waits an RCU grace period, measured at
// 10-16 ms of every start. favordynmods makes it favour writers, at a small
// cost to every fork and exit on the host. The rwsem serves every hierarchy,
// so one cgroup2 mount is enough, and it speeds up v1 moves on a hybrid host.
func FavorDynMods() (mount string, changed bool, err error) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("cgroup2: %w", err)
	}
	mount, super, ok := cgroup2Mount(string(b))
	if !ok {
		return "", false, errors.New("cgroup2: no cgroup2 mount in /proc/self/mountinfo")
	}
	opts, already := withFavorDynMods(super)
	if already {
		return mount, false, nil
	}
	if err := reconfigureCgroup2(mount, opts); err != nil {
		return mount, false, err
	}
	return mount, true, nil
}

const favorDynMods = "favordynmods"

// cgroup2Mount picks a cgroup2 mount from mountinfo: the runtime's
// (/sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid
// one), else the first. It returns the mount point and super options.
func cgroup2Mount(mountinfo string) (point, super string, ok bool) {
	rank := 3
	for _, line := range strings.Split(mountinfo, "\n") {
		// id parent major:minor root point options [optional...] - type source super
		pre, post, found := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !found || len(f) < 5 || len(g) < 3 || g[0] != "cgroup2" {
			continue
		}
		p := unescapeMountinfo(f[4])
		r := 2
		switch p {
		case "/sys/fs/cgroup":
			r = 0
		case "/sys/fs/cgroup/unified":
			r = 1
		}
		// Of mounts stacked on one of those points, the last is the visible one.
		if r < rank || (r == rank && r < 2) {
			point, super, ok, rank = p, g[2], true, r
		}
	}
	return point, super, ok
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of a mountinfo path.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, "\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// withFavorDynMods turns a cgroup2 mount's super options (as mountinfo
// shows them, "rw,nsdelegate,memory_recursiveprot") into the options a
// reconfiguration sets: the same with favordynmods added. The superblock
// flags (rw, ro, sync...) are left out, and a reconfiguration keeps them.
// already reports that favordynmods is set.
func withFavorDynMods(super string) (opts []string, already bool) {
	for _, o := range strings.Split(super, ",") {
		switch o {
		case "", "rw", "ro", "sync", "dirsync", "mand", "lazytime":
			continue
		case favorDynMods:
			already = true
		}
		opts = append(opts, o)
	}
	if already {
		return opts, true
	}
	return append(opts, favorDynMods), false
}

// reconfigureCgroup2 sets the cgroup2 root's options to opts. The kernel
// replaces the root's options with the given ones, so opts must include
// those to keep. fspick(2) is used rather than mount(2) with MS_REMOUNT,
// which would also clear the mount's own flags (nosuid, nodev, noexec).
func reconfigureCgroup2(point string, opts []string) error {
	fd, err := unix.Fspick(unix.AT_FDCWD, point, unix.FSPICK_CLOEXEC|unix.FSPICK_NO_AUTOMOUNT)
	if err != nil {
		return fmt.Errorf("cgroup2 %s: reconfigure: %w", point, err)
	}
	defer unix.Close(fd)
	for _, o := range opts {
		k, v, hasValue := strings.Cut(o, "=")
		if hasValue {
			err = unix.FsconfigSetString(fd, k, v)
		} else {
			err = unix.FsconfigSetFlag(fd, k)
		}
		if errors.Is(err, unix.EINVAL) && o == favorDynMods {
			return fmt.Errorf("cgroup2 %s: set %s: %w (the option came in Linux 6.0)", point, o, err)
		}
		if err != nil {
			// Returning before the reconfigure command leaves the mount as it was.
			return fmt.Errorf("cgroup2 %s: set %s: %w", point, o, err)
		}
	}
	if err := unix.FsconfigReconfigure(fd); err != nil {
		return fmt.Errorf("cgroup2 %s: reconfigure with %s: %w", point, strings.Join(opts, ","), err)
	}
	return nil
}
