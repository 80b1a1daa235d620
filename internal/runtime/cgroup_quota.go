package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// A container's CPU quota bounds its own work, but while it is dumped or
// restored CRIU works in its cgroup too: the parasite code CRIU runs in
// the container's processes at a dump, CRIU itself (moved there by runc)
// at a restore. A counter at 0.1 CPU has used most of its 10 ms per
// 100 ms period when it is frozen, and CRIU then waits out the rest of
// the period, up to 100 ms each time it runs dry. So the quota is lifted
// while CRIU works and set again after.

// liftCPUQuota lifts the CPU quota of the cgroup at path and returns what
// puts it back as it was; where there is none (or it cannot be read),
// nothing changes and put does nothing.
func (c *cgroups) liftCPUQuota(path string) (put func()) {
	file, unlimited := c.quotaFile(path)
	if file == "" {
		return func() {}
	}
	old, err := os.ReadFile(file)
	cur := strings.TrimSpace(string(old))
	if err != nil || cur == unlimited || strings.HasPrefix(cur, "max") {
		return func() {}
	}
	if os.WriteFile(file, []byte(unlimited), 0o644) != nil {
		return func() {}
	}
	return func() { _ = os.WriteFile(file, []byte(cur), 0o644) }
}

// quotaFile is the file holding the cgroup's CPU quota and the value
// that means none; "" where the host has no CPU controller.
func (c *cgroups) quotaFile(path string) (file, unlimited string) {
	switch {
	case c.v2:
		return filepath.Join(c.root, path, "cpu.max"), "max"
	case slices.Contains(c.v1, "cpu"):
		return filepath.Join(c.root, "cpu", path, "cpu.cfs_quota_us"), "-1"
	}
	return "", ""
}

// setCPUQuota sets the CPU quota of the cgroup at path: quota µs of CPU
// time per period µs.
func (c *cgroups) setCPUQuota(path string, quota int64, period uint64) error {
	file, _ := c.quotaFile(path)
	switch {
	case file == "":
		return nil
	case c.v2:
		return writeCG(filepath.Dir(file), "cpu.max", strconv.FormatInt(quota, 10)+" "+strconv.FormatUint(period, 10))
	}
	if err := writeCG(filepath.Dir(file), "cpu.cfs_period_us", strconv.FormatUint(period, 10)); err != nil {
		return err
	}
	return writeCG(filepath.Dir(file), "cpu.cfs_quota_us", strconv.FormatInt(quota, 10))
}

// restoreWithoutQuota takes the CPU quota out of spec s of a container
// restored from a checkpoint (unless keep) and returns its CPU resources
// as they were, for the caller to apply once the restore is over; nil
// when there is none to take out.
func restoreWithoutQuota(bd *bundle, s *specs.Spec, keep bool) *specs.LinuxCPU {
	if keep || bd.restoreFrom == "" || s.Linux == nil || s.Linux.Resources == nil {
		return nil
	}
	cpu := s.Linux.Resources.CPU
	if cpu == nil || cpu.Quota == nil || *cpu.Quota <= 0 {
		return nil
	}
	with := *cpu
	if with.Period == nil {
		p := uint64(100000) // the kernel's default period
		with.Period = &p
	}
	without := *cpu
	without.Quota = nil
	s.Linux.Resources.CPU = &without
	return &with
}
