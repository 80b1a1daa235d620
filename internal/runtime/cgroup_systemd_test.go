package runtime

import (
	"bytes"
	"fmt"
	"testing"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

func TestCPUMask(t *testing.T) {
	for list, want := range map[string][]byte{
		"0": {1}, "1": {2}, "0-2,5": {0x27}, "8": {0, 1}, "3,9-10": {8, 6},
	} {
		got, err := cpuMask(list)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("cpuMask(%q) = %v, %v; want %v", list, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "3-1", "-1"} {
		if _, err := cpuMask(bad); err == nil {
			t.Errorf("cpuMask(%q) took it", bad)
		}
	}
}

func TestScopeLimits(t *testing.T) {
	quota, period, shares := int64(50000), uint64(100000), uint64(1024)
	mem, pids := int64(64<<20), int64(64)
	got := map[string]any{}
	for _, p := range scopeLimits(&specs.LinuxResources{
		CPU:    &specs.LinuxCPU{Quota: &quota, Period: &period, Shares: &shares, Cpus: "1"},
		Memory: &specs.LinuxMemory{Limit: &mem},
		Pids:   &specs.LinuxPids{Limit: &pids},
	}) {
		got[p.Name] = p.Value.Value()
	}
	want := map[string]any{
		"CPUQuotaPerSecUSec": uint64(500000), "CPUQuotaPeriodUSec": uint64(100000), "CPUWeight": uint64(39),
		"AllowedCPUs": []byte{2}, "MemoryMax": uint64(64 << 20), "MemorySwapMax": uint64(0), "TasksMax": uint64(65),
	}
	for k, v := range want {
		if g, ok := got[k]; !ok || !bytes.Equal([]byte(toString(g)), []byte(toString(v))) {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("properties %v, want %v", got, want)
	}
}

func toString(v any) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}

func TestScopeUnit(t *testing.T) {
	d := &systemdScopes{prefix: "berth"}
	if p := d.path("web-1"); p != "/berth.slice/berth-web-1.scope" || scopeUnit(p) != "berth-web-1.scope" {
		t.Errorf("path %q, unit %q", p, scopeUnit(p))
	}
	for _, p := range []string{"/berth/web-1", "/berth.slice", "/other.slice/x.scope", "/berth.slice/a/b.scope"} {
		if u := scopeUnit(p); u != "" {
			t.Errorf("scopeUnit(%q) = %q, want none", p, u)
		}
	}
}
