// Package hostinfo reads what a node offers: CPU, memory and pid capacity
// and the CPU topology (physical cores, their SMT sibling threads, NUMA
// nodes) the scheduler needs to hand out whole cores.
package hostinfo

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Capacity is what a node can give its containers.
type Capacity struct {
	MilliCPU    int64 `json:"milliCPU"`
	MemoryBytes int64 `json:"memoryBytes"`
	Pids        int64 `json:"pids"`
}

// Core is one physical core and the logical CPUs (SMT threads) on it.
type Core struct {
	ID      int   `json:"id"`
	Socket  int   `json:"socket"`
	NUMA    int   `json:"numa"`
	Threads []int `json:"threads"`
}

// Topology lists the node's cores, ordered by socket, then core id.
type Topology struct {
	Cores []Core `json:"cores"`
}

// CPUs counts logical CPUs.
func (t Topology) CPUs() int {
	n := 0
	for _, c := range t.Cores {
		n += len(c.Threads)
	}
	return n
}

// Info is everything Read learns about the host.
type Info struct {
	Capacity Capacity `json:"capacity"`
	Topology Topology `json:"topology"`
}

// Read inspects the running host through /sys and /proc.
func Read() (Info, error) {
	return ReadFS(os.DirFS("/"))
}

// ReadFS inspects a host whose /sys and /proc are in fsys (tests use fake trees).
func ReadFS(fsys fs.FS) (Info, error) {
	topo, err := readTopology(fsys)
	if err != nil {
		return Info{}, err
	}
	mem, err := memTotal(fsys)
	if err != nil {
		return Info{}, err
	}
	pids, err := readInt(fsys, "proc/sys/kernel/pid_max")
	if err != nil {
		return Info{}, fmt.Errorf("pid_max: %w", err)
	}
	return Info{
		Capacity: Capacity{MilliCPU: int64(topo.CPUs()) * 1000, MemoryBytes: mem, Pids: int64(pids)},
		Topology: topo,
	}, nil
}

func readTopology(fsys fs.FS) (Topology, error) {
	online, err := readFile(fsys, "sys/devices/system/cpu/online")
	if err != nil {
		return Topology{}, fmt.Errorf("online cpus: %w", err)
	}
	cpus, err := ParseList(online)
	if err != nil {
		return Topology{}, fmt.Errorf("online cpus %q: %w", online, err)
	}
	numaOf := numaNodes(fsys)
	type key struct{ socket, core int }
	cores := map[key]*Core{}
	for _, cpu := range cpus {
		dir := fmt.Sprintf("sys/devices/system/cpu/cpu%d/topology", cpu)
		coreID, err := readInt(fsys, path.Join(dir, "core_id"))
		if err != nil {
			return Topology{}, fmt.Errorf("cpu %d: core_id: %w", cpu, err)
		}
		socket, err := readInt(fsys, path.Join(dir, "physical_package_id"))
		if err != nil {
			socket = 0 // some virtual machines do not expose packages
		}
		k := key{socket, coreID}
		c := cores[k]
		if c == nil {
			c = &Core{ID: coreID, Socket: socket, NUMA: numaOf[cpu]}
			cores[k] = c
		}
		c.Threads = append(c.Threads, cpu)
	}
	var t Topology
	for _, c := range cores {
		sort.Ints(c.Threads)
		t.Cores = append(t.Cores, *c)
	}
	sort.Slice(t.Cores, func(i, j int) bool {
		a, b := t.Cores[i], t.Cores[j]
		if a.Socket != b.Socket {
			return a.Socket < b.Socket
		}
		return a.ID < b.ID
	})
	return t, nil
}

// numaNodes maps each CPU to its NUMA node; CPUs not listed are on node 0.
func numaNodes(fsys fs.FS) map[int]int {
	out := map[int]int{}
	ents, err := fs.ReadDir(fsys, "sys/devices/system/node")
	if err != nil {
		return out
	}
	for _, e := range ents {
		id, ok := strings.CutPrefix(e.Name(), "node")
		n, err := strconv.Atoi(id)
		if !ok || err != nil {
			continue
		}
		list, err := readFile(fsys, path.Join("sys/devices/system/node", e.Name(), "cpulist"))
		if err != nil {
			continue
		}
		cpus, err := ParseList(list)
		if err != nil {
			continue
		}
		for _, c := range cpus {
			out[c] = n
		}
	}
	return out
}

func memTotal(fsys fs.FS) (int64, error) {
	f, err := fsys.Open("proc/meminfo")
	if err != nil {
		return 0, fmt.Errorf("meminfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("meminfo: MemTotal %q: %w", fields[1], err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("meminfo: no MemTotal line")
}

func readFile(fsys fs.FS, name string) (string, error) {
	b, err := fs.ReadFile(fsys, name)
	return strings.TrimSpace(string(b)), err
}

func readInt(fsys fs.FS, name string) (int, error) {
	s, err := readFile(fsys, name)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(s)
}

// ParseList reads a kernel CPU list such as "0-3,8,10-11".
func ParseList(s string) ([]int, error) {
	var out []int
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		if err != nil || a < 0 {
			return nil, fmt.Errorf("bad cpu %q", part)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad cpu range %q", part)
			}
		}
		if b-a > 1<<16 {
			return nil, fmt.Errorf("cpu range %q is too large", part)
		}
		for c := a; c <= b; c++ {
			out = append(out, c)
		}
	}
	return out, nil
}

// FormatList writes CPUs as a kernel CPU list, e.g. [0 1 2 5] → "0-2,5".
func FormatList(cpus []int) string {
	s := append([]int(nil), cpus...)
	sort.Ints(s)
	var b strings.Builder
	for i := 0; i < len(s); {
		j := i
		for j+1 < len(s) && s[j+1] == s[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j > i {
			fmt.Fprintf(&b, "%d-%d", s[i], s[j])
		} else {
			fmt.Fprintf(&b, "%d", s[i])
		}
		i = j + 1
	}
	return b.String()
}
