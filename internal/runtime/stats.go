package runtime

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Stats are a running container's resource figures at one moment, read
// from its cgroups and its network namespace.
type Stats struct {
	Time time.Time
	// CPUNanos is the CPU time its processes used, in nanoseconds.
	CPUNanos uint64
	// MemoryBytes is memory in use less the inactive page cache (the
	// kernel's first to reclaim), as docker stats and cAdvisor's working
	// set count it; MemoryUsage is the cgroup's raw figure.
	MemoryBytes, MemoryUsage uint64
	// MemoryLimit is 0 when unlimited.
	MemoryLimit uint64
	Pids        uint64
	// Network counters summed over the namespace's interfaces but loopback.
	RxBytes, TxBytes, RxPackets, TxPackets uint64
}

// Stats reads a running container's figures.
func (r *Runtime) Stats(ctx context.Context, id string) (Stats, error) {
	bd, m, err := r.load(id)
	if err != nil {
		return Stats{}, err
	}
	st := r.status(bd, m)
	if st.State != Running {
		return Stats{}, fmt.Errorf("container %q: %w", id, ErrNotRunning)
	}
	path := r.CgroupPath(id)
	if s := r.spec(bd); s != nil && s.Linux != nil && s.Linux.CgroupsPath != "" {
		path = s.Linux.CgroupsPath
	}
	out := Stats{Time: time.Now()}
	if r.cg.v2 {
		dir := filepath.Join(r.cg.root, path)
		if kv := readKV(filepath.Join(dir, "cpu.stat")); kv != nil {
			out.CPUNanos = kv["usage_usec"] * 1000
		}
		out.MemoryUsage = readUint(filepath.Join(dir, "memory.current"))
		out.MemoryLimit = readUint(filepath.Join(dir, "memory.max")) // "max" reads as 0
		inactive := readKV(filepath.Join(dir, "memory.stat"))["inactive_file"]
		out.MemoryBytes = sub(out.MemoryUsage, inactive)
		out.Pids = readUint(filepath.Join(dir, "pids.current"))
	} else {
		root := r.cg.root
		out.CPUNanos = readUint(filepath.Join(root, "cpuacct", path, "cpuacct.usage"))
		mem := filepath.Join(root, "memory", path)
		out.MemoryUsage = readUint(filepath.Join(mem, "memory.usage_in_bytes"))
		if lim := readUint(filepath.Join(mem, "memory.limit_in_bytes")); lim < 1<<62 {
			out.MemoryLimit = lim
		}
		inactive := readKV(filepath.Join(mem, "memory.stat"))["total_inactive_file"]
		out.MemoryBytes = sub(out.MemoryUsage, inactive)
		out.Pids = readUint(filepath.Join(root, "pids", path, "pids.current"))
	}
	if st.Pid > 0 {
		out.RxBytes, out.TxBytes, out.RxPackets, out.TxPackets = netDev(st.Pid)
	}
	return out, nil
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

func readUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}

// readKV reads a cgroup file of "key value" lines.
func readKV(path string) map[string]uint64 {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]uint64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
		if err == nil {
			out[k] = n
		}
	}
	return out
}

// netDev sums /proc/PID/net/dev, which lists the interfaces of the
// process's network namespace, leaving loopback out.
func netDev(pid int) (rx, tx, rxp, txp uint64) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/net/dev")
	if err != nil {
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || strings.TrimSpace(name) == "lo" {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 10 {
			continue
		}
		n := func(i int) uint64 { v, _ := strconv.ParseUint(f[i], 10, 64); return v }
		rx, rxp, tx, txp = rx+n(0), rxp+n(1), tx+n(8), txp+n(9)
	}
	return
}
