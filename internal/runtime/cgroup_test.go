package runtime

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The cgroup writers are checked against plain directories laid out like
// cgroupfs, for the layout this host does not have.
func readCG(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestCgroupV2Writes(t *testing.T) {
	root := t.TempDir()
	if err := os.WriteFile(filepath.Join(root, "cgroup.controllers"), []byte("cpuset cpu io memory pids\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The kernel creates the interface files; a plain directory needs them made.
	if err := os.MkdirAll(filepath.Join(root, "berth", "c1"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(root, "berth", "cgroup.controllers"), []byte("cpuset cpu memory pids\n"), 0o644)
	os.WriteFile(filepath.Join(root, "berth", "c1", "memory.swap.max"), []byte("max\n"), 0o644)
	cg := &cgroups{root: root, v2: true}
	r := linuxResources(&Resources{CPUs: 0.5, CPUShares: 1024, MemoryBytes: 64 << 20, Pids: 50})
	if err := cg.create("/berth/c1", r); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "berth", "c1")
	for file, want := range map[string]string{
		"cpu.max": "50000 100000", "memory.max": "67108864", "memory.swap.max": "0", "pids.max": "50",
		"cpu.weight": "39",
	} {
		if got := readCG(t, filepath.Join(dir, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// Every controller the host has, io included though berth sets no io limit.
	if got := readCG(t, filepath.Join(root, "cgroup.subtree_control")); got != "+cpuset +cpu +io +memory +pids" {
		t.Errorf("root subtree_control = %q", got)
	}
	if got := cg.procsFiles("/berth/c1"); len(got) != 1 || got[0] != filepath.Join(dir, "cgroup.procs") {
		t.Errorf("procs files %v", got)
	}
	os.WriteFile(filepath.Join(dir, "memory.events"), []byte("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"), 0o644)
	if n := cg.oomKills("/berth/c1"); n != 1 {
		t.Errorf("oom kills %d, want 1", n)
	}
}

func TestCgroupV1Writes(t *testing.T) {
	root := t.TempDir()
	for _, c := range []string{"cpu", "cpuset", "memory", "pids"} {
		os.MkdirAll(filepath.Join(root, c), 0o755)
	}
	os.WriteFile(filepath.Join(root, "cpuset", "cpuset.cpus"), []byte("0-3\n"), 0o644)
	os.WriteFile(filepath.Join(root, "cpuset", "cpuset.mems"), []byte("0\n"), 0o644)
	cg := &cgroups{root: root, v1: []string{"cpu", "cpuset", "memory", "pids"}}
	r := linuxResources(&Resources{CPUs: 2, CPUSet: "2-3", MemoryBytes: 32 << 20, Pids: 10})
	if err := cg.create("/berth/c1", r); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string]string{
		"cpuset/berth/cpuset.cpus":              "0-3", // the parent inherits so that children may join
		"cpuset/berth/c1/cpuset.cpus":           "2-3",
		"cpuset/berth/c1/cpuset.mems":           "0",
		"memory/berth/c1/memory.limit_in_bytes": "33554432",
		"pids/berth/c1/pids.max":                "10",
	} {
		if got := readCG(t, filepath.Join(root, file)); got != want {
			t.Errorf("%s = %q, want %q", file, got, want)
		}
	}
	// Pinned: no quota is written.
	if _, err := os.Stat(filepath.Join(root, "cpu", "berth", "c1", "cpu.cfs_quota_us")); err == nil {
		t.Error("a pinned container got a CFS quota")
	}
}

func TestCgroup2Mount(t *testing.T) {
	const (
		tmpfs   = "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755\n"
		hybrid  = "41 25 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n"
		pure    = "30 1 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n"
		other   = "50 1 0:38 / /mnt/cg\\040two rw,relatime - cgroup2 none rw,favordynmods\n"
		v1      = "31 25 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
		noCgrp2 = tmpfs + v1
	)
	for _, tc := range []struct {
		name, mountinfo, point, super string
	}{
		{"pure v2", pure, "/sys/fs/cgroup", "rw,nsdelegate,memory_recursiveprot"},
		{"hybrid", tmpfs + v1 + hybrid, "/sys/fs/cgroup/unified", "rw"},
		{"the runtime's first", other + hybrid, "/sys/fs/cgroup/unified", "rw"},
		{"else any, unescaped", other + noCgrp2, "/mnt/cg two", "rw,favordynmods"},
		{"stacked: the last", pure + strings.Replace(pure, "nsdelegate,", "", 1), "/sys/fs/cgroup", "rw,memory_recursiveprot"},
	} {
		point, super, ok := cgroup2Mount(tc.mountinfo)
		if !ok || point != tc.point || super != tc.super {
			t.Errorf("%s: got %q %q %v, want %q %q", tc.name, point, super, ok, tc.point, tc.super)
		}
	}
	if _, _, ok := cgroup2Mount(noCgrp2); ok {
		t.Error("found a cgroup2 mount among v1 and tmpfs")
	}
}

func TestWithFavorDynMods(t *testing.T) {
	for _, tc := range []struct {
		super   string
		want    []string
		already bool
	}{
		{"rw", []string{"favordynmods"}, false},
		{"rw,nsdelegate,memory_recursiveprot", []string{"nsdelegate", "memory_recursiveprot", "favordynmods"}, false},
		{"ro,nsdelegate", []string{"nsdelegate", "favordynmods"}, false},
		{"rw,nsdelegate,favordynmods,memory_localevents", []string{"nsdelegate", "favordynmods", "memory_localevents"}, true},
	} {
		got, already := withFavorDynMods(tc.super)
		if !slices.Equal(got, tc.want) || already != tc.already {
			t.Errorf("%q: got %q %v, want %q %v", tc.super, got, already, tc.want, tc.already)
		}
	}
}

// A container joins every hierarchy: on a hybrid host, the v1 ones berth
// configures, the other v1 ones (named or not) and the unified one.
func TestCgroupHierarchies(t *testing.T) {
	const mountinfo = `25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
28 25 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
29 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
30 25 0:27 / /sys/fs/cgroup/blkio rw,nosuid - cgroup cgroup rw,blkio
31 25 0:28 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid - cgroup cgroup rw,net_cls,net_prio
32 1 0:29 / /mnt/elsewhere rw - cgroup cgroup rw,pids
`
	c := &cgroups{root: "/sys/fs/cgroup", v1: []string{"cpu", "memory"}}
	// cpu is a link to cpu,cpuacct: already listed by that name.
	seen := map[string]bool{"/sys/fs/cgroup/cpu,cpuacct": true, "/sys/fs/cgroup/memory": true}
	c.addHierarchies(mountinfo, func(p string) string { return p }, seen)
	want := []string{"cpu", "memory", "systemd", "blkio", "net_cls,net_prio"}
	if !slices.Equal(c.v1, want) || c.unified != "unified" {
		t.Errorf("hierarchies %q unified %q, want %q and unified", c.v1, c.unified, want)
	}
	dirs := c.dirs("/berth/c1")
	if len(dirs) != 6 || dirs[5] != "/sys/fs/cgroup/unified/berth/c1" || dirs[2] != "/sys/fs/cgroup/systemd/berth/c1" {
		t.Errorf("dirs %q", dirs)
	}
}

// Controllers already enabled are left alone; only the missing are written.
func TestEnableControllers(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "cgroup.controllers"), []byte("cpu io memory hugetlb pids rdma misc\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte("cpu memory pids\n"), 0o644)
	enableControllers(dir)
	if got := readCG(t, filepath.Join(dir, "cgroup.subtree_control")); got != "+io +hugetlb +rdma +misc" {
		t.Errorf("subtree_control written %q, want the four missing", got)
	}
}
