package hostinfo

import (
	"fmt"
	"reflect"
	"testing"
	"testing/fstest"
)

// fakeHost builds sysfs/procfs for sockets × cores × threads, with one NUMA node per socket.
// Thread t of core c on socket s is CPU (s*cores + c) + t*sockets*cores, as Linux numbers SMT siblings.
func fakeHost(sockets, cores, threads int) fstest.MapFS {
	fsys := fstest.MapFS{
		"proc/meminfo":            {Data: []byte("MemTotal:       16384 kB\nMemFree: 1 kB\n")},
		"proc/sys/kernel/pid_max": {Data: []byte("4194304\n")},
	}
	total := sockets * cores * threads
	fsys["sys/devices/system/cpu/online"] = &fstest.MapFile{Data: []byte(fmt.Sprintf("0-%d\n", total-1))}
	numaCPUs := make([][]int, sockets)
	for cpu := range total {
		phys := cpu % (sockets * cores)
		s, c := phys/cores, phys%cores
		dir := fmt.Sprintf("sys/devices/system/cpu/cpu%d/topology/", cpu)
		fsys[dir+"core_id"] = &fstest.MapFile{Data: []byte(fmt.Sprintf("%d\n", c))}
		fsys[dir+"physical_package_id"] = &fstest.MapFile{Data: []byte(fmt.Sprintf("%d\n", s))}
		numaCPUs[s] = append(numaCPUs[s], cpu)
	}
	for s, cpus := range numaCPUs {
		fsys[fmt.Sprintf("sys/devices/system/node/node%d/cpulist", s)] = &fstest.MapFile{Data: []byte(FormatList(cpus) + "\n")}
	}
	return fsys
}

func TestReadSMTTwoSockets(t *testing.T) {
	info, err := ReadFS(fakeHost(2, 4, 2))
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Capacity; got.MilliCPU != 16000 || got.MemoryBytes != 16384*1024 || got.Pids != 4194304 {
		t.Errorf("capacity = %+v", got)
	}
	if len(info.Topology.Cores) != 8 {
		t.Fatalf("%d cores, want 8", len(info.Topology.Cores))
	}
	// Core 0 of socket 1 holds CPU 4 and its sibling 12, on NUMA node 1.
	c := info.Topology.Cores[4]
	if c.Socket != 1 || c.ID != 0 || c.NUMA != 1 || !reflect.DeepEqual(c.Threads, []int{4, 12}) {
		t.Errorf("core 4 = %+v, want socket 1 core 0 numa 1 threads [4 12]", c)
	}
}

func TestReadNoSMT(t *testing.T) {
	info, err := ReadFS(fakeHost(1, 2, 1))
	if err != nil {
		t.Fatal(err)
	}
	want := []Core{{ID: 0, Threads: []int{0}}, {ID: 1, Threads: []int{1}}}
	if !reflect.DeepEqual(info.Topology.Cores, want) {
		t.Errorf("cores = %+v, want %+v", info.Topology.Cores, want)
	}
}

func TestReadThisHost(t *testing.T) {
	info, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if info.Capacity.MilliCPU < 1000 || info.Capacity.MemoryBytes <= 0 || info.Topology.CPUs() < 1 {
		t.Errorf("implausible host: %+v", info)
	}
}

func TestCPUList(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []int
	}{{"0", []int{0}}, {"0-3", []int{0, 1, 2, 3}}, {"0-1,4,6-7", []int{0, 1, 4, 6, 7}}, {"", nil}} {
		got, err := ParseList(tc.in)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseList(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.want != nil && FormatList(got) != tc.in {
			t.Errorf("FormatList(%v) = %q, want %q", got, FormatList(got), tc.in)
		}
	}
	for _, bad := range []string{"a", "3-1", "-1", "0-99999999"} {
		if _, err := ParseList(bad); err == nil {
			t.Errorf("ParseList(%q) accepted", bad)
		}
	}
}
