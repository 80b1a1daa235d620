package hostinfo

import (
	"testing"
	"testing/fstest"
)

// TestProcessMemory: the host's memory, or the process's cgroup limit
// where it is lower, on cgroup v2 and v1 hosts; "max" and v1's
// no-limit counter are no limit.
func TestProcessMemory(t *testing.T) {
	const host = 8 << 30
	meminfo := &fstest.MapFile{Data: []byte("MemTotal:       8388608 kB\n")}
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"no cgroup file", nil, host},
		{"v2 limit", map[string]string{
			"proc/self/cgroup":                         "0::/berth.slice/srv\n",
			"sys/fs/cgroup/berth.slice/srv/memory.max": "2147483648\n",
		}, 2 << 30},
		{"v2 max", map[string]string{
			"proc/self/cgroup":             "0::/srv\n",
			"sys/fs/cgroup/srv/memory.max": "max\n",
		}, host},
		{"v2 in a cgroup namespace", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "1073741824\n",
		}, 1 << 30},
		{"v1 limit beside other controllers", map[string]string{
			"proc/self/cgroup": "12:pids:/srv\n5:cpuacct,memory:/srv\n0::/srv\n",
			"sys/fs/cgroup/memory/srv/memory.limit_in_bytes": "3221225472\n",
		}, 3 << 30},
		{"v1 no limit", map[string]string{
			"proc/self/cgroup":                           "5:memory:/\n",
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
		}, host},
		{"limit above the host's memory", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"sys/fs/cgroup/memory.max": "17179869184\n",
		}, host},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{"proc/meminfo": meminfo}
			for name, data := range tc.files {
				fsys[name] = &fstest.MapFile{Data: []byte(data)}
			}
			got, err := ProcessMemoryFS(fsys)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("ProcessMemoryFS = %d, want %d", got, tc.want)
			}
		})
	}
	if _, err := ProcessMemoryFS(fstest.MapFS{}); err == nil {
		t.Error("no /proc/meminfo: want an error")
	}
}
