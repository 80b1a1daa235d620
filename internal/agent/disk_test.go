package agent

import "testing"

func TestParseDiskReserve(t *testing.T) {
	for in, want := range map[string]DiskReserve{
		"5%": {Percent: 5}, "0.5%": {Percent: 0.5}, "2Gi": {Bytes: 2 << 30}, "0": {}, "100Mi": {Bytes: 100 << 20},
	} {
		got, err := ParseDiskReserve(in)
		if err != nil || got != want {
			t.Errorf("ParseDiskReserve(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1Gi", "100%", "x%", "5GB", "-3%"} {
		if _, err := ParseDiskReserve(bad); err == nil {
			t.Errorf("ParseDiskReserve(%q) accepted", bad)
		}
	}
	if got := (DiskReserve{Percent: 5}).of(1000 << 20); got != 50<<20 {
		t.Errorf("5%% of 1000Mi = %d, want 50Mi", got)
	}
}
