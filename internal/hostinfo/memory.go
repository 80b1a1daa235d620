package hostinfo

import (
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"
)

// ProcessMemory is the memory the running process may use: the host's,
// or less where its cgroup (v2 memory.max, v1 memory.limit_in_bytes)
// holds it to less.
func ProcessMemory() (int64, error) {
	return ProcessMemoryFS(os.DirFS("/"))
}

// ProcessMemoryFS is ProcessMemory for a host whose /proc and /sys are in
// fsys (tests use fake trees).
func ProcessMemoryFS(fsys fs.FS) (int64, error) {
	total, err := memTotal(fsys)
	if err != nil {
		return 0, err
	}
	if lim := cgroupMemoryLimit(fsys); lim > 0 && lim < total {
		return lim, nil
	}
	return total, nil
}

// cgroupMemoryLimit reads the memory limit of the process's own cgroup;
// 0 when it has none or it cannot be read (no limit is then the safe
// reading: the host's memory bounds it).
func cgroupMemoryLimit(fsys fs.FS) int64 {
	b, err := fs.ReadFile(fsys, "proc/self/cgroup")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		// "0::/path" on cgroup v2, "N:memory:/path" (among others) on v1.
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		var candidates []string
		switch {
		case parts[0] == "0" && parts[1] == "":
			candidates = []string{"sys/fs/cgroup" + parts[2] + "/memory.max", "sys/fs/cgroup/memory.max"}
		case hasController(parts[1], "memory"):
			candidates = []string{"sys/fs/cgroup/memory" + parts[2] + "/memory.limit_in_bytes", "sys/fs/cgroup/memory/memory.limit_in_bytes"}
		default:
			continue
		}
		for _, c := range candidates {
			if lim, ok := readLimit(fsys, path.Clean(c)); ok {
				return lim
			}
		}
	}
	return 0
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readLimit reads a cgroup memory limit file: "max" (v2) and v1's page
// counter maximum are no limit.
func readLimit(fsys fs.FS, name string) (int64, bool) {
	s, err := readFile(fsys, name)
	if err != nil {
		return 0, false
	}
	if s == "max" {
		return 0, true
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= 1<<62 {
		return 0, true
	}
	return n, true
}
