package runtime

import (
	"os"
	"path/filepath"
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
	if got := readCG(t, filepath.Join(root, "cgroup.subtree_control")); got != "+cpuset +cpu +memory +pids" {
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
